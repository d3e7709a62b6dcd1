"""Can a checkpoint's language model learn to read a glyph through its vision tower? A short probe.

    python -m experiments.read_probe --model runs/vision_words/final [--steps 250] [--oracle]
    python -m experiments.read_probe --task position [--axis x|y] [--rope-theta 10] [--oracle [--row-words]]
    python -m experiments.read_probe --task shape

The tower is frozen; the LM is trained on the shortest conversation that needs reading: a crop after
a good zoom (train.views.crop_view), "What is written on the <colour> tag?", and "The tag reads X.
\\boxed{X}". Every 25 steps it prints the held-out loss and accuracy of the token that spells the
glyph (chance: 10 glyphs, ~2.3 nats). `--oracle` replaces the tower's output by exactly the word
embedding of each cell's class (train.vision_targets.class_word_ids): the best any tower could hand the LM.

`--task position` asks instead where the tag is in a zoom-needed overview (as the model sees it at
the tiny preset): "Which tenth of the width holds the <colour> tag?", answered with a digit; the
accuracy is printed exact and within one tenth (chance ~10% / ~28%). `--rope-theta` rebuilds the
LM's rotary embedding with another base before training: the box problem's suspect (see below).

Measured with it (250 steps x 16, 2 CPU cores, ~4 min): a tower trained on class labels alone
(configs/vision_tiny.json) reads 97.9% of crops through a linear head, yet its LM stays near chance
for 225 steps (3-14%) and reaches 34% at step 250; the same tower taught to hand the LM words
(configs/vision_words.json): 42% at step 50, 56% at 150, 64% at 250.
Position (`--task position --axis x`, 300 steps x 16, on the shipped weights of 2026-11-27): held-out loss
2.36 nats, 12% exact, 33% within one, i.e. chance; with `--rope-theta 10`: 2.15, 16%, 50%; with the
position-trained tower of experiments/configs/vision_position.json (200 steps): 2.46, 12%, 31%. With `--oracle`
(each tag cell's class word plus the digit word of its column's tenth): 48% exact and 83% within one at
step 50, 100% within one from step 75 (exact 55-62%: the digit is the cell's tenth, the answer the tag
centre's). A tower trained toward those targets (experiments/configs/vision_position_words.json): after 173 steps at
lr 3e-4, still chance (2.36, 12%, 31% at step 175; glyph probe 97% at step 100); after 448 steps at lr 5e-4,
48% exact and 94% within one at step 100, 50% / 89% at 150 (glyph probe 86% at step 100).
Rows (`--axis y`) from experiments/configs/vision_position_rows.json's first run (346 steps, word_y_acc 32%): 2.25 nats,
14% exact, 44% within one at step 100.

`--task shape` asks the zoom-optional question of a zoom-optional overview (train.views.shape_of): the large
shape's colour, or its side, answered in one word. On the shipped weights of 2026-11-27: 17% at step 0, 77%
at step 100 (1.03 nats at step 50, 0.38 at 100), although SFT left their colour answers blind to the picture.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]

from core.encoding import IGNORE_INDEX, VisionTextEncoder
from train.synth import scenes as S
from train.views import cls, crop_view, overview_of, shape_of
from train.vision_targets import cell_targets, cell_tenths, class_word_ids, position_tables

GLYPH_OF = {cls(f"glyph:{g}"): g for g in S.GLYPHS}


def glyph_of(labels: np.ndarray) -> str | None:
    found = [GLYPH_OF[c] for c in np.unique(labels) if c in GLYPH_OF]
    return found[0] if found else None


def conversation(image, question: str, answer: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": question}]},
            {"role": "assistant", "content": answer}]


def glyph_rows(n: int) -> tuple[list, list[list[dict]], list[str]]:
    """Crops after a good zoom (train.views.crop_view) and the glyph each shows."""
    rng = np.random.default_rng(0)
    views = [v for v in (crop_view(rng) for _ in range(n)) if glyph_of(v.labels)]
    glyphs = [glyph_of(v.labels) for v in views]
    convs = [conversation(v.image, "What is written on the tag?", f"The tag reads {g}.\n\n\\boxed{{{g}}}")
             for v, g in zip(views, glyphs)]
    return views, convs, glyphs


def position_rows(n: int, axis: str) -> tuple[list, list[list[dict]], list[str]]:
    """Zoom-needed overviews as the tiny preset shows them (train.views.overview_of: labelled per
    merged token, for --oracle), and the tenth of the width (or height) that holds the tag's centre."""
    from train.synth.tasks import make_item

    views, convs, digits = [], [], []
    for seed in range(n):
        item = make_item("zoom_needed", 10_000 + seed, f"pos-{seed}")
        x1, y1, x2, y2 = item.target
        centre = (x1 + x2) / 2 if axis == "x" else (y1 + y2) / 2
        digit = str(min(9, int(centre * 10)))
        view = overview_of(item)
        side = "width" if axis == "x" else "height"
        convs.append(conversation(view.image, f"Which tenth of the {side} holds the {item.subject}?",
                                  f"It is in tenth {digit}.\n\n\\boxed{{{digit}}}"))
        views.append(view)
        digits.append(digit)
    return views, convs, digits


