"""The familiarity reference of a checkpoint (core/familiarity.py): statistics of its vision features
over its training pictures, saved beside the weights. `train sft` and `train rl` write it when they
save the final model; this command computes it for a checkpoint that has none:

    python -m train familiarity --model assets/pixel-reasoner-tiny --data data/tinyzoom_mix [--split train]

The pictures are each record's first image (the picture the question is about, as the model first
saw it in training); a record whose first media is a video adds nothing.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from core.familiarity import FamiliarityError, load_reference, write_reference
from core.records import DataError, SFTRecord, load_sft_records

log = logging.getLogger(__name__)


def record_pictures(records: list[SFTRecord]) -> list[Path]:
    """The first image of each record's first user message, as a file path (each file once)."""
    out: list[Path] = []
    for rec in records:
        user = next((m for m in rec.messages if m["role"] == "user"), None)
        if user is None or isinstance(user["content"], str):
            continue
        first = next((p for p in user["content"] if p["type"] in ("image", "video")), None)
        if first is not None and first["type"] == "image" and isinstance(first["image"], str):
            out.append(rec.root / first["image"])
    return list(dict.fromkeys(out))


def save_for_run(model, encoder, pictures: list, final: Path, pixel_preset: str) -> None:
    """Write the reference of a run's final model; a failure is logged with the command that
    computes it later, never losing the saved weights."""
    try:
        path = write_reference(model, encoder, pictures, final, pixel_preset)
    except (RuntimeError, ValueError, OSError) as e:
        log.warning("no familiarity reference for %s (%s); compute it with `python -m train familiarity "
                    "--model %s --data <training data>`", final, e, final)
        return
    if path is not None:
        log.info("familiarity reference: %s", path)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train familiarity", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="the checkpoint folder the reference is written into")
    p.add_argument("--data", required=True, help="the data it was trained on: a dataset folder or a .jsonl file")
    p.add_argument("--split", default="train", help="the split of --data it was trained on (default: train)")
    p.add_argument("--pixels", default=None,
                   help="resolution preset of the first view (default: the checkpoint's studio.json, else 'train')")
    p.add_argument("--seed", type=int, default=0, help="seed of the held-out share and of the picture sample")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: a GPU when there is one)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from core.backends import BackendError
    from core.backends.hf import TransformersBackend
    from core.operations import resolve_pixel_preset

    try:
        pictures = record_pictures(load_sft_records(args.data, args.split))
        backend = TransformersBackend(args.model, device=args.device, cache_turns=False)
        preset = resolve_pixel_preset(args.pixels, backend.pixel_preset)
        path = write_reference(backend.model, backend.encoder, pictures, args.model, preset, args.seed)
    except (DataError, BackendError, FamiliarityError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if path is None:
        print(f"error: {args.data} ({args.split}) has {len(pictures)} pictures; at least 20 are needed", file=sys.stderr)
        return 2
    ref = load_reference(args.model)
    print(json.dumps({"reference": str(path), "pictures": ref.n_pictures, "threshold": round(ref.threshold, 3),
                      "pixel_preset": ref.pixel_preset}))
    return 0
