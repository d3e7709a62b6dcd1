"""Vision pre-training (train/vision.py): per-token labels on generated views, scoring, and a few
real training steps on the tiny checkpoint whose result loads and runs as a Qwen2.5-VL model."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from train.synth import scenes as S
from train.views import BACKGROUND, CELL, CLASSES, View, cls, make_view, score_views, token_labels
from train.vision import VisionRunConfig, lr_at, train, view_loss
from train.vision_targets import (ROW_WORDS, cell_targets, cell_tenths, class_word_ids, digit_word_ids, fit_words,
                                  position_loss, position_word_scores, positioned, row_word_ids, word_logits)


def test_token_labels_take_the_first_class_that_covers_a_cell():
    size = (3 * CELL, 2 * CELL)
    glyph = np.zeros((2 * CELL, 3 * CELL), bool)
    glyph[CELL + 5:CELL + 20, CELL + 5:CELL + 20] = True  # inside cell (1, 1)
    tag = np.zeros_like(glyph)
    tag[CELL:, CELL:2 * CELL + 10] = True  # cell (1, 1) fully, cell (1, 2) by 10/28
    labels = token_labels([(cls("glyph:7"), glyph), (cls("tag:red"), tag)], size)
    assert labels.shape == (2, 3)
    assert labels[1, 1] == cls("glyph:7")  # the glyph wins where both cover
    assert labels[1, 2] == cls("tag:red")  # 10/28 of the cell >= 0.1
    assert (labels[0] == BACKGROUND).all() and labels[1, 0] == BACKGROUND


@pytest.mark.parametrize("kind", ["crop", "overview", "frame", "shape", "sheet"])
def test_generated_views_are_model_sized_and_labelled(kind):
    rng = np.random.default_rng(3)
    view = make_view(kind, rng, wrong_crop_rate=0.0)
    w, h = view.image.size
    assert w % CELL == 0 and h % CELL == 0 and w * h <= 64 * CELL * CELL
    assert view.labels.shape == (h // CELL, w // CELL)
    names = {CLASSES[c] for c in np.unique(view.labels)}
    expected = {"crop": "glyph:", "frame": "glyph:", "overview": "tag:", "shape": "shape:", "sheet": "glyph:"}[kind]
    assert any(n.startswith(expected) for n in names), names
    if kind == "overview":  # at overview size the glyph is unreadable: only the tag's colour is labelled
        assert not any(n.startswith("glyph:") for n in names)


@pytest.mark.parametrize("kind", ["crop", "sheet"])
def test_glyph_label_sits_on_the_dark_ink(kind):
    """The labelled cells are where the glyphs' black ink is (labels follow the pixels)."""
    view = make_view(kind, np.random.default_rng(11), wrong_crop_rate=0.0)
    ink = np.asarray(view.image.convert("L")) < 60
    glyph_cells = np.isin(view.labels, [cls(f"glyph:{g}") for g in S.GLYPHS])
    rows, cols = view.labels.shape
    ink_share = ink[:rows * CELL, :cols * CELL].reshape(rows, CELL, cols, CELL).mean(axis=(1, 3))
    assert glyph_cells.any()
    assert ink_share[glyph_cells].mean() > 5 * ink_share[~glyph_cells].mean()


def test_score_views_reads_glyphs_tags_and_colours_from_cell_logits():
    crop_labels = np.full((2, 2), BACKGROUND)
    crop_labels[0, 1] = cls("glyph:K")
    over_labels = np.full((2, 2), BACKGROUND)
    over_labels[1, 0] = cls("tag:green")
    shape_labels = np.full((1, 2), cls("shape:yellow"))
    views = [View("crop", None, crop_labels), View("overview", None, over_labels), View("shape", None, shape_labels)]
    logits = torch.zeros(4 + 4 + 2, len(CLASSES))
    logits[1, cls("glyph:K")] = 5.0  # the crop: K is read in the right cell
    logits[4 + 2, cls("tag:green")] = 3.0  # the overview: the green tag is found in cell (1, 0)
    logits[8:, cls("shape:purple")] = 4.0  # the shape: named wrongly
    scores = score_views(logits, views)
    assert scores == {"crop_glyph_acc": 1.0, "overview_tag_found": 1.0, "shape_colour_acc": 0.0}


def test_each_class_has_the_word_it_is_read_out_as(tiny_checkpoint):
    from core.encoding import VisionTextEncoder

    encoder = VisionTextEncoder.from_pretrained(tiny_checkpoint)
    ids = class_word_ids(encoder.tokenizer, encoder.image_token_id)
    assert ids[BACKGROUND] == encoder.image_token_id
    for name, token in zip(CLASSES, ids):
        if name != "background":
            piece = encoder.tokenizer.decode([token]).strip()
            assert piece and name.split(":")[1].startswith(piece)
    assert ids[cls("tag:red")] == ids[cls("shape:red")]  # one word, "red", whatever is red


