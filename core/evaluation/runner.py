"""The resumable evaluation runner: batches of items through core.loop.run_batch, each finished item
written at once (items.jsonl, and the session log when one is given), then the report.

    report = evaluate(backend, items, "vstar", "runs/eval/vstar", LoopConfig(...), GenerationParams(...))

Items whose (id, sample) is already in `<out>/items.jsonl` are skipped, so re-running the same
command after Ctrl-C or a crash finishes the rest; only the items in flight are redone. An item
whose media cannot be read is recorded with status "error" and score 0; an item whose batch hit
a backend failure is *not* recorded (a re-run retries it) and counts in `n_failed`.
"""
from __future__ import annotations

import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from core.backends.base import Backend, Generation, GenerationParams
from core.loop import Episode, LoopConfig, run_batch
from core.media import MediaError, MemoryImageStore
from core.recorder import Recorder
from core.scoring import judge
from core.sessionlog import SessionLog
from core.trajectory import Trajectory

from core.evaluation.benches import BENCHES
from core.evaluation.chart import write_chart
from core.evaluation.data import EvalItem
from core.evaluation.oracle import ORACLE_KEY, OracleEpisode
from core.evaluation.report import item_stats, summarize, to_markdown
from core.evaluation.store import RunFolder, item_key

log = logging.getLogger(__name__)


class _TimedBackend(Backend):
    """Passes batched calls through, sharing each call's wall time among the conversations in it."""

    def __init__(self, inner: Backend) -> None:
        self.inner, self.name, self.model_id = inner, inner.name, inner.model_id
        self.seconds: dict[int, float] = {}  # id(messages list) -> seconds

    def generate_batch(self, batch: list[list[dict]], params: GenerationParams) -> list[Generation]:
        t0 = time.perf_counter()
        out = self.inner.generate_batch(batch, params)
        share = (time.perf_counter() - t0) / max(len(batch), 1)
        for messages in batch:
            self.seconds[id(messages)] = self.seconds.get(id(messages), 0.0) + share
        return out

    def familiarity(self, pictures: list) -> list[tuple[bool, float]] | None:  # declared on Backend
        return self.inner.familiarity(pictures)

    def forget(self) -> None:
        self.inner.forget()


@dataclass
class EvalResult:
    report: dict
    out: Path
    n_new: int  # items finished by this call
    n_failed: int  # items lost to backend errors (not recorded; a re-run retries them)
    failure: str | None = None


def _record(bench: str, item: EvalItem, sample: int, traj: Trajectory, seconds: float) -> dict:
    verdict = judge(traj.answer, item.truth, BENCHES[bench].scorer, item.score_choices)
    traj.correct, traj.scorer, value = verdict.correct, verdict.scorer, verdict.score
    traj.meta.update({"bench": bench, "item_id": item.id, "sample": sample, "score": value, "category": item.category})
    return {"id": item.id, "sample": sample, "correct": traj.correct, "score": value, "prediction": traj.answer,
            "answer": item.truth, "category": item.category, **item_stats(traj), "seconds": round(seconds, 4),
            "error": traj.error, "trajectory": traj.to_dict()}


def _media_error_record(bench: str, item: EvalItem, sample: int, message: str) -> dict:
    return {"id": item.id, "sample": sample, "correct": False, "score": 0.0, "prediction": None,
            "answer": item.truth, "category": item.category, "status": "error", "n_steps": 0, "n_ops": 0,
            "n_tool_calls": 0, "n_error_turns": 0, "tokens_in": 0, "tokens_out": 0, "tools_used": [],
            "seconds": 0.0, "error": message, "trajectory": None}