def shape_rows(n: int) -> tuple[list, list[list[dict]], list[str]]:
    """Zoom-optional overviews (train.views.shape_of) with their own question: the large shape's
    colour or side, a one-token answer that the SFT traces give without a tool."""
    from train.synth.tasks import make_item

    items = [make_item("zoom_optional", 20_000 + seed, f"shape-{seed}") for seed in range(n)]
    views = [shape_of(item) for item in items]
    convs = [conversation(v.image, item.question, f"It is {item.answer}.\n\n\\boxed{{{item.answer}}}")
             for v, item in zip(views, items)]
    return views, convs, [item.answer for item in items]


def load_model(path: str, rope_theta: float | None):
    from transformers import AutoConfig, Qwen2_5_VLForConditionalGeneration

    config = AutoConfig.from_pretrained(path)
    if rope_theta:
        config.text_config.rope_parameters["rope_theta"] = rope_theta
    return Qwen2_5_VLForConditionalGeneration.from_pretrained(path, config=config, dtype=torch.float32)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="runs/vision_words/final")
    ap.add_argument("--steps", type=int, default=250)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--views", type=int, default=400, help="generated crops (the first 64 held out)")
    ap.add_argument("--oracle", action="store_true", help="feed each cell's class word instead of the tower "
                    "(position: plus, on the tag's cells, the digit word of their tenth)")
    ap.add_argument("--task", choices=("glyph", "position", "shape"), default="glyph")
    ap.add_argument("--axis", choices=("x", "y"), default="x", help="position: tenth of the width or height")
    ap.add_argument("--row-words", action="store_true", help="with --oracle: the tag's cells carry their column "
                    "as a digit word and their row as a row word (train.vision_targets.ROW_WORDS), as a row_words tower hands them")
    ap.add_argument("--rope-theta", type=float, default=None, help="rebuild the LM's rotary base before training")
    args = ap.parse_args()

    torch.manual_seed(0)
    model = load_model(args.model, args.rope_theta)
    encoder = VisionTextEncoder.from_pretrained(args.model)
    embed = model.get_input_embeddings()
    words = embed.weight.detach()[class_word_ids(encoder.tokenizer, encoder.image_token_id)]
    tables = position_tables(embed.weight.detach(), encoder.tokenizer, rows=args.row_words)
    # the oracle's position words: column digits and row words (a row_words tower's scheme), or the asked tenth as a digit
    axes = tables if args.row_words else {0 if args.axis == "x" else 1: tables[0]}
    views, convs, answers = {"glyph": lambda: glyph_rows(args.views), "shape": lambda: shape_rows(args.views),
                             "position": lambda: position_rows(args.views, args.axis)}[args.task]()
    encoded = [encoder.encode(c) for c in convs]
    # the token that spells the answer: the last piece of " X" (digits come as " " + "7")
    answer_ids = [encoder.tokenizer(" " + a, add_special_tokens=False)["input_ids"][-1] for a in answers]
    held_out, train_rows = list(range(64)), list(range(64, len(views)))
    for p in model.model.visual.parameters():
        p.requires_grad_(False)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr, weight_decay=0.0)

    def run(rows: list[int]):
        batch = encoder.collate([encoded[i] for i in rows])
        labels = batch.pop("labels")
        if args.oracle:
            cells = torch.from_numpy(np.concatenate([views[i].labels.reshape(-1) for i in rows]))
            inputs = embed(batch["input_ids"]).detach().clone()
            if args.task != "glyph":  # positioned cells also carry their tenths as words
                tenths = torch.from_numpy(np.concatenate([cell_tenths(*views[i].labels.shape) for i in rows]))
                cell_words = cell_targets(words, cells, tenths, axes)
            else:
                cell_words = words[cells]
            inputs[batch["input_ids"] == encoder.image_token_id] = cell_words
            batch["inputs_embeds"] = inputs
            del batch["pixel_values"]
        logits = model(**batch).logits[:, :-1]
        target = labels[:, 1:]
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target, ignore_index=IGNORE_INDEX,
                                                reduction="none")
        at = [int((target[r] == answer_ids[i]).nonzero()[0]) for r, i in enumerate(rows)]
        answer_nll = torch.stack([nll[r, k] for r, k in enumerate(at)])
        guess = [encoder.tokenizer.decode([int(logits[r, k].argmax())]).strip() for r, k in enumerate(at)]
        hits = [float(g == answers[i]) for g, i in zip(guess, rows)]
        near = [float(g.isdigit() and abs(int(g) - int(answers[i])) <= 1) for g, i in zip(guess, rows)]
        return nll[target != IGNORE_INDEX].mean(), answer_nll.mean().item(), float(np.mean(hits)), float(np.mean(near))

    theta = model.config.text_config.rope_parameters["rope_theta"]
    print(f"{args.model}{' (oracle words)' if args.oracle else ''}, task {args.task}"
          f"{' ' + args.axis if args.task == 'position' else ''}, LM rope_theta {theta:g}: {len(train_rows)} "
          f"training rows, 64 held out; answer token loss (nats) and accuracy")
    t0 = time.time()
    for step in range(args.steps + 1):
        if step % 25 == 0:
            model.eval()
            with torch.no_grad():
                _, loss, acc, near = run(held_out)
            model.train()
            within = f"  within one {near:.0%}" if args.task == "position" else ""
            print(f"step {step:4d}  held-out loss {loss:.2f}  accuracy {acc:.0%}{within}  ({time.time() - t0:.0f} s)",
                  flush=True)
        if step == args.steps:
            break
        rows = list(np.random.default_rng(step).choice(train_rows, args.batch, replace=False))
        loss, _, _, _ = run(rows)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