def test_word_loss_is_zero_on_the_words_and_word_logits_read_them():
    cfg = VisionRunConfig(word_weight=1.0, center_weight=0.0, background_weight=0.5)
    targets = torch.randn(len(CLASSES), 8)
    labels = torch.tensor([cls("glyph:7"), BACKGROUND, cls("tag:blue")])
    logits = torch.zeros(3, len(CLASSES))
    on = view_loss(logits, targets[labels].clone(), labels, cfg, targets)
    assert on["word"].item() == pytest.approx(0.0, abs=1e-6)
    off = targets[labels].clone() + 0.5
    feats = off.requires_grad_()
    loss = view_loss(logits, feats, labels, cfg, targets)
    assert loss["word"].item() > 0 and loss["loss"].item() == pytest.approx((loss["ce"] + loss["word"]).item())
    loss["loss"].backward()  # the gradient points from each token toward its word
    assert torch.all((feats.grad * (off - targets[labels])).sum(-1) > 0)
    assert word_logits(targets[labels], targets).argmax(-1).tolist() == labels.tolist()
    assert "word" not in view_loss(logits, off, labels, cfg)  # without targets: the plain objective


def test_fit_words_folds_a_least_squares_map_into_the_last_layer():
    from types import SimpleNamespace

    torch.manual_seed(0)
    last = torch.nn.Linear(len(CLASSES), 32)
    visual = SimpleNamespace(merger=SimpleNamespace(mlp=[torch.nn.GELU(), last]))
    labels = torch.randint(0, len(CLASSES), (400,))
    hidden = torch.nn.functional.one_hot(labels, len(CLASSES)).float() + 0.05 * torch.randn(400, len(CLASSES))
    targets = torch.randn(len(CLASSES), 32)
    with torch.no_grad():
        before = (last(hidden) - targets[labels]).pow(2).sum(-1).mean()
        fit_words(visual, last(hidden), labels, targets[labels])
        after = last(hidden)  # the same layer, refitted in place
    assert (after - targets[labels]).pow(2).sum(-1).mean() < 0.05 * before
    assert torch.equal(word_logits(after, targets).argmax(-1), labels)


def test_lr_warms_up_then_decays_to_zero_by_steps_or_by_time():
    cfg = VisionRunConfig(learning_rate=1e-3, warmup_ratio=0.1, max_steps=100)
    assert lr_at(cfg, 5, 0) == pytest.approx(5e-4)
    assert lr_at(cfg, 10, 0) == pytest.approx(1e-3)
    assert lr_at(cfg, 55, 0) == pytest.approx(5e-4)
    assert lr_at(cfg, 100, 0) == pytest.approx(0.0)
    timed = VisionRunConfig(learning_rate=1e-3, warmup_ratio=0.0, max_seconds=60)
    assert lr_at(timed, 5, 30.0) == pytest.approx(5e-4)  # the step count does not matter under a budget


def test_cell_tenths_are_row_major_like_the_merged_tokens_and_position_loss_scores_them():
    t = cell_tenths(2, 4)  # cell centres at 1/8, 3/8, 5/8, 7/8 of the width; 1/4, 3/4 of the height
    assert t.tolist() == [[1, 2], [3, 2], [6, 2], [8, 2], [1, 7], [3, 7], [6, 7], [8, 7]]
    assert cell_tenths(1, 10)[:, 0].tolist() == list(range(10))
    tenths = torch.from_numpy(t)
    exact = torch.full((8, 20), -9.0)
    exact[torch.arange(8), tenths[:, 0]] = 9.0
    exact[torch.arange(8), 10 + tenths[:, 1]] = 9.0
    loss, hit = position_loss(exact, tenths)
    assert hit.item() == 1.0 and loss.item() < 1e-3
    wrong_y = exact.clone()
    wrong_y[:, 10:] = exact[:, 10:].roll(1, 1)
    assert position_loss(wrong_y, tenths)[1].item() == 0.0  # both tenths must be right


def test_position_words_add_the_column_digit_and_row_word_to_every_non_background_cell():
    targets, digits, rows = torch.randn(len(CLASSES), 6), torch.randn(10, 6), torch.randn(10, 6)
    labels = torch.tensor([BACKGROUND, cls("glyph:7"), cls("tag:red"), BACKGROUND])
    tenths = torch.tensor([[0, 1], [3, 1], [8, 6], [9, 6]])
    assert torch.equal(cell_targets(targets, labels), targets[labels])
    cells = cell_targets(targets, labels, tenths, {0: digits})
    assert torch.equal(cells[0], targets[BACKGROUND]) and torch.equal(cells[3], targets[BACKGROUND])
    assert torch.allclose(cells[1], targets[cls("glyph:7")] + digits[3])
    assert torch.allclose(cells[2], targets[cls("tag:red")] + digits[8])
    both = cell_targets(targets, labels, tenths, {0: digits, 1: rows})  # the row's tenth in words of its own
    assert torch.allclose(both[2], targets[cls("tag:red")] + digits[8] + rows[6])
    assert torch.equal(both[0], targets[BACKGROUND])
    bare_glyphs = cell_targets(targets, labels, tenths, {0: digits, 1: rows}, positioned(labels, glyphs=False))
    assert torch.equal(bare_glyphs[1], targets[cls("glyph:7")])  # a glyph "7" never reads as column 7
    assert torch.allclose(bare_glyphs[2], both[2])