def evaluate(backend: Backend, items: list[EvalItem], bench: str, out: str | Path, config: LoopConfig,
             params: GenerationParams, samples: int = 1, batch: int = 8, session_log: SessionLog | None = None,
             progress: bool = True, data: str = "", details: dict | None = None,
             oracle_first_crop: bool = False) -> EvalResult:
    """Run (or resume) an evaluation in `out` and write its report; see the module docstring. With
    `oracle_first_crop`, each item's first crop is its target box (core/evaluation/oracle.py)."""
    if bench not in BENCHES:
        raise ValueError(f"unknown bench {bench!r}; choose one of {', '.join(BENCHES)}")
    identity = {"bench": bench, "model": backend.model_id, "tools": config.tools, "samples": samples, "data": data,
                "oracle_first_crop": True if oracle_first_crop else None}
    folder = RunFolder(out, identity, details)
    timed = _TimedBackend(backend)
    keys = [(item, k) for item in items for k in range(samples)]
    todo = [(item, k) for item, k in keys if item_key(item.id, k) not in folder.items]
    total, n_new, n_failed, failure = len(keys), 0, 0, None
    done = total - len(todo)
    bar = tqdm(total=total, initial=done, unit="item", desc=f"eval {bench}", disable=not progress, dynamic_ncols=True)
    chunks = [todo[i:i + batch] for i in range(0, len(todo), batch)]
    recorder = Recorder(session_log, "eval") if session_log is not None else None

    def prepare(chunk):
        """Load media and build the episodes of one batch (in a worker thread, one batch ahead)."""
        store = session_log.images if session_log is not None else MemoryImageStore()
        episodes, owners, broken = [], {}, []
        for item, k in chunk:
            try:
                task = item.task(task_id=f"eval-{folder.run_id}-{item_key(item.id, k)}")
                ep = OracleEpisode(task, config, store, backend.name, backend.model_id, target=item.target,
                                   frames=item.visible_frames) if oracle_first_crop else \
                    Episode(task, config, store, backend.name, backend.model_id)
            except (MediaError, ValueError) as e:
                broken.append(_media_error_record(bench, item, k, str(e)))
                continue
            episodes.append(ep)
            owners[id(ep)] = (item, k)
        return store, episodes, owners, broken

    def finished(ep: Episode, owners: dict) -> None:
        nonlocal n_new, n_failed, failure
        item, k = owners[id(ep)]
        traj = ep.trajectory
        if traj.status == "error":  # the backend failed: leave the item for a re-run
            n_failed += 1
            failure = traj.error
            return
        seconds = timed.seconds.pop(id(ep.messages), 0.0) + sum(s.tool_seconds for s in traj.steps)
        record = _record(bench, item, k, traj, seconds)
        if oracle_first_crop:  # the step whose look was replaced; None: the model never looked
            record["oracle_step"] = traj.meta.get(ORACLE_KEY, {}).get("step")
        if recorder is not None:  # first the log (idempotent by id), then the item file
            recorder.write(traj)
        folder.items.append(record)
        n_new += 1
        bar.update(1)

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="eval-load")
    try:
        pending = pool.submit(prepare, chunks[0]) if chunks else None
        for i in range(len(chunks)):
            failed_before = n_failed
            store, episodes, owners, broken = pending.result()
            pending = pool.submit(prepare, chunks[i + 1]) if i + 1 < len(chunks) else None
            for record in broken:
                log.warning("item %s: %s", record["id"], record["error"])
                folder.items.append(record)
                n_new += 1
                bar.update(1)
            if episodes:
                run_batch(timed, [], config, params, store, episodes=episodes,
                          on_done=lambda ep, owners=owners: finished(ep, owners))
            done = sum(1 for item, k in keys if item_key(item.id, k) in folder.items)
            running = summarize(_records(folder, keys), n_boot=0)
            folder.append_metrics({"step": done, "accuracy": running["accuracy"], "rapr": running["rapr"]})
            folder.write_progress(done, total)
            if n_failed > failed_before:
                log.warning("backend error, %d items left for a re-run: %s", n_failed - failed_before, failure)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
        records = _records(folder, keys)
        folder.close()
    b = BENCHES[bench]
    header = {"bench": bench, "model": backend.model_id, "backend": backend.name, "tools": config.tools,
              "title": b.title, "metric": b.metric, "paper_7b": b.paper_7b, "samples": samples,
              "complete": len(records) == total, "n_failed": n_failed, "run_id": folder.run_id,
              "data": data, "guideline": config.guideline if config.tools else "notool",
              "max_ops": config.max_ops, "pixels": vars(config.pixels),
              "temperature": params.temperature, "max_new_tokens": params.max_new_tokens, **(details or {})}
    if oracle_first_crop:
        header[ORACLE_KEY] = {"replaced": sum(1 for r in records if r.get("oracle_step") is not None)}
    report = summarize(records, header)
    out = Path(out)
    write_report(report, out)
    return EvalResult(report=report, out=out, n_new=n_new, n_failed=n_failed, failure=failure)


def _records(folder: RunFolder, keys: list[tuple[EvalItem, int]]) -> list[dict]:
    """The finished records of this selection of items, in item order."""
    return [folder.items.records[item_key(i.id, k)] for i, k in keys if item_key(i.id, k) in folder.items]


def write_report(report: dict, out: str | Path) -> None:
    """report.json, report.md and report.html (the plotly chart) in `out`."""
    out = Path(out)
    tmp = out / "report.json.tmp"
    tmp.write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
    tmp.replace(out / "report.json")
    (out / "report.md").write_text(to_markdown(report), encoding="utf-8")
    if report["n_items"]:
        write_chart(report, out / "report.html")
