"""The context check before prefill, on every backend that runs a model: a prompt over
`LoopConfig.max_context_tokens` ends its episode "context full" before the model reads it (no
prefill, no generation request), with the message the transformers stream gives, while its
batch-mates run; and Stop during a prefill, which ends the turn before the prompt is read through.
Real parts: the embedded checkpoint, the OpenAI-compatible test server process."""
from __future__ import annotations

import json
import threading
import time
import urllib.request

import pytest

from core.backends import default_model
from core.backends.base import ContextFull, GenerationParams
from core.backends.hf import TransformersBackend
from core.backends.openai import OpenAIBackend
from core.backends.vllm import VLLMBackend
from core.encoding import VisionTextEncoder
from core.loop import Episode, LoopConfig, Task, run_batch, run_to_end
from core.media import Video
from core.operations import PixelLimits
from tests.conftest import numbered_frames, photo_like
from tests.test_openai_server import server_url  # noqa: F401 - the real server process, a fixture

LONG = "Look very closely at every corner of the picture. " * 60
PARAMS = GenerationParams(max_new_tokens=8)


def config(budget: int = 12 * 1024 - 200) -> LoopConfig:
    return LoopConfig(tools=False, pixels=PixelLimits.preset("tiny"), max_context_tokens=budget)


def task(question: str = "What is written?", seed: int = 0) -> Task:
    return Task(question=question, image=photo_like(300, 200, seed=seed))


@pytest.fixture(scope="module")
def encoder():
    return VisionTextEncoder.from_pretrained(default_model())


@pytest.fixture(scope="module")
def budget(encoder) -> int:
    """A context the short question fits (with room to answer) and the long one does not."""
    short = encoder.count_tokens(Episode(task(), config()).messages)
    long = encoder.count_tokens(Episode(task(LONG), config()).messages)
    assert long > short + 200
    return short + 100


def refused(traj, budget: int) -> bool:
    return traj.status == "max_tokens" and not traj.steps and f"the context holds {budget}" in (traj.error or "")


def test_count_tokens_is_the_encoded_length(encoder):
    picture = Episode(task(), config()).messages
    odd = [{"role": "user", "content": [{"type": "image", "image": photo_like(301, 199)},
                                        {"type": "text", "text": "odd sides"}]}]
    video = Episode(Task(question="Which frame?", video=Video.from_frames(list(numbered_frames(5)))),
                    LoopConfig(pixels=PixelLimits.preset("tiny"))).messages
    for messages in (picture, odd, video):
        assert encoder.count_tokens(messages) == len(encoder.encode(messages, add_generation_prompt=True))


@pytest.mark.parametrize("cache_turns", [True, False])
def test_transformers_batch_refuses_a_long_prompt_and_runs_the_rest(budget, cache_turns):
    backend = TransformersBackend(default_model(), device="cpu")
    backend.cache_turns = cache_turns and backend.cache_turns
    short, long, other = run_batch(backend, [task(seed=1), task(LONG, seed=2), task(seed=3)], config(budget),
                                   params=PARAMS)
    assert refused(long, budget)
    assert short.steps and other.steps and not short.error and not other.error


def test_vllm_refuses_before_the_engine_sees_the_prompt(budget):
    backend = VLLMBackend.__new__(VLLMBackend)  # vLLM needs a GPU: the engine is absent, and never reached
    backend.model_id, backend.llm, backend._vllm, backend._lock, backend._encoder = \
        default_model(), None, None, threading.Lock(), None
    messages = [Episode(t, config(budget)).messages for t in (task(), task(LONG))]
    with pytest.raises(ContextFull) as e:
        backend.generate_batch(messages, GenerationParams(max_context_tokens=budget))
    assert list(e.value.rows) == [1] and f"the context holds {budget}" in str(e.value)


def completions(url: str) -> int:
    """How many chat completions the test server was asked for."""
    with urllib.request.urlopen(url.removesuffix("/v1") + "/stats", timeout=10) as r:
        return json.load(r)["chat_completions"]


def test_openai_refuses_before_any_generation_request(server_url, budget, encoder):
    backend = OpenAIBackend(server_url, model_name="pixel-reasoner-tiny")
    before = completions(server_url)
    t0 = time.perf_counter()
    traj = run_to_end(backend, task(LONG), config=config(budget), params=PARAMS)
    assert refused(traj, budget) and time.perf_counter() - t0 < 5
    assert completions(server_url) == before  # the server was never asked to generate
    short, long = run_batch(backend, [task(seed=4), task(LONG, seed=5)], config(budget), params=PARAMS)
    assert refused(long, budget) and short.steps and completions(server_url) == before + 1
    assert short.steps[0].tokens_in == encoder.count_tokens(Episode(task(seed=4), config()).messages)


def test_stop_during_the_prefill_ends_the_turn_before_its_first_token():
    """Stop reaches the transformers stream between decoder layers while the prompt is read (before,
    it waited for the whole prefill and the first token: tokens_out was 1)."""
    backend = TransformersBackend(default_model(), device="cpu")
    messages = Episode(task(LONG * 3), config()).messages
    cancel = threading.Event()
    threading.Timer(0.02, cancel.set).start()
    *_, stopped = backend.stream(messages, GenerationParams(max_new_tokens=64), cancel)
    assert stopped.finish_reason == "cancelled" and stopped.tokens_out == 0 and not stopped.text
    *_, after = backend.stream(messages, GenerationParams(max_new_tokens=2))  # the model is itself again
    assert after.finish_reason != "cancelled" and after.tokens_out >= 1
