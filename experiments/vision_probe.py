"""Can the tiny model's vision tower learn to read the zoom-needed glyphs? A diagnostic for the
embedded model, whose SFT runs learned the protocol but read glyphs at chance.

    python -m experiments.vision_probe [--model assets/pixel-reasoner-tiny] [--train 1200] [--steps 300]

The inputs are what the model sees after a good crop: a zoom-needed scene cropped around the tag
with the tool's own crop (noisy box, release padding), sized by the `tiny` preset. Labels are the
10 glyphs. Three probes, each a Qwen2.5-VL vision tower + mean pool + linear head, trained with
Adam on CPU and scored on held-out crops:
  fresh   - a newly initialised tower with the shipped model's config, trained end to end;
  shipped - the shipped model's tower, trained end to end;
  frozen  - the shipped model's tower frozen, only the linear head trained (what it already knows);
  cnn     - a 4-layer convolutional net on the same crops (224x224): is the task learnable at this size?
Prints test accuracy every --eval-every steps (chance is 10%).
"""
from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]

from core.encoding import VisionTextEncoder
from core.operations import PIXEL_PRESETS, crop, resize_for_model
from train.synth.scenes import GLYPHS
from train.synth.tasks import make_item
from train.synth.traces import noisy_box


def crops(n: int, seed: int) -> tuple[list, list[int]]:
    limits = PIXEL_PRESETS["tiny"]
    images, labels = [], []
    for i in range(n):
        item = make_item("zoom_needed", seed * 1_000_003 + i, f"probe-{i}")
        rng = np.random.default_rng(seed + i)
        view, _ = crop(item.image, noisy_box(rng, item.target))
        images.append(resize_for_model(view, limits.crop_min, limits.crop_max))
        labels.append(GLYPHS.index(item.answer))
    return images, labels


class Probe(torch.nn.Module):
    def __init__(self, visual, out_dim: int, n_classes: int = len(GLYPHS)) -> None:
        super().__init__()
        self.visual, self.head = visual, torch.nn.Linear(out_dim, n_classes)

    def forward(self, pixel_values, grid_thw):
        out = self.visual(pixel_values, grid_thw=grid_thw)
        feats = out.pooler_output if hasattr(out, "pooler_output") and out.pooler_output is not None else out
        if not torch.is_tensor(feats):
            feats = feats[0]
        sizes = (grid_thw.prod(-1) // 4).tolist()  # merged tokens per image (2x2 merge)
        return self.head(torch.stack([f.mean(0) for f in torch.split(feats, sizes)]))


class SmallCNN(torch.nn.Module):
    """The baseline: takes the same encoder inputs, ignores the ViT patching, sees plain pixels."""

    def __init__(self, n_classes: int = len(GLYPHS)) -> None:
        super().__init__()
        layers, c = [], 3
        for width in (32, 64, 96, 128):
            layers += [torch.nn.Conv2d(c, width, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2)]
            c = width
        self.net = torch.nn.Sequential(*layers, torch.nn.AdaptiveMaxPool2d(1), torch.nn.Flatten(),
                                       torch.nn.Linear(c, n_classes))

    def forward(self, images, _grid=None):
        return self.net(images)


def pixels(images) -> torch.Tensor:
    arr = np.stack([np.asarray(im.convert("RGB").resize((224, 224))) for im in images]).astype(np.float32) / 255.0
    return torch.from_numpy(arr).permute(0, 3, 1, 2) - 0.5


def batches(encoder, images, labels, bs, rng):
    idx = rng.permutation(len(images))
    for i in range(0, len(idx) - bs + 1, bs):
        sel = idx[i:i + bs]
        chosen = [images[j] for j in sel]
        pv, grid = encoder.encode_images(chosen) if encoder is not None else (pixels(chosen), None)
        yield pv, grid, torch.tensor([labels[j] for j in sel])


def accuracy(probe, encoder, images, labels, bs=64) -> float:
    probe.eval()
    right = 0
    with torch.no_grad():
        for i in range(0, len(images), bs):
            chunk = images[i:i + bs]
            pv, grid = encoder.encode_images(chunk) if encoder is not None else (pixels(chunk), None)
            right += (probe(pv, grid).argmax(-1) == torch.tensor(labels[i:i + bs])).sum().item()
    probe.train()
    return right / len(images)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(ROOT / "assets" / "pixel-reasoner-tiny"))
    ap.add_argument("--train", type=int, default=1200)
    ap.add_argument("--test", type=int, default=200)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--probes", default="cnn,fresh,shipped,frozen")
    args = ap.parse_args()
    from transformers import Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(0)
    encoder = VisionTextEncoder.from_pretrained(args.model)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(args.model, dtype=torch.float32)
    t0 = time.perf_counter()
    train_x, train_y = crops(args.train, seed=1)
    test_x, test_y = crops(args.test, seed=2)
    print(f"data: {args.train} train / {args.test} test crops, sizes like {train_x[0].size}, "
          f"{time.perf_counter() - t0:.0f} s", flush=True)
    out_dim = model.config.vision_config.out_hidden_size
    for name in args.probes.split(","):
        enc = None if name == "cnn" else encoder
        if name == "cnn":
            probe = SmallCNN()
        else:
            visual = copy.deepcopy(model.model.visual)
            if name == "fresh":
                visual = type(visual)._from_config(model.config.vision_config)
            probe = Probe(visual, out_dim)
        if name == "frozen":
            probe.visual.requires_grad_(False)
        opt = torch.optim.AdamW([p for p in probe.parameters() if p.requires_grad], lr=args.lr)
        rng, step, t0 = np.random.default_rng(0), 0, time.perf_counter()
        curve = [f"0:{accuracy(probe, enc, test_x, test_y):.2f}"]
        while step < args.steps:
            for pv, grid, y in batches(enc, train_x, train_y, args.batch, rng):
                loss = torch.nn.functional.cross_entropy(probe(pv, grid), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                step += 1
                if step % args.eval_every == 0:
                    curve.append(f"{step}:{accuracy(probe, enc, test_x, test_y):.2f}")
                if step >= args.steps:
                    break
        print(f"{name:8s} lr {args.lr:g}: test accuracy by step {' '.join(curve)}  "
              f"({time.perf_counter() - t0:.0f} s; chance 0.10)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
