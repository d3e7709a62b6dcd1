"""Sampling-time log-probs equal the training forward pass's, batched, for multi-crop trajectories.

Three conversations of different lengths run together through the real tool loop (core.loop.run_batch)
on the policy backend: one with two crops (the second crops the first crop), one with one crop, one
answering directly. Their turns are scripted with a logits processor, so the model still scores every
token on the generation path (transformers `generate`, KV cache, left padding, fp32 CPU). The training
batch (left-padded prompts, right-padded completions, each row with its own images) is then scored by
one forward pass through TRL's fused LM head, as the trainer does, and a plain forward. Unscripted
turns go through the turn engine (core.backends.hf_turns); the last test samples freely there.
"""
from __future__ import annotations

import pytest
import torch

from core import protocol as P
from core.backends.base import GenerationParams
from core.encoding import VisionTextEncoder
from core.loop import Task
from core.media import load_image
from train.rollout import PolicyBackend, forward_logps, rollout, training_batch
from train.synth.traces import loop_config

SCRIPTS = {
    "Two crops: what does the sign say?": [
        "The sign is small. I will zoom in on it.\n\n"
        + P.format_tool_call(P.CROP_TOOL, {"bbox_2d": [0.05, 0.15, 0.45, 0.5], "target_image": 1}),
        "Closer still.\n\n" + P.format_tool_call(P.CROP_TOOL, {"bbox_2d": [0.2, 0.2, 0.8, 0.8], "target_image": 2}),
        "The text reads WOOLSHOPS.\n\n\\boxed{WOOLSHOPS}",
    ],
    "One crop: what colour is the sign?": [
        "I will zoom in on the sign.\n\n"
        + P.format_tool_call(P.CROP_TOOL, {"bbox_2d": [0.1, 0.2, 0.3, 0.4], "target_image": 1}),
        "The sign is \\boxed{white}.",
    ],
    "No crop: is it day?": ["Yes, it is day.\n\n\\boxed{yes}"],
}


def script(messages):
    question = next(p["text"] for p in messages[1]["content"] if p["type"] == "text").split("\n")[0]
    turn = sum(1 for m in messages if m["role"] == "assistant")
    return SCRIPTS[question][turn]


@pytest.fixture(scope="module")
def rollouts(tiny_checkpoint, photo_path):
    from transformers import Qwen2_5_VLForConditionalGeneration
    from trl.trainer.utils import add_fused_lm_head

    torch.manual_seed(0)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_checkpoint, dtype=torch.float32).eval()
    add_fused_lm_head(model, temperature=1.0, outputs=("log_probs", "entropy"))  # as GRPOTrainer patches it
    encoder = VisionTextEncoder.from_pretrained(tiny_checkpoint)
    backend = PolicyBackend(model, encoder, script=script)
    image = load_image(photo_path)
    tasks = [Task(q, image=image, id=f"t{i}") for i, q in enumerate(SCRIPTS)]
    out = rollout(backend, tasks, loop_config(True, "tiny"), GenerationParams(max_new_tokens=120, temperature=0.0))
    return model, encoder, out


def test_trajectories_went_through_the_loop(rollouts):
    _, _, out = rollouts
    assert [r.trajectory.n_ops for r in out] == [2, 1, 0]
    assert all(r.trajectory.status == "done" for r in out)
    assert out[0].trajectory.steps[1].target_image == 2  # the second crop is of the first crop
    assert [len(r.ledger.images) for r in out] == [3, 2, 1]


def test_ledger_is_the_sft_encoding_with_observations_masked(rollouts):
    _, encoder, out = rollouts
    for r in out:
        ep_messages = rebuild_messages(r)
        sft = encoder.encode(ep_messages, add_generation_prompt=False)
        n = len(r.ledger.ids)
        assert r.ledger.ids == sft.input_ids[:n] and sft.input_ids[n:] == encoder.tokenizer("\n")["input_ids"]
        im_end = encoder.tokenizer.convert_tokens_to_ids(P.IM_END)
        for tok, rl_m, sft_m in zip(r.ledger.ids, r.ledger.mask, sft.assistant_mask[:n]):
            assert rl_m <= sft_m  # nothing outside the assistant turns is trained
            if sft_m and not rl_m:
                assert tok == im_end  # only the <|im_end|> the policy did not sample after </tool_call>
        assert sum(r.ledger.mask) == sum(s.tokens_out for s in r.trajectory.steps)


