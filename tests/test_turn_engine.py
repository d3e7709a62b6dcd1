"""Cached multi-turn batched generation (core.backends.hf_turns) against transformers' generate."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from core.backends import default_model
from core.backends.base import GenerationParams
from core.backends.hf import TransformersBackend
from core.backends.hf_turns import TurnCache, reusable_prefix, vision_runs
from core.loop import LoopConfig, Task, run_batch
from core.media import Video, load_image
from core.operations import PixelLimits

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "assets" / "examples"


def example_tasks() -> list[Task]:
    tasks = []
    for e in json.loads((EXAMPLES / "examples.json").read_text()):
        path = EXAMPLES / e["media"]
        media = {"video": Video.from_file(path)} if path.suffix == ".mp4" else {"image": load_image(path)}
        tasks.append(Task(question=e["question"], **media))
    return tasks


@pytest.fixture(scope="module")
def embedded():
    return TransformersBackend(default_model(), device="cpu")


def test_cached_turns_match_generate_token_for_token(embedded):
    """Greedy, multi-turn with crops and a video's frame selection: the same tokens either way."""
    config, params = LoopConfig(pixels=PixelLimits.preset("tiny")), GenerationParams(max_new_tokens=96)
    tasks = example_tasks()
    embedded.cache_turns = False
    plain = run_batch(embedded, tasks, config, params)
    calls, batch_sizes = [], []
    inner = embedded.generate_batch

    def recording(batch, p):
        gens = inner(batch, p)
        calls.append(gens)
        return gens

    hook = embedded.model.register_forward_pre_hook(
        lambda m, args, kwargs: batch_sizes.append(kwargs["input_ids"].shape[0]), with_kwargs=True)
    embedded.cache_turns, embedded.generate_batch = True, recording
    try:
        cached = run_batch(embedded, tasks, config, params)
    finally:
        hook.remove()
        del embedded.generate_batch
    assert [[s.text for s in t.steps] for t in cached] == [[s.text for s in t.steps] for t in plain]
    assert [[s.tokens_out for s in t.steps] for t in cached] == [[s.tokens_out for s in t.steps] for t in plain]
    assert any(s.tool == "crop_image_normalized" for t in plain for s in t.steps)
    assert any(s.tool == "select_frames" for t in plain for s in t.steps)
    # the shared prompt prefix serves the first turn, each conversation's own cache its second
    assert all(g.extra["cached_tokens"] >= 16 for g in calls[0])
    assert len(calls) >= 2 and all(g.extra["cached_tokens"] > g.tokens_in // 2 for g in calls[1])
    assert min(batch_sizes) < len(tasks)  # finished rows left the batch
    assert embedded._turns.caches == {}  # run_batch let go of the conversations


def picture(color) -> Image.Image:
    return Image.new("RGB", (28, 28), color)


def test_a_prefix_is_reused_only_where_tokens_and_pictures_match():
    pad, a, b = 9, picture("red"), picture("blue")
    ids = [1, 2, pad, pad, pad, 3, 4, 5]
    runs = vision_runs(ids, {pad})
    assert runs == [(2, 5)]
    cache = TurnCache(ids=ids[:7], keys=[], values=[], media=[("image", id(a))])
    assert reusable_prefix(cache, ids, [("image", id(a))], runs) == 7
    assert reusable_prefix(cache, ids, [("image", id(b))], runs) == 2  # another picture: from its pads on
    assert reusable_prefix(cache, [1, 2, pad, pad, pad, 3, 9, 9], [("image", id(a))], runs) == 6
    whole = TurnCache(ids=ids, keys=[], values=[], media=[("image", id(a))])
    assert reusable_prefix(whole, ids, [("image", id(a))], runs) == 7  # one token is always fed
    short = TurnCache(ids=ids[:3], keys=[], values=[], media=[("image", id(a))])
    assert reusable_prefix(short, ids, [("image", id(a))], runs) == 2  # never half a picture


def test_sampled_turns_honour_the_seed_and_return_logprobs(embedded):
    messages = [{"role": "user", "content": [{"type": "image", "image": example_tasks()[0].image.resize((112, 112))},
                                             {"type": "text", "text": "What is written on the tag?"}]}]
    params = GenerationParams(max_new_tokens=12, temperature=1.0, top_p=0.9, top_k=20, seed=3, logprobs=True)
    embedded.cache_turns = True
    first = embedded.generate_batch([messages, messages], params)
    again = embedded.generate_batch([messages, messages], params)
    embedded.forget()
    assert [g.token_ids for g in first] == [g.token_ids for g in again]
    assert all(len(g.logprobs) == g.tokens_out and all(lp <= 0 for lp in g.logprobs) for g in first)
    assert torch.isfinite(torch.tensor(first[0].logprobs)).all()
