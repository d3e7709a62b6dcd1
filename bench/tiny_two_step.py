"""Wall time of one two-step answer (zoom, then answer) of the shipped tiny model on CPU.

    python -m bench.tiny_two_step [--model assets/pixel-reasoner-tiny] [--repeats 5] [--threads 2]

Runs the real loop (core.loop.run_to_end + TransformersBackend) on the zoom-needed examples of
assets/examples, after one warm-up episode, and prints the median wall seconds of episodes that
took exactly one operation then answered (the model card's "two-step answer"), with the
generation/tool split. The model is loaded once and its load time is reported separately.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

import torch

from core.backends.base import GenerationParams
from core.loop import Task, run_to_end
from core.media import load_image
from train.synth.traces import loop_config


def main() -> int:
    from core.backends import default_model
    from core.backends.hf import TransformersBackend

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    backend = TransformersBackend(args.model or default_model())
    load_s = time.perf_counter() - t0
    examples = json.loads((ROOT / "assets" / "examples" / "examples.json").read_text())
    tasks = [Task(e["question"], image=load_image(ROOT / "assets" / "examples" / e["media"]), answer=e["answer"])
             for e in examples if e["category"] == "zoom_needed"]
    cfg, params = loop_config(True, backend.pixel_preset or "tiny"), GenerationParams(max_new_tokens=96)
    run_to_end(backend, tasks[0], config=cfg, params=params)  # warm-up
    walls, gens, tools, answers = [], [], [], []
    for i in range(args.repeats):
        task = tasks[i % len(tasks)]
        t = time.perf_counter()
        traj = run_to_end(backend, task, config=cfg, params=params)
        wall = time.perf_counter() - t
        if len(traj.steps) == 2 and traj.n_ops == 1:
            walls.append(wall)
            gens.append(sum(s.gen_seconds for s in traj.steps))
            tools.append(sum(s.tool_seconds for s in traj.steps))
        answers.append((traj.answer, task.answer, len(traj.steps), traj.n_ops))
    result = {"model": backend.model_id, "threads": args.threads, "load_seconds": round(load_s, 2),
              "two_step_episodes": len(walls), "of": args.repeats,
              "median_wall_seconds": round(statistics.median(walls), 3) if walls else None,
              "max_wall_seconds": round(max(walls), 3) if walls else None,
              "median_generation_seconds": round(statistics.median(gens), 3) if gens else None,
              "median_tool_seconds": round(statistics.median(tools), 4) if tools else None,
              "answers (got, truth, steps, ops)": answers}
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