def rebuild_messages(r):
    """The conversation as core.records exports it: what SFT would train on."""
    images = iter(r.ledger.images)
    t = r.trajectory
    messages = [{"role": "system", "content": P.system_prompt(P.tools_for(False, "rl"))},
                {"role": "user", "content": [{"type": "image", "image": next(images)},
                                             {"type": "text", "text": P.question_text(t.question, None, "vcot")}]}]
    for s in t.steps:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": s.text}]})
        if s.observation is not None:
            messages.append({"role": "user", "content": [{"type": "text", "text": s.observation}]
                             + [{"type": "image", "image": next(images)} for _ in s.images]})
    return messages


@pytest.mark.parametrize("fused", [True, False])
def test_sampling_logprobs_match_batched_training_forward(rollouts, fused):
    model, encoder, out = rollouts
    batch = training_batch([r.ledger for r in out], encoder)
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1)
    attn = torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1)
    assert len({int(m.sum()) for m in attn}) == 3  # three different lengths, padded in one batch
    with torch.no_grad():
        logps, _ = forward_logps(model, ids, attn, batch["completion_ids"].size(1), batch["mm"],
                                 batch["mm_token_type_ids"], batch_size=None, fused=fused)
    mask = batch["tool_mask"].bool()
    assert int(mask.sum()) > 100
    diff = (logps - batch["sampling_per_token_logps"]).abs()[mask]
    print(f"fused={fused}: {int(mask.sum())} sampled tokens, max abs diff {diff.max().item():.2e}")
    assert diff.max().item() <= 1e-4, f"max abs diff {diff.max().item():.2e}"


@pytest.fixture(scope="module")
def sampled():
    """Free sampling (no script) of TinyZoom items by the embedded checkpoint (it crops, then
    answers) through the policy backend's turn engine, each conversation's cache kept between turns."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    from core.backends import default_model
    from train.synth.tasks import make_item

    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(default_model(), dtype=torch.float32).eval()
    encoder = VisionTextEncoder.from_pretrained(default_model())
    backend = PolicyBackend(model, encoder)
    calls = []
    inner = backend._turn_engine_generate

    def recording(batch, params):
        gens = inner(batch, params)
        calls.append([g.extra["cached_tokens"] for g in gens])
        return gens

    backend._turn_engine_generate = recording
    items = [make_item("zoom_needed", 700 + i, f"z{i}") for i in range(3)]
    tasks = [Task(it.question, image=it.image, id=f"z{i}") for i, it in enumerate(items)]
    params = GenerationParams(max_new_tokens=80, temperature=1.0, top_p=0.95, seed=11)
    return model, encoder, backend, calls, rollout(backend, tasks, loop_config(True, "tiny"), params)


def test_sampled_turns_through_the_turn_engine_match_the_training_forward(sampled):
    model, encoder, backend, calls, out = sampled
    assert backend.cache_turns and backend._turns.caches == {}
    # the first turn reuses the shared prompt prefix, the second each conversation's own cache
    assert len(calls) >= 2 and min(calls[1]) > max(calls[0]) > 0
    assert any(r.trajectory.n_ops for r in out)
    batch = training_batch([r.ledger for r in out], encoder)
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1)
    attn = torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1)
    with torch.no_grad():
        logps, _ = forward_logps(model, ids, attn, batch["completion_ids"].size(1), batch["mm"],
                                 batch["mm_token_type_ids"], batch_size=None, fused=False)
    mask = batch["tool_mask"].bool()
    assert int(mask.sum()) == sum(s.tokens_out for r in out for s in r.trajectory.steps) > 0
    diff = (logps - batch["sampling_per_token_logps"]).abs()[mask]
    print(f"turn engine: {int(mask.sum())} sampled tokens, max abs diff {diff.max().item():.2e}")
    assert diff.max().item() <= 1e-4, f"max abs diff {diff.max().item():.2e}"
