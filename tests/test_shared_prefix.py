"""The fast SFT forward (shared prefix once, rows in length groups) against the plain forward: same
log-probabilities, same loss, same gradients, on real synthetic records and the embedded model."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from core.encoding import IGNORE_INDEX, VisionTextEncoder
from core.records import load_sft_records
from train.shared_prefix import length_groups, prefix_classes, shared_prefix_len, token_log_probs
from train.synth.build import BuildConfig, build

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "assets" / "pixel-reasoner-tiny"


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    from train.sft import SFTCollator

    root = tmp_path_factory.mktemp("prefixdata")
    build(BuildConfig(out=str(root), train=12, validation=0, test=0, seed=3, variety="train", variety_share=0.5,
                      progress=False))
    records = load_sft_records(root)
    encoder = VisionTextEncoder.from_pretrained(MODEL)
    return SFTCollator(records, encoder, "tiny", grounded_weight=5.0)([{"row": i} for i in range(8)])


def test_the_shared_prefix_stops_before_pictures_padding_and_trained_tokens():
    ids = torch.tensor([[5, 6, 7, 8, 9, 1], [5, 6, 7, 3, 0, 0]])
    attn = torch.tensor([[1] * 6, [1, 1, 1, 1, 0, 0]])
    labels = torch.full_like(ids, IGNORE_INDEX)
    assert shared_prefix_len(ids, labels, attn) == 3
    labels[1, 2] = 7  # a trained token at 2: its predictor (position 1) must run with the rows
    assert shared_prefix_len(ids, labels, attn) == 1
    mm = torch.zeros_like(ids)
    mm[:, 0] = 1  # a picture at the start: nothing is shared
    assert shared_prefix_len(ids, torch.full_like(ids, IGNORE_INDEX), attn, mm) == 0


def test_length_groups_keep_padding_under_the_bound_and_every_row_once():
    lengths = [300, 120, 310, 500, 125, 290]
    groups = length_groups(lengths, max_waste=0.1)
    assert sorted(i for g in groups for i in g) == list(range(6))
    for g in groups:
        width = max(lengths[i] for i in g)
        assert 1 - sum(lengths[i] for i in g) / (width * len(g)) <= 0.1
    assert [3] in groups and sorted([1, 4]) in [sorted(g) for g in groups]


def test_the_fast_forward_gives_the_plain_forwards_loss_and_gradients(batch):
    from transformers import Qwen2_5_VLForConditionalGeneration
    from trl.trainer.utils import add_fused_lm_head

    classes = prefix_classes(batch["input_ids"], batch["labels"], batch["attention_mask"], batch["mm_token_type_ids"])
    assert sorted(i for rows, _ in classes for i in rows) == list(range(8))
    assert max(n for _, n in classes) > 100  # the system and tool text
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(MODEL, dtype=torch.float32)
    add_fused_lm_head(model)
    plain = {k: v for k, v in batch.items() if k != "loss_weights"}
    out = model(**plain, use_cache=False, fused_lm_head=True)
    mask = out.label_mask
    ref = -(out.log_probs * batch["loss_weights"][:, 1:] * mask).sum() / mask.sum()
    ref.backward()
    ref_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()

    fast = token_log_probs(model, batch)
    assert fast.log_probs.numel() == int(mask.sum())
    loss = -(fast.log_probs * fast.weights).sum() / fast.log_probs.numel()
    loss.backward()
    assert torch.allclose(loss, ref, rtol=1e-5)
    assert torch.allclose(fast.log_probs.sort().values, out.log_probs[mask].sort().values, atol=1e-4)
    for name, param in model.named_parameters():
        if name in ref_grads:
            assert torch.allclose(param.grad, ref_grads[name], rtol=1e-3, atol=1e-6), name
