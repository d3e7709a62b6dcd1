"""How well a checkpoint's familiarity reference tells its own pictures from real photos.

    python -m bench.familiarity_bench [--model assets/pixel-reasoner-tiny] [--data data/tinyzoom] [--split test]

The own pictures are the image items of a TinyZoom split (the originals evaluation runs on); the
real photos are scikit-image's sample pictures (`skimage.data`, shipped in its wheel, never trained
on). Prints, as JSON: AUROC (distance as the score, photos the positives), the false-alarm rate on
the own split (share marked unfamiliar), how many of the ten PHOTOS are marked unfamiliar, and each
photo's score (distance over the threshold; > 1 is unfamiliar).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

PHOTOS = ("coffee", "chelsea", "coins", "rocket", "text", "page", "hubble_deep_field", "astronaut", "camera",
          "immunohistochemistry")
"""Ten of scikit-image's sample pictures: a cup of coffee, a cat, coins, a rocket, handwritten text, a
page, the Hubble deep field, an astronaut, a cameraman, a stained tissue."""
MORE_PHOTOS = ("horse", "moon", "retina", "brick", "grass", "gravel", "clock", "colorwheel", "cell", "logo")


def sample_photo(name: str) -> Image.Image:
    """A scikit-image sample picture as an RGB PIL image."""
    import skimage.data

    a = np.asarray(getattr(skimage.data, name)())
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    elif a.dtype != np.uint8:
        a = (255 * (a - a.min()) / max(float(np.ptp(a)), 1e-9)).astype(np.uint8)
    return Image.fromarray(a).convert("RGB")


def auroc(positives: list[float], negatives: list[float]) -> float:
    """P(a positive scores above a negative), ties counted half (the Mann-Whitney U statistic)."""
    pos, neg = np.asarray(positives, float), np.asarray(negatives, float)
    above = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(above / (len(pos) * len(neg)))


def own_pictures(data: str, split: str) -> list[str]:
    from core.evaluation.data import load_tinyzoom

    return [item.media[0] for item in load_tinyzoom(data, split) if item.kind == "image"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(Path(__file__).resolve().parents[1] / "assets" / "pixel-reasoner-tiny"))
    ap.add_argument("--data", default="data/tinyzoom")
    ap.add_argument("--split", default="test")
    args = ap.parse_args(argv)
    from core.backends.hf import TransformersBackend

    backend = TransformersBackend(args.model, device="cpu", cache_turns=False)
    if backend.reference is None:
        raise SystemExit(f"{args.model} ships no familiarity reference (python -m train familiarity ...)")
    own = [score for _, score in backend.familiarity(own_pictures(args.data, args.split))]
    ten = {name: score for name, (_, score) in zip(PHOTOS, backend.familiarity([sample_photo(n) for n in PHOTOS]))}
    more = [score for _, score in backend.familiarity([sample_photo(n) for n in MORE_PHOTOS])]
    photos = list(ten.values()) + more
    print(json.dumps({
        "own_pictures": len(own), "photos": len(photos),
        "auroc": round(auroc(photos, own), 4),
        "false_alarm_rate": round(float(np.mean(np.asarray(own) > 1.0)), 4),
        "ten_photos_unfamiliar": sum(s > 1.0 for s in ten.values()),
        "all_photos_unfamiliar": sum(s > 1.0 for s in photos),
        "own_score_quantiles": {q: round(float(np.quantile(own, q)), 3) for q in (0.5, 0.95, 0.99, 1.0)},
        "ten_photo_scores": {k: round(v, 2) for k, v in ten.items()},
    }, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
