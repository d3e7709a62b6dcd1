"""Where does a model's SFT loss sit? Mean loss per kind of trained token, with the record's own
images and with another record's images swapped in.

    python -m experiments.token_loss --model assets/pixel-reasoner-tiny --data data/tinyzoom_train [--n 48]

Token kinds (train.grounding.token_kinds): `box_x` and `box_y` (the tenths digit of a bbox_2d's x1, x2 and
of its y1, y2: where the box is), `box` (its other digits), `frames` (frame numbers), `answer` (the first
token that spells the ground truth, where the model reads it out), `template` (every other trained token).
Chance for one of the 10 glyphs is ln 10 = 2.30 nats; for a coordinate digit about the same. If swapping the images barely moves `box` and `answer`, the
language model is not reading the pictures. The records are the first --n of each category asked.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

from core.encoding import IGNORE_INDEX, VisionTextEncoder
from core.operations import PixelLimits
from core.records import load_sft_records, record_answer, record_to_messages
from train.grounding import token_kinds


PIXELS = ("pixel_values", "pixel_values_videos")


def same_shapes(a, b) -> bool:
    """Whether b's pixels (images and video) can stand in for a's."""
    return all((getattr(a, k) is None) == (getattr(b, k) is None)
               and (getattr(a, k) is None or getattr(a, k).shape == getattr(b, k).shape) for k in PIXELS)


def losses_by_kind(model, encoder, encoded, answer: str | None, swap=None) -> dict[str, list[float]]:
    batch = encoder.collate([encoded])
    if swap is not None:  # another record's pixels (its images and its video), same shapes
        batch.update({k: getattr(swap, k) for k in PIXELS if getattr(swap, k) is not None})
    labels = batch.pop("labels")
    with torch.no_grad():
        logits = model(**batch).logits[0, :-1]
    target = labels[0, 1:]
    keep = target != IGNORE_INDEX
    nll = torch.nn.functional.cross_entropy(logits[keep], target[keep], reduction="none")
    pieces = [encoder.tokenizer.decode([t]) for t in target[keep].tolist()]
    out: dict[str, list[float]] = {}
    for kind, value in zip(token_kinds(pieces, answer), nll.tolist()):
        out.setdefault(kind, []).append(value)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(ROOT / "assets" / "pixel-reasoner-tiny"))
    ap.add_argument("--encoder", help="folder with the tokenizer and processor configs (default --model; "
                    "a trainer's checkpoint-N has no processor config: name the run's start)")
    ap.add_argument("--data", default="data/tinyzoom_train")
    ap.add_argument("--split", default="train")
    ap.add_argument("--categories", default="zoom_needed,zoom_optional,video")
    ap.add_argument("--n", type=int, default=32)
    args = ap.parse_args()
    from transformers import Qwen2_5_VLForConditionalGeneration

    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(args.model, dtype=torch.float32).eval()
    encoder = VisionTextEncoder.from_pretrained(args.encoder or args.model)
    limits = PixelLimits.preset("tiny")
    records = load_sft_records(args.data, args.split)
    print(f"model {args.model}; mean nats per trained token (n tokens), own images -> swapped images")
    for category in args.categories.split(","):
        chosen = [r for r in records if r.id.endswith(category)][: args.n]
        encoded = [encoder.encode(record_to_messages(r, limits), train_turns=r.train_turns) for r in chosen]
        own: dict[str, list[float]] = {}
        swapped: dict[str, list[float]] = {}
        for i, (rec, enc) in enumerate(zip(chosen, encoded)):
            answer = record_answer(rec)
            for kind, values in losses_by_kind(model, encoder, enc, answer).items():
                own.setdefault(kind, []).extend(values)
            other = next((e for e in encoded[i + 1:] + encoded[:i] if same_shapes(enc, e)), None)
            if other is not None:
                for kind, values in losses_by_kind(model, encoder, enc, answer, swap=other).items():
                    swapped.setdefault(kind, []).extend(values)
        cells = [f"{k} {sum(v) / len(v):.2f} ({len(v)}) -> "
                 + (f"{sum(swapped[k]) / len(swapped[k]):.2f}" if swapped.get(k) else "n/a")
                 for k, v in sorted(own.items())]
        print(f"{category:14s} {len(chosen)} records: " + "; ".join(cells), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
