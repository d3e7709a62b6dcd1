"""A real OpenAI-compatible chat server for the tests: `python -m tests.openai_server --model DIR`.

It serves a checkpoint through the project's transformers backend over HTTP (/v1/models,
/v1/chat/completions, streamed or not), the way the servers users run behave:
- the stop string that ended the turn is not sent back (vLLM, `transformers serve`);
- the model `<name>-toolcalls` parses tool calls as vLLM's hermes parser does: the text before
  <tool_call> is `content`, the call goes out as structured `tool_calls` (arguments streamed in
  pieces) with finish_reason "tool_calls", although the request sends no `tools`;
- the model `<name>` leaves the call in the content text;
- `POST /tokenize` counts a chat's prompt tokens, pictures included, as vLLM's does (the backend
  checks the context with it before asking for a generation); `GET /stats` says how many chat
  completions it was asked for.
It prints `PORT <n>` once listening and exits when its parent does or after --lifetime seconds.
(`transformers serve` itself needs torchvision for Qwen2.5-VL's processor, which this CPU setup lacks.)
"""
from __future__ import annotations

import argparse
import base64
import io
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from PIL import Image

from core import protocol as P
from core.backends.base import Generation, GenerationParams
from core.backends.hf import TransformersBackend


def to_hf_messages(messages: list[dict]) -> list[dict]:
    """chat.completions messages -> the project's HF-style messages (data URLs decoded)."""
    out = []
    for m in messages:
        content = m.get("content") or ""
        if isinstance(content, str):
            out.append({"role": m["role"], "content": content if m["role"] == "system"
                        else [{"type": "text", "text": content}]})
            continue
        parts = []
        for part in content:
            if part["type"] == "text":
                parts.append({"type": "text", "text": part["text"]})
            else:
                data = base64.b64decode(part["image_url"]["url"].split(",", 1)[1])
                parts.append({"type": "image", "image": Image.open(io.BytesIO(data)).convert("RGB")})
        out.append({"role": m["role"], "content": parts})
    return out


def split_tool_call(text: str) -> tuple[str, dict | None]:
    """(content, call) as a hermes-style parser splits a turn; call is None when there is none."""
    if P.TOOL_CALL_START not in text:
        return text, None
    content, block = text.split(P.TOOL_CALL_START, 1)
    body = json.loads(block.split(P.TOOL_CALL_END, 1)[0])
    return content, {"name": body["name"], "arguments": json.dumps(body["arguments"])}


def held_back(text: str, marker: str) -> str:
    """Content safe to stream: the text before `marker`, less a tail that may start it."""
    text = text.split(marker, 1)[0]
    for n in range(len(marker) - 1, 0, -1):
        if text.endswith(marker[:n]):
            return text[:-n]
    return text


class Server:
    def __init__(self, model: str, name: str) -> None:
        self.backend = TransformersBackend(model, device="cpu")
        self.names = {name: False, f"{name}-toolcalls": True}  # served name -> parses tool calls
        self.completions = 0

    def count(self, body: dict) -> dict:
        """/tokenize's answer for a chat: its prompt's tokens with every picture expanded."""
        enc = self.backend.encoder.encode(to_hf_messages(body["messages"]),
                                          add_generation_prompt=body.get("add_generation_prompt", True))
        return {"count": len(enc), "max_model_len": 32768, "tokens": enc.input_ids}

    def generate(self, body: dict):
        """Yield text pieces, then (text without the stop string, stop_reason, Generation)."""
        stops = tuple(body.get("stop") or P.STOP_STRINGS)
        params = GenerationParams(max_new_tokens=body.get("max_tokens") or 256,
                                  temperature=body.get("temperature") or 0.0, stop=stops, seed=body.get("seed"))
        gen = None
        for chunk in self.backend.stream(to_hf_messages(body["messages"]), params):
            if isinstance(chunk, Generation):
                gen = chunk
            else:
                yield chunk
        text, stop_reason = gen.text, None
        if text.endswith(P.TOOL_CALL_END):
            text, stop_reason = text[:-len(P.TOOL_CALL_END)], P.TOOL_CALL_END
        yield text, stop_reason, gen