def test_position_word_scores_read_each_axis_from_the_words_a_token_is_made_of():
    g = torch.Generator().manual_seed(0)
    targets, digits, rows = (torch.randn(n, 16, generator=g) for n in (len(CLASSES), 10, 10))
    labels = torch.tensor([cls("tag:red")] * 10 + [BACKGROUND] * 2)
    tenths = torch.stack([torch.arange(12) % 10, (torch.arange(12) * 3) % 10], 1)
    feats = cell_targets(targets, labels, tenths, {0: digits, 1: rows})
    on = positioned(labels)
    assert position_word_scores(feats, labels, tenths, targets, {0: digits, 1: rows}, on) == {"word_x_acc": 1.0, "word_y_acc": 1.0}
    no_rows = cell_targets(targets, labels, tenths, {0: digits})  # a tower that hands over the column only
    scores = position_word_scores(no_rows, labels, tenths, targets, {0: digits, 1: rows}, on)
    assert scores["word_y_acc"] <= 0.3


def test_row_words_are_tokens_of_their_own_that_the_synthetic_text_never_uses(tiny_checkpoint):
    from core.encoding import VisionTextEncoder

    tok = VisionTextEncoder.from_pretrained(tiny_checkpoint).tokenizer
    rows, digits = row_word_ids(tok), digit_word_ids(tok)
    assert len(set(rows)) == 10 and not set(rows) & set(digits) and tok.unk_token_id not in rows
    assert tok.convert_ids_to_tokens(rows) == list(ROW_WORDS)  # single bytes: they decode to no text
    text = "What is written on the red tag? [0.54, 0.66, 0.69, 0.71] \\boxed{7} Left or right? Blue."
    assert not set(tok(text, add_special_tokens=False)["input_ids"]) & set(rows)


@pytest.mark.parametrize("word_weight,position_weight,position_words",
                         [(0.0, 0.0, False), (1.0, 0.0, False), (1.0, 1.0, False), (1.0, 1.0, True)])
def test_a_few_steps_write_metrics_and_a_loadable_checkpoint(tiny_checkpoint, tmp_path, word_weight, position_weight,
                                                             position_words):
    from transformers import Qwen2_5_VLForConditionalGeneration

    from core.encoding import VisionTextEncoder

    cfg = VisionRunConfig(model=str(tiny_checkpoint), out=str(tmp_path / "run"), batch_size=4, max_steps=3,
                          warmup_ratio=0.3, eval_views=2, eval_every=2, num_workers=0, word_weight=word_weight,
                          word_init_views=4 if word_weight else 0, fresh_vision=not word_weight,
                          position_weight=position_weight, position_words=position_words,
                          row_words=position_words, glyph_positions=not position_words)
    summary = train(cfg)
    assert summary["steps"] == 3
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(np.isfinite(r["loss"]) and 0.0 <= r["shared"] <= 1.0 for r in rows)
    assert "crop_glyph_acc" in rows[1] and "overview_tag_found" in rows[1]
    if word_weight:  # the word objective is logged and scored
        assert all(r["word"] > 0 for r in rows) and "word_crop_glyph_acc" in rows[1]
    if position_weight:  # so is the position objective
        assert all(r["position"] > 0 and 0 <= r["position_hit"] <= 1 for r in rows) and 0 <= rows[1]["position_acc"] <= 1
    else:
        assert "position" not in rows[0] and "position_acc" not in rows[1]
    if position_words:  # how well the tokens spell their column and row
        assert 0 <= rows[1]["word_x_acc"] <= 1 and 0 <= rows[1]["word_y_acc"] <= 1
    else:
        assert "word_x_acc" not in rows[1]
    final = tmp_path / "run" / "final"
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(final, dtype=torch.float32)
    base = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_checkpoint, dtype=torch.float32)
    tower = dict(model.model.visual.named_parameters())
    assert any(not torch.equal(p, tower[n]) for n, p in base.model.visual.named_parameters())  # the tower changed
    lm = dict(model.model.language_model.named_parameters())
    assert all(torch.equal(p, lm[n]) for n, p in base.model.language_model.named_parameters())  # the LM did not
    encoder = VisionTextEncoder.from_pretrained(final)  # tokenizer and processor configs came along
    view = make_view("crop", np.random.default_rng(0))
    pv, grid = encoder.encode_images([view.image])
    feats = model.model.visual(pv, grid_thw=grid).pooler_output
    assert feats.shape == (view.labels.size, model.config.text_config.hidden_size)
