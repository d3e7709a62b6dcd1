"""Evaluation throughput of the shipped tiny model on CPU: items/s batched vs unbatched.

    python -m bench.eval_bench [--model assets/pixel-reasoner-tiny] [--items 10] [--batch 8] [--threads 2]
                               [--data data/tinyzoom]

Runs the real harness (core.evaluation.evaluate: media loading, the tool loop, scoring, items.jsonl
with fsync, report) on TinyZoom items — the test split when --data has one, else the app's example
gallery repeated — once with --batch 1 and once with --batch B, after one warm-up item, with the model
loaded once; each setting runs --repeats times, interleaved, and the fastest run counts. Prints wall seconds, items/s and accuracy for each (no session log; --db adds that cost).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

import torch

from core.backends.base import GenerationParams
from core.evaluation import evaluate, load_items, resolve_settings
from core.evaluation.data import EvalItem
from core.loop import LoopConfig


def example_items(n: int) -> list[EvalItem]:
    examples = json.loads((ROOT / "assets" / "examples" / "examples.json").read_text())
    items = []
    for i in range(n):
        e = examples[i % len(examples)]
        media = str(ROOT / "assets" / "examples" / e["media"])
        items.append(EvalItem(id=f"example-{i}", question=e["question"], truth=e["answer"],
                              kind="video" if media.endswith(".mp4") else "image", media=[media],
                              category=e["category"]))
    return items


def main() -> int:
    from core.backends import default_model
    from core.backends.hf import TransformersBackend

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--data", default=str(ROOT / "data" / "tinyzoom"))
    ap.add_argument("--items", type=int, default=10)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2, help="runs per setting, interleaved; the fastest counts")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    backend = TransformersBackend(args.model or default_model())
    load_s = time.perf_counter() - t0
    source = "examples"
    if (Path(args.data) / "test.jsonl").exists():
        items, source = load_items("tinyzoom", args.data, limit=args.items), f"{args.data}/test.jsonl"
    else:
        items = example_items(args.items)
    s = resolve_settings(backend.pixel_preset)
    config = LoopConfig(tools=True, pixels=s.pixels)
    params = GenerationParams(max_new_tokens=s.max_new_tokens, temperature=s.temperature)
    tmp = Path(tempfile.mkdtemp(prefix="eval_bench_"))
    try:
        evaluate(backend, items[:1], "tinyzoom", tmp / "warmup", config, params, progress=False)
        best: dict[int, tuple[float, object]] = {}
        for rep in range(args.repeats):  # interleaved, so a busy machine slows both settings alike
            for batch in (1, args.batch):
                t = time.perf_counter()
                result = evaluate(backend, items, "tinyzoom", tmp / f"b{batch}-{rep}", config, params, batch=batch,
                                  progress=False)
                wall = time.perf_counter() - t
                if batch not in best or wall < best[batch][0]:
                    best[batch] = (wall, result)
        rows = []
        for batch, (wall, result) in best.items():
            r = result.report
            records = [json.loads(x) for x in (result.out / "items.jsonl").read_text().splitlines()]
            rows.append({"batch": batch, "items": r["n"], "wall_s": round(wall, 2),
                         "items_per_s": round(r["n"] / wall, 3), "accuracy": r["accuracy"], "rapr": r["rapr"],
                         "mean_steps": round(sum(x["n_steps"] for x in records) / r["n"], 2),
                         "tokens_per_item": r["tokens_per_item"]})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps({"model": backend.model_id, "source": source, "threads": args.threads, "repeats": args.repeats,
                      "load_s": round(load_s, 2), "runs": rows,
                      "speedup": round(rows[1]["items_per_s"] / rows[0]["items_per_s"], 2)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
