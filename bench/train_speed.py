"""SFT speed on this machine: today's path beside the fast one, on the same data with the same seed.

    python -m bench.train_speed                 # 16 steps of each (about 3 minutes on 2 cores)
    python -m bench.train_speed --steps 40 --repeats 2

Both run `python -m train sft` with the robust recipe (configs/sft_tiny_robust.json: batch 8, grounded
weight 5, the embedded model, its tower trained). The baseline is the path as it was, with the
recipe's former CPU settings (`fast=false bf16=false num_workers=1 processes=1`); the fast path is the
default (`fast=true`, bf16 autocast where the CPU has native bf16, the batch split over one process
per core: train/processes.py). Throughput counts
conversations per second over every step but the first (start-up); the loss gap is the relative
difference of the two runs' mean loss over the same steps. The runs alternate when repeated, so load
from other work falls on both. The last line is the figure:

    train speed: baseline X conv/s, fast Y conv/s, speedup Z.Zx, loss gap D%
"""
from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from core.runtime import configure_threads

configure_threads()  # before torch loads

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "configs" / "sft_tiny_robust.json"
MODES = {"baseline": {"fast": False, "bf16": False, "num_workers": 1, "processes": 1}, "fast": {"num_workers": 1}}


def bench_data(records: int, out: Path) -> Path:
    """A small slice of the robust recipe's data (3/4 varied, close-ups), made once and kept."""
    from train.synth.build import BuildConfig, build

    folder = out / f"train_speed-{records}"
    if not (folder / "train.jsonl").exists():
        build(BuildConfig(out=str(folder), train=records - records // 5, closeups=records // 5, validation=0, test=0,
                          seed=21, variety="train", variety_share=0.75, workers=2, progress=False))
    return folder


def run(mode: str, data: Path, steps: int, batch: int, out: Path) -> dict:
    """One short `python -m train sft` run; its throughput (after the first step) and its per-step losses."""
    overrides = {"data": str(data), "out": str(out), "final_dir": str(out / "final"), "max_steps": steps,
                 "max_seconds": None, "batch_size": batch, "logging_steps": 1, "save_steps": 10**6,
                 "save_minutes": None, "report_to": [], "disable_tqdm": True, **MODES[mode]}
    argv = [sys.executable, "-m", "train", "sft", "--config", str(RECIPE),
            *(f"{k}={json.dumps(v)}" for k, v in overrides.items())]
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"error: the {mode} run failed:\n{proc.stderr[-3000:]}")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "loss" in r and r["step"] <= steps]
    seconds = rows[-1]["time"] - rows[0]["time"]
    return {"conv_per_s": (len(rows) - 1) * batch / seconds, "losses": [r["loss"] for r in rows]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.train_speed", description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=16, help="optimiser steps per run (the first is not timed)")
    ap.add_argument("--batch", type=int, default=8, help="conversations per step (the recipe's CPU batch)")
    ap.add_argument("--repeats", type=int, default=1, help="runs of each path, alternating; medians are reported")
    ap.add_argument("--records", type=int, default=160, help="records of the generated bench data")
    ap.add_argument("--data", default=None, help="a TinyZoom-format folder to use instead of generated data")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    data = Path(args.data) if args.data else bench_data(args.records, ROOT / "data" / "bench")
    results: dict[str, list[dict]] = {m: [] for m in MODES}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for mode in MODES:
                res = run(mode, data, args.steps, args.batch, Path(tmp) / f"{mode}-{r}")
                results[mode].append(res)
                print(f"{mode:8s} run {r + 1}: {res['conv_per_s']:.2f} conv/s, mean loss "
                      f"{statistics.mean(res['losses']):.4f}", flush=True)
    base = statistics.median(x["conv_per_s"] for x in results["baseline"])
    fast = statistics.median(x["conv_per_s"] for x in results["fast"])
    mean_loss = {m: statistics.mean(loss for x in results[m] for loss in x["losses"]) for m in MODES}
    gap = abs(mean_loss["fast"] - mean_loss["baseline"]) / mean_loss["baseline"]
    print(f"train speed: baseline {base:.2f} conv/s, fast {fast:.2f} conv/s, speedup {fast / base:.1f}x, "
          f"loss gap {100 * gap:.1f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