def logprobs(body: dict, gen: Generation) -> dict | None:
    """The choice's `logprobs` as vLLM sends them, when the request asks (None otherwise)."""
    if not body.get("logprobs") or not gen.logprobs or not gen.tokens:
        return None
    return {"content": [{"token": t, "logprob": lp, "bytes": None, "top_logprobs": []}
                        for t, lp in zip(gen.tokens, gen.logprobs)]}


def send_json(handler: BaseHTTPRequestHandler, obj: dict, status: int = 200) -> None:
    """One JSON response (the test servers' non-streamed answers and errors)."""
    data = json.dumps(obj).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


def make_handler(server: Server):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            return

        def do_GET(self) -> None:
            if self.path.rstrip("/") == "/stats":
                return self._json({"chat_completions": server.completions})
            if self.path.rstrip("/") != "/v1/models":
                return self._json({"error": {"message": "not found"}}, 404)
            self._json({"object": "list", "data": [{"id": n, "object": "model"} for n in server.names]})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if self.path == "/tokenize" and body.get("model") in server.names:
                return self._json(server.count(body))
            if self.path != "/v1/chat/completions" or body.get("model") not in server.names:
                return self._json({"error": {"message": f"model {body.get('model')!r} not served"}}, 404)
            parse = server.names[body["model"]]
            server.completions += 1
            if body.get("stream"):
                return self._stream(body, parse)
            *_, (text, stop_reason, gen) = server.generate(body)
            content, call = split_tool_call(text) if parse else (text, None)
            message = {"role": "assistant", "content": content or None}
            if call:
                message["tool_calls"] = [{"id": "call_0", "type": "function", "function": call}]
            self._json({"id": "c", "object": "chat.completion", "created": 0, "model": body["model"],
                        "choices": [{"index": 0, "message": message, "stop_reason": stop_reason,
                                     "finish_reason": "tool_calls" if call else gen.finish_reason,
                                     "logprobs": logprobs(body, gen)}],
                        "usage": self._usage(gen)})

        def _stream(self, body: dict, parse: bool) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            base = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": body["model"]}

            def event(delta: dict | None = None, finish: str | None = None, **extra) -> None:
                choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish, **extra}]
                self.wfile.write(f"data: {json.dumps({**base, 'choices': choices})}\n\n".encode())
                self.wfile.flush()

            raw, sent = "", ""
            for item in server.generate(body):
                if isinstance(item, tuple):
                    text, stop_reason, gen = item
                    break
                raw += item
                streamable = held_back(raw, P.TOOL_CALL_START if parse else P.TOOL_CALL_END)
                if len(streamable) > len(sent):
                    event({"content": streamable[len(sent):]})
                    sent = streamable
            content, call = split_tool_call(text) if parse else (text, None)
            if len(content) > len(sent):
                event({"content": content[len(sent):]})
            if call:
                args = call["arguments"]
                event({"tool_calls": [{"index": 0, "id": "call_0", "type": "function",
                                       "function": {"name": call["name"], "arguments": ""}}]})
                for i in range(0, len(args), 10):
                    event({"tool_calls": [{"index": 0, "function": {"arguments": args[i:i + 10]}}]})
            event({}, "tool_calls" if call else gen.finish_reason, stop_reason=stop_reason, logprobs=logprobs(body, gen))
            if (body.get("stream_options") or {}).get("include_usage"):
                self.wfile.write(f"data: {json.dumps({**base, 'choices': [], 'usage': self._usage(gen)})}\n\n"
                                 .encode())
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()

        @staticmethod
        def _usage(gen: Generation) -> dict:
            return {"prompt_tokens": gen.tokens_in, "completion_tokens": gen.tokens_out,
                    "total_tokens": gen.tokens_in + gen.tokens_out}

        def _json(self, obj: dict, status: int = 200) -> None:
            send_json(self, obj, status)

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True)
    parser.add_argument("--served-model-name", default="pixel-reasoner-tiny")
    parser.add_argument("--lifetime", type=float, default=600.0, help="seconds before it exits on its own")
    args = parser.parse_args()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(Server(args.model, args.served_model_name)))
    parent, deadline = os.getppid(), time.monotonic() + args.lifetime

    def watchdog() -> None:
        while os.getppid() == parent and time.monotonic() < deadline:
            time.sleep(0.5)
        httpd.shutdown()

    threading.Thread(target=watchdog, daemon=True).start()
    print(f"PORT {httpd.server_address[1]}", flush=True)
    httpd.serve_forever()


if __name__ == "__main__":
    main()
