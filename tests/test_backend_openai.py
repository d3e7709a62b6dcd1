"""The OpenAI backend against a real HTTP server on 127.0.0.1 speaking /v1/chat/completions with
SSE streaming. The server decodes every data URL into an image and answers scripted turns, cutting
at the stop strings the way vLLM does (the stop string is not sent back)."""
from __future__ import annotations

import base64
import io
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from core import protocol as P
from core.backends import BackendError, GenerationParams, load_backend
from core.backends.openai import OpenAIBackend, ToolCalls, close_tool_call, to_openai_messages, tool_call_text
from core.loop import LoopConfig, Task, run_to_end
from core.media import MemoryImageStore, Video, image_sha
from core.operations import PixelLimits, crop_box
from tests.conftest import numbered_frames, photo_like
from tests.openai_server import send_json

CALL = P.format_tool_call(P.CROP_TOOL, {"bbox_2d": [0.12, 0.22, 0.28, 0.38], "target_image": 1})
SCRIPT = ["The sign is small; I will zoom in on it.\n\n" + CALL, "The sign reads WOOLSHOPS. \\boxed{A}"]


class ScriptedServer:
    """A chat-completions server answering turn i (the number of assistant messages) from SCRIPT."""

    def __init__(self, script: list[str], models: tuple[str, ...] = ("scripted-vl",)) -> None:
        self.script, self.requests, self.images, self.models = script, [], [], models
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output quiet
                return

            def do_GET(self) -> None:
                if self.path.rstrip("/") == "/v1/models":
                    self._json({"object": "list", "data": [{"id": m, "object": "model"} for m in server.models]})
                else:
                    self._json({"error": {"message": "not found"}}, 404)

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path != "/v1/chat/completions":
                    return self._json({"error": {"message": "not found"}}, 404)
                if body.get("model") != "scripted-vl":
                    return self._json({"error": {"message": f"model {body.get('model')} not served"}}, 404)
                server.requests.append(body)
                server.images.append([server.decode(part["image_url"]["url"])
                                      for m in body["messages"] if isinstance(m["content"], list)
                                      for part in m["content"] if part["type"] == "image_url"])
                turn = sum(1 for m in body["messages"] if m["role"] == "assistant")
                text, finish, stop_reason = server.script[turn], "stop", None
                for stop in body.get("stop") or []:
                    if stop in text:
                        text, stop_reason = text[:text.index(stop)], stop
                self._stream(text, finish, stop_reason)

            def _json(self, obj: dict, status: int = 200) -> None:
                send_json(self, obj, status)

            def _stream(self, text: str, finish: str, stop_reason: str | None) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                base = {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": "scripted-vl"}
                pieces = [text[i:i + 7] for i in range(0, len(text), 7)]
                for i, piece in enumerate(pieces):
                    delta = {"content": piece} if i else {"role": "assistant", "content": piece}
                    self._event({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
                self._event({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish,
                                                  "stop_reason": stop_reason}]})
                self._event({**base, "choices": [], "usage": {"prompt_tokens": 321, "completion_tokens": len(pieces),
                                                              "total_tokens": 321 + len(pieces)}})
                self.wfile.write(b"data: [DONE]\n\n")

            def _event(self, obj: dict) -> None:
                self.wfile.write(f"data: {json.dumps(obj)}\n\n".encode())
                self.wfile.flush()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @staticmethod
    def decode(url: str) -> Image.Image:
        head, data = url.split(",", 1)
        assert head == "data:image/png;base64"
        image = Image.open(io.BytesIO(base64.b64decode(data)))
        image.load()
        return image.convert("RGB")

    def __enter__(self) -> "ScriptedServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    with ScriptedServer(SCRIPT) as s:
        yield s


def test_loop_runs_a_crop_end_to_end_through_the_server(server):
    backend = load_backend("openai", model=server.url)
    store = MemoryImageStore()
    photo = photo_like()
    config = LoopConfig(pixels=PixelLimits.preset("tiny"))
    traj = run_to_end(backend, Task(question="What is on the sign?", image=photo), config=config, store=store)
    assert traj.status == "done" and traj.answer == "A" and traj.model == f"scripted-vl@{server.url}"
    first = traj.steps[0]
    # the server stripped </tool_call>; the backend put it back, so the crop ran
    assert first.text == SCRIPT[0] and first.tool == P.CROP_TOOL and first.error is None
    assert first.box_px == list(crop_box([0.12, 0.22, 0.28, 0.38], photo.width, photo.height).px)
    assert first.tokens_in == 321 and first.tokens_out > 0
    # the server decoded real images: the overview, then overview + crop, pixel-exact (PNG)
    assert [len(imgs) for imgs in server.images] == [1, 2]
    sent = server.images[1]
    assert image_sha(sent[0]) == traj.media.model_view.sha
    assert image_sha(sent[1]) == first.images[0].sha
    assert store.get(first.images[0].sha).size == sent[1].size
    # the protocol text went as is: system prompt with the tools block, stop strings requested
    req = server.requests[0]
    assert req["messages"][0] == {"role": "system", "content": P.system_prompt(P.tools_for(False))}
    assert P.TOOL_CALL_END in req["stop"] and req["stream"] is True
    assert server.requests[1]["messages"][2] == {"role": "assistant", "content": SCRIPT[0]}


def test_streaming_yields_text_pieces(server):
    backend = OpenAIBackend(server.url, model_name="scripted-vl")
    chunks = list(backend.stream([{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
                                 GenerationParams()))
    *texts, gen = chunks
    assert len(texts) > 3 and "".join(texts) == gen.text == SCRIPT[0]
    assert gen.finish_reason == "stop"


def test_video_overview_goes_as_a_list_of_images(server):
    backend = OpenAIBackend(server.url)
    video = Video.from_frames(list(numbered_frames(6)))
    traj = run_to_end(backend, Task(question="Which number?", video=video),
                      config=LoopConfig(tools=False, pixels=PixelLimits.preset("tiny")))
    assert traj.steps and len(server.images[0]) == 6
    assert [image_sha(im) for im in server.images[0]] == [r.sha for r in traj.media.overview]


def test_generate_batch_sends_concurrent_requests(server):
    backend = OpenAIBackend(server.url, model_name="scripted-vl")
    convs = [[{"role": "user", "content": [{"type": "text", "text": f"q{i}"}]}] for i in range(3)]
    gens = backend.generate_batch(convs, GenerationParams())
    assert [g.text for g in gens] == [SCRIPT[0]] * 3 and len(server.requests) == 3


def test_close_tool_call_rules():
    assert close_tool_call("a <tool_call>\n{}\n", "stop") == "a <tool_call>\n{}\n</tool_call>"
    assert close_tool_call("a <tool_call>\n{}\n", "length") == "a <tool_call>\n{}\n"
    assert close_tool_call("done \\boxed{1}", "stop") == "done \\boxed{1}"
    assert close_tool_call("x", "stop", stop_reason="</tool_call>") == "x</tool_call>"


def test_messages_convert_to_content_parts():
    img = photo_like(112, 84)
    out = to_openai_messages([
        {"role": "system", "content": "sys"},
        {"role": "user", "content": [{"type": "image", "image": img}, {"type": "text", "text": "q"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "a"}]}])
    assert out[0] == {"role": "system", "content": "sys"} and out[2] == {"role": "assistant", "content": "a"}
    assert out[1]["content"][0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert image_sha(ScriptedServer.decode(out[1]["content"][0]["image_url"]["url"])) == image_sha(img)


def test_unreachable_server_is_a_clear_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    backend = OpenAIBackend(f"http://127.0.0.1:{port}/v1", model_name="m")
    with pytest.raises(BackendError, match="cannot reach the OpenAI-compatible server"):
        backend.generate([{"role": "user", "content": "hi"}], GenerationParams())
    traj = run_to_end(backend, Task(question="q", image=photo_like(100, 100)))
    assert traj.status == "error" and "cannot reach" in traj.error


def test_wrong_model_name_is_a_clear_error(server):
    backend = OpenAIBackend(server.url, model_name="other")
    with pytest.raises(BackendError, match="HTTP 404"):
        backend.generate([{"role": "user", "content": "hi"}], GenerationParams())


def test_a_server_listing_no_model_is_a_clear_error():
    with ScriptedServer(SCRIPT, models=()) as empty:
        with pytest.raises(BackendError, match="lists no model at /models; name the served model with "
                                               "--served-model-name"):
            OpenAIBackend(empty.url).model_name
        assert OpenAIBackend(empty.url, model_name="scripted-vl").generate(
            [{"role": "user", "content": "hi"}], GenerationParams()).text == SCRIPT[0]


def test_structured_tool_calls_become_the_protocol_block():
    from types import SimpleNamespace as NS

    args = {"bbox_2d": [0.12, 0.22, 0.28, 0.38], "target_image": 1}
    whole = ToolCalls()
    whole.add([NS(index=None, function=NS(name=P.CROP_TOOL, arguments=json.dumps(args)))])
    assert whole.text() == CALL
    streamed, text = ToolCalls(), json.dumps(args)
    streamed.add([NS(index=0, function=NS(name=P.CROP_TOOL, arguments=""))])
    for i in range(0, len(text), 5):
        streamed.add([NS(index=0, function=NS(name=None, arguments=text[i:i + 5]))])
    assert streamed.text() == CALL
    assert P.parse_tool_call(tool_call_text(P.CROP_TOOL, args)).name == P.CROP_TOOL
    broken = tool_call_text(P.CROP_TOOL, '{"bbox_2d": [0.1,')  # kept as written: the loop reports it
    assert broken.startswith(P.TOOL_CALL_START) and '[0.1,' in broken
    with pytest.raises(P.ToolCallError):
        P.parse_tool_call(broken)
