"""The OpenAI backend against a real server process (tests/openai_server.py) serving the embedded
model: the same conversation whether the server leaves the tool call in the text or parses it into
structured `tool_calls` (streamed or not), and a clear error when the served model is ambiguous."""
from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from core import protocol as P
from core.backends import BackendError, default_model
from core.backends.openai import OpenAIBackend, to_openai_messages
from core.loop import Episode, LoopConfig, Task, run_to_end
from core.media import load_image
from core.operations import PixelLimits

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "assets" / "examples" / "zoom_needed_101.png"


@pytest.fixture(scope="module")
def server_url():
    proc = subprocess.Popen([sys.executable, "-m", "tests.openai_server", "--model", default_model(),
                             "--lifetime", "300"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("PORT "), f"server did not start: {line!r}"
        yield f"http://127.0.0.1:{int(line.split()[1])}/v1"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def ask(backend: OpenAIBackend):
    task = Task(question="What is written on the blue tag?", image=load_image(EXAMPLE))
    return run_to_end(backend, task, config=LoopConfig(pixels=PixelLimits.preset("tiny")))


def test_both_tool_call_forms_give_the_same_trajectory(server_url):
    content = ask(OpenAIBackend(server_url, model_name="pixel-reasoner-tiny"))
    parsed = ask(OpenAIBackend(server_url, model_name="pixel-reasoner-tiny-toolcalls"))
    whole = ask(OpenAIBackend(server_url, model_name="pixel-reasoner-tiny-toolcalls", stream=False))
    first = content.steps[0]
    assert first.tool == P.CROP_TOOL and first.error is None and first.text.endswith(P.TOOL_CALL_END)
    assert content.status == "done" and content.answer == "3"
    for other in (parsed, whole):
        assert [s.text for s in other.steps] == [s.text for s in content.steps]
        assert other.answer == content.answer and other.steps[0].box_px == first.box_px
        assert other.steps[0].tokens_in == first.tokens_in > 0


def test_the_server_really_sends_structured_tool_calls(server_url):
    """The hermes-style model moves the call out of the text: what the backend rebuilds."""
    backend = OpenAIBackend(server_url, model_name="pixel-reasoner-tiny-toolcalls")
    task = Task(question="What is written on the blue tag?", image=load_image(EXAMPLE))
    messages = Episode(task, LoopConfig(pixels=PixelLimits.preset("tiny"))).messages
    body = json.dumps({"model": backend.model_name, "messages": to_openai_messages(messages),
                       "max_tokens": 128, "stop": list(P.STOP_STRINGS)}).encode()
    request = urllib.request.Request(server_url + "/chat/completions", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        choice = json.loads(response.read())["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and P.TOOL_CALL_START not in choice["message"]["content"]
    call = choice["message"]["tool_calls"][0]["function"]
    assert call["name"] == P.CROP_TOOL and len(json.loads(call["arguments"])["bbox_2d"]) == 4


def test_two_served_models_need_a_served_model_name(server_url):
    with pytest.raises(BackendError, match="lists 2 models .*--served-model-name"):
        OpenAIBackend(server_url, model_name=None).model_name


def test_the_cli_names_the_served_model(server_url):
    out = subprocess.run([sys.executable, "-m", "core", "ask", "--backend", "openai", "--model", server_url,
                          "--served-model-name", "pixel-reasoner-tiny-toolcalls", "--image", str(EXAMPLE),
                          "--question", "What is written on the blue tag?", "--pixels", "tiny", "--json"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    traj = json.loads(out.stdout)
    assert traj["answer"] == "3" and traj["steps"][0]["tool"] == P.CROP_TOOL
    assert traj["model"] == f"pixel-reasoner-tiny-toolcalls@{server_url}"


def test_a_server_that_returns_logprobs_gives_the_answer_a_confidence(server_url):
    """The server answers `logprobs`: the answer's confidence and each step's uncertainty are the
    transformers backend's own (the same model, greedy), streamed or not."""
    from core.backends import load_backend

    streamed = ask(OpenAIBackend(server_url, model_name="pixel-reasoner-tiny"))
    whole = ask(OpenAIBackend(server_url, model_name="pixel-reasoner-tiny", stream=False))
    local = ask(load_backend("transformers"))
    assert streamed.answer == local.answer and streamed.answer_confidence is not None
    assert abs(streamed.answer_confidence - local.answer_confidence) < 1e-3
    assert whole.answer_confidence == streamed.answer_confidence
    assert [s.unsure for s in streamed.steps] == [s.unsure for s in local.steps]
