"""Measure a model on the TinyZoom test split with the real tool loop (what the model card quotes).

    python -m train tinyzoom-eval --data data/tinyzoom [--model assets/pixel-reasoner-tiny] [--out DIR]
                                  [--limit N] [--no-tools] [--categories zoom_needed,video]

Each test record's meta.task names the original media (full resolution); the model sees it through
core.loop exactly as in the app (resolution preset from the checkpoint's studio.json). Reported per
category: accuracy, share answered without any tool call, and over all tool calls the share that
parsed and executed without an error turn. `python -m core eval --bench tinyzoom` (helper "eval")
reads the same records.
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from collections import defaultdict
from pathlib import Path

from core.backends.base import GenerationParams
from core.loop import Task, run_batch
from core.media import Video, load_image
from core.scoring import score_text
from core.trajectory import Trajectory
from train.data import load_sft_records
from train.synth.traces import loop_config

log = logging.getLogger(__name__)


def load_tasks(data: str | Path, split: str = "test", categories: list[str] | None = None,
               limit: int | None = None) -> list[Task]:
    """The split's tasks with their original media, loaded for the loop."""
    root = Path(data)
    tasks = []
    for rec in load_sft_records(root, split):
        t = rec.meta["task"]
        if categories and t["category"] not in categories:
            continue
        media = root / t["media"]
        kw = {"video": Video.from_file(media)} if t["kind"] == "video" else {"image": load_image(media)}
        tasks.append(Task(t["question"], answer=t["answer"], id=rec.id, media_path=str(media),
                          meta={"category": t["category"]}, **kw))
        if limit and len(tasks) >= limit:
            break
    return tasks


def summarize(trajs: list[Trajectory]) -> dict:
    """Per-category accuracy, no-tool share, and clean tool-call share."""
    by = defaultdict(list)
    for t in trajs:
        by[t.meta["category"]].append(t)
        by["all"].append(t)
    out = {}
    for cat, ts in sorted(by.items()):
        calls = [s for t in ts for s in t.steps if s.tool is not None or s.error is not None]
        out[cat] = {
            "n": len(ts),
            "accuracy": round(sum(bool(t.correct) for t in ts) / len(ts), 4),
            "no_tool_share": round(sum(1 for t in ts if not any(s.tool or s.error for s in t.steps)) / len(ts), 4),
            "tool_calls": len(calls),
            "clean_tool_call_share": round(sum(1 for s in calls if s.error is None) / len(calls), 4) if calls else None,
            "mean_ops": round(sum(t.n_ops for t in ts) / len(ts), 3),
            "status": dict(sorted({st: sum(1 for t in ts if t.status == st) for st in {t.status for t in ts}}.items())),
        }
    return out


def evaluate(model: str, data: str, tools: bool = True, categories: list[str] | None = None,
             limit: int | None = None, batch: int = 8, max_new_tokens: int = 96,
             split: str = "test") -> tuple[dict, list[Trajectory]]:
    from core.backends.hf import TransformersBackend

    backend = TransformersBackend(model)
    preset = backend.pixel_preset or "tiny"
    tasks = load_tasks(data, split, categories, limit)
    cfg, params = loop_config(tools, preset), GenerationParams(max_new_tokens=max_new_tokens)
    trajs: list[Trajectory] = []
    t0 = time.perf_counter()
    for i in range(0, len(tasks), batch):
        trajs.extend(run_batch(backend, tasks[i:i + batch], cfg, params))
        log.info("%d/%d tasks (%.0f s)", len(trajs), len(tasks), time.perf_counter() - t0)
    for t in trajs:
        t.correct = score_text(t.answer, t.ground_truth)
    report = {"model": model, "data": data, "split": split, "tools": tools, "preset": preset, "seconds": round(time.perf_counter() - t0, 1),
              "by_category": summarize(trajs)}
    return report, trajs


def main(argv: list[str] | None = None) -> int:
    from core.backends import default_model

    ap = argparse.ArgumentParser(prog="python -m train tinyzoom-eval", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="data/tinyzoom")
    ap.add_argument("--model", default=None, help="checkpoint folder (default: the shipped model)")
    ap.add_argument("--out", default=None, help="folder for report.json and trajectories.jsonl")
    ap.add_argument("--split", default="test", help="test (TinyZoom) or validation")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--no-tools", action="store_true")
    ap.add_argument("--categories", default=None, help="comma-separated categories (default: all)")
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    cats = args.categories.split(",") if args.categories else None
    report, trajs = evaluate(args.model or default_model(), args.data, not args.no_tools, cats, args.limit, args.batch,
                             split=args.split)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.json").write_text(json.dumps(report, indent=2))
        with (out / "trajectories.jsonl").open("w", encoding="utf-8") as f:
            for t in trajs:
                f.write(t.to_json() + "\n")
    print(json.dumps(report, indent=2))
    return 0
