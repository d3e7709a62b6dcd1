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
from core.backends.hf_turns import BufferedLayer, TurnCache, reusable_prefix, vision_runs
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


CONFIG, GREEDY = LoopConfig(pixels=PixelLimits.preset("tiny")), GenerationParams(max_new_tokens=96)


@pytest.fixture(scope="module")
def plain(embedded):
    """The examples through plain batched generate (no caches kept between turns)."""
    embedded.cache_turns = False
    try:
        return run_batch(embedded, example_tasks(), CONFIG, GREEDY)
    finally:
        embedded.cache_turns = True


def test_cached_turns_match_generate_token_for_token(embedded, plain):
    """Greedy, multi-turn with crops and a video's frame selection: the same tokens either way."""
    config, params = CONFIG, GREEDY
    tasks = example_tasks()
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


def test_a_refilled_batch_gives_the_same_tokens(embedded, plain):
    """Two rows at a time: a waiting conversation's first turn shares a batch with another's later
    turn (a cached conversation beside a fresh one), and the tokens stay those of plain generate."""
    short = min(range(len(plain)), key=lambda i: len(plain[i].steps))  # a one-turn conversation first:
    order = [short] + [i for i in range(len(plain)) if i != short]  # the next one joins a second turn
    turns = []
    inner = embedded.generate_batch

    def recording(batch, p):
        turns.append(sorted(sum(m["role"] == "assistant" for m in messages) for messages in batch))
        return inner(batch, p)

    embedded.cache_turns, embedded.generate_batch = True, recording
    try:
        tasks = example_tasks()
        refilled = run_batch(embedded, [tasks[i] for i in order], CONFIG, GREEDY, batch_size=2)
    finally:
        del embedded.generate_batch
    assert [[s.text for s in t.steps] for t in refilled] == [[s.text for s in plain[i].steps] for i in order]
    assert max(len(t) for t in turns) == 2 and [0, 1] in turns  # a first turn beside a second one
    assert embedded._turns.caches == {}


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


def test_a_buffered_layer_holds_what_concatenation_would():
    """States written in place, past the buffer's room and after rows left, equal torch.cat's."""
    torch.manual_seed(0)
    layer, keys, values = BufferedLayer(room=3), torch.empty(4, 2, 0, 8), torch.empty(4, 2, 0, 8)
    for n in (5, 1, 1, 1, 4, 1):
        k, v = torch.randn(keys.shape[0], 2, n, 8), torch.randn(keys.shape[0], 2, n, 8)
        keys, values = torch.cat([keys, k], 2), torch.cat([values, v], 2)
        got_k, got_v = layer.update(k, v)
        assert torch.equal(got_k, keys) and torch.equal(got_v, values) and layer.get_seq_length() == keys.shape[2]
        if n == 4:  # rows 0 and 2 stop
            layer.batch_select_indices(torch.tensor([1, 3]))
            keys, values = keys[[1, 3]], values[[1, 3]]
            assert torch.equal(layer.keys, keys) and torch.equal(layer.values, values)
