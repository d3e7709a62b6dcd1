"""Can a checkpoint's language model learn to read a glyph through its vision tower? A short probe.

    python bench/read_probe.py --model runs/vision_words/final [--steps 250] [--oracle]

The tower is frozen; the LM is trained on the shortest conversation that needs reading: a crop after
a good zoom (train.vision.crop_view), "What is written on the <colour> tag?", and "The tag reads X.
\\boxed{X}". Every 25 steps it prints the held-out loss and accuracy of the token that spells the
glyph (chance: 10 glyphs, ~2.3 nats). `--oracle` replaces the tower's output by exactly the word
embedding of each cell's class (train.vision.class_word_ids): the best any tower could hand the LM.

Measured with it (250 steps x 16, 2 CPU cores, ~4 min): a tower trained on class labels alone
(configs/vision_tiny.json) reads 97.9% of crops through a linear head, yet its LM stays near chance
for 225 steps (3-14%) and reaches 34% at step 250; the same tower taught to hand the LM words
(configs/vision_words.json): 42% at step 50, 56% at 150, 64% at 250.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.encoding import IGNORE_INDEX, VisionTextEncoder  # noqa: E402
from train.synth import scenes as S  # noqa: E402
from train.vision import class_word_ids, cls, crop_view  # noqa: E402

GLYPH_OF = {cls(f"glyph:{g}"): g for g in S.GLYPHS}


def glyph_of(labels: np.ndarray) -> str | None:
    found = [GLYPH_OF[c] for c in np.unique(labels) if c in GLYPH_OF]
    return found[0] if found else None


def conversation(image, glyph: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image", "image": image},
                                         {"type": "text", "text": "What is written on the tag?"}]},
            {"role": "assistant", "content": f"The tag reads {glyph}.\n\n\\boxed{{{glyph}}}"}]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="runs/vision_words/final")
    ap.add_argument("--steps", type=int, default=250)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--views", type=int, default=400, help="generated crops (the first 64 held out)")
    ap.add_argument("--oracle", action="store_true", help="feed each cell's class word instead of the tower")
    args = ap.parse_args()
    from transformers import Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(0)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(args.model, dtype=torch.float32)
    encoder = VisionTextEncoder.from_pretrained(args.model)
    embed = model.get_input_embeddings()
    words = embed.weight.detach()[class_word_ids(encoder.tokenizer, encoder.image_token_id)]
    rng = np.random.default_rng(0)
    views = [v for v in (crop_view(rng) for _ in range(args.views)) if glyph_of(v.labels)]
    glyphs = [glyph_of(v.labels) for v in views]
    encoded = [encoder.encode(conversation(v.image, g)) for v, g in zip(views, glyphs)]
    # the token that spells the glyph: the last piece of " X" (digits come as " " + "7")
    answer_ids = [encoder.tokenizer(" " + g, add_special_tokens=False)["input_ids"][-1] for g in glyphs]
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
            inputs[batch["input_ids"] == encoder.image_token_id] = words[cells]
            batch["inputs_embeds"] = inputs
            del batch["pixel_values"]
        logits = model(**batch).logits[:, :-1]
        target = labels[:, 1:]
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target, ignore_index=IGNORE_INDEX,
                                                reduction="none")
        at = [int((target[r] == answer_ids[i]).nonzero()[0]) for r, i in enumerate(rows)]
        answer_nll = torch.stack([nll[r, k] for r, k in enumerate(at)])
        hits = [float(logits[r, k].argmax() == target[r, k]) for r, k in enumerate(at)]
        return nll[target != IGNORE_INDEX].mean(), answer_nll.mean().item(), float(np.mean(hits))

    print(f"{args.model}{' (oracle words)' if args.oracle else ''}: {len(train_rows)} training crops, "
          f"64 held out; glyph token loss (nats) and accuracy")
    t0 = time.time()
    for step in range(args.steps + 1):
        if step % 25 == 0:
            model.eval()
            with torch.no_grad():
                _, loss, acc = run(held_out)
            model.train()
            print(f"step {step:4d}  held-out loss {loss:.2f}  accuracy {acc:.0%}  ({time.time() - t0:.0f} s)", flush=True)
        if step == args.steps:
            break
        rows = list(np.random.default_rng(step).choice(train_rows, args.batch, replace=False))
        loss, _, _ = run(rows)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
