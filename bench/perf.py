"""The performance targets, measured in one command, printed as the table in docs/performance.md.

    python -m bench.perf            # the full table (tens of minutes on 2 CPU cores)
    python -m bench.perf --short    # fewer repeats and items, for a quick look
    python -m bench.perf --only crop,logging

Everything runs the embedded checkpoint (assets/pixel-reasoner-tiny) and real files: a 4000x3000
photo for the crop, 720p H.264 videos with x264's default GOP and a 2 s GOP for frame selection,
a SQLite log getting a new crop image every step, TinyZoom items for evaluation, `python app.py`
in a subprocess for the first Ask. The batching figure is the median of interleaved runs.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from core.runtime import configure_threads

configure_threads()  # before torch loads (perf_model imports it)

from bench import perf_io, perf_model  # noqa: E402

PARTS = ("batching", "eval_threads", "crop", "frames", "overhead", "logging", "first_ask")


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import torch
    import transformers

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{cpu}, {os.cpu_count()} cores visible, torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"transformers {transformers.__version__}, Python {platform.python_version()}; "
            f"load average {load:.1f} at start")


def row(target: str, measured: str, met: bool | None) -> str:
    return f"| {target} | {measured} | {'yes' if met else 'no' if met is not None else '-'} |"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--short", action="store_true", help="fewer repeats and items (a quick look, not the record)")
    ap.add_argument("--only", help=f"comma-separated parts of {','.join(PARTS)}")
    ap.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "pixel-reasoner-perf"),
                    help="generated videos and TinyZoom items, kept between runs")
    ap.add_argument("--json", help="also write the raw figures to this file")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    parts = args.only.split(",") if args.only else PARTS
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="perf-"))
    short = args.short
    figures: dict = {"machine": machine(), "short": short}
    rows = []
    started = time.time()
    backend = None
    if {"batching", "overhead", "crop"} & set(parts):
        from core.backends import default_model
        from core.backends.hf import TransformersBackend

        backend = TransformersBackend(default_model())
    if "batching" in parts:
        f = figures["batching"] = perf_model.bench_batching(backend, 8, 2 if short else 5)
        r = f["traj_per_s"]
        rows.append(row(f"a group of {f['n']} two-turn conversations through run_batch >= 4x one at a time",
                        f"{f['speedup']:.1f}x ({r['group_cached']:.2f} traj/s vs {r['one_plain']:.2f}); same "
                        f"engine one at a time {r['one_cached']:.2f} ({f['speedup_same_engine']:.1f}x), plain batched "
                        f"generate {r['group_plain']:.2f}; {f['mean_steps']:.2f} steps/conversation, median of "
                        f"{f['runs']} interleaved runs", f["speedup"] >= 4))
    if "eval_threads" in parts:
        f = figures["eval_threads"] = perf_model.bench_eval_threads(cache, 8 if short else 32, 1 if short else 6)
        w = f["wall_s"]
        rows.append(row(f"eval of {f['items']} items, default environment no slower than OMP_WAIT_POLICY=PASSIVE",
                        f"default {w['default']:.1f} s, PASSIVE {w['PASSIVE']:.1f} s, ACTIVE {w['ACTIVE']:.1f} s "
                        f"(median of {f['runs']})", w["default"] <= w["PASSIVE"] * 1.05))
    if "crop" in parts:
        f = figures["crop"] = perf_io.bench_crop(5 if short else 21)
        turn = figures["model_turn"] = perf_model.bench_model_turn(backend, 5 if short else 15)
        for name, v in f.items():
            rows.append(row(f"exact crop of a 4000x3000 photo to the model's view, {name}, beside one turn "
                            "of the embedded model",
                            f"{v['ms']:.1f} ms = {v['ms'] / turn['turn_ms'] * 100:.1f}% of a turn "
                            f"({turn['turn_ms']:.0f} ms); box {v['box']} of {v['source']} -> {v['view']}; PIL's crop + resize "
                            f"in one thread {v['pil_ms']:.1f} ms, same bytes", None))
    if "frames" in parts:
        f = figures["frames"] = perf_io.bench_frames(cache, 20 if short else 60, 3 if short else 5)
        for v in f:
            rows.append(row(f"8 frames of a {v['video']}, vs PyAV sequential",
                            f"Video.frames {v['video_ms']:.0f} ms, a PyAV seek per frame {v['seek_ms']:.0f} ms, sequential "
                            f"{v['sequential_ms']:.0f} ms ({v['sequential_ms'] / v['video_ms']:.1f}x); readers agree: "
                            f"{v['readers_agree']}", None))
    if "overhead" in parts:
        f = figures["overhead"] = perf_model.bench_overhead(backend, 3 if short else 7)
        rows.append(row("loop overhead <= 3% of a trajectory, outside model.generate (streaming path)",
                        f"{f['median_share'] * 100:.1f}% ({f['mean_steps']:.1f} steps, median of {f['runs']})",
                        f["median_share"] <= 0.03))
    if "logging" in parts:
        f = figures["logging"] = perf_io.bench_logging(work, 500 if short else 3000)
        rows.append(row("logging >= 2,000 steps/s, one transaction per step, a new crop image each step",
                        f"{f['step_write_per_s']:,.0f} steps/s in Recorder.step; {f['with_store_per_s']:,.0f}/s counting "
                        f"the PNG + thumbnail the store makes before ({f['steps']} steps)",
                        f["step_write_per_s"] >= 2000))
    if "first_ask" in parts:
        f = figures["first_ask"] = perf_model.bench_first_ask(work)
        rows.append(row("first Ask within 1.5x of a warm Ask (the model loads while the page builds; served once ready)",
                        f"first {f['first_s']:.2f} s, warm {f['warm_s']:.2f} s ({f['first_s'] / f['warm_s']:.2f}x); "
                        f"page up after {f['page_ready_s']:.1f} s", f["first_s"] <= 1.5 * f["warm_s"]))
    figures["seconds"] = time.time() - started
    print(f"Machine: {figures['machine']}" + (" (short run)" if short else ""))
    print()
    print("| target | measured | met |")
    print("| --- | --- | --- |")
    print("\n".join(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
