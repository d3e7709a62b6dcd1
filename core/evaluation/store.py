"""The run folder: `items.jsonl` written item by item, `run.json` naming what the run measures.

Lossless by construction: each finished item is one JSON line, appended, flushed and fsynced
before the next one is written; a crash can at worst leave a torn last line, which is cut off the
next time the file is opened (that item is simply run again). A re-run reads the keys already in
the file and skips them, so every item is scored exactly once. An exclusive lock on `.lock`
stops two processes from writing the same folder.
"""
from __future__ import annotations

import fcntl
import json
import os
import time
import uuid
from pathlib import Path

IDENTITY = ("bench", "model", "tools", "samples", "data", "oracle_first_crop")  # what must match to resume a folder


class RunFolderError(RuntimeError):
    """The output folder belongs to another run or is in use."""


def item_key(item_id: str, sample: int) -> str:
    return item_id if sample == 0 else f"{item_id}#{sample}"


class ItemsFile:
    """Append-only JSONL of finished items, keyed by (id, sample)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.records: dict[str, dict] = {}
        if self.path.exists():
            self._repair_and_read()
        self._f = self.path.open("a", encoding="utf-8")

    def _repair_and_read(self) -> None:
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end < len(data):  # a torn last line from a crash mid-write: cut it
            with self.path.open("r+b") as f:
                f.truncate(end)
                f.flush()
                os.fsync(f.fileno())
            data = data[:end]
        for line in data.decode("utf-8").splitlines():
            if line.strip():
                rec = json.loads(line)
                self.records[item_key(rec["id"], rec.get("sample", 0))] = rec

    def __contains__(self, key: str) -> bool:
        return key in self.records

    def append(self, record: dict) -> None:
        key = item_key(record["id"], record.get("sample", 0))
        if key in self.records:
            raise RunFolderError(f"item {key} is already in {self.path}")
        self._f.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())
        self.records[key] = record

    def close(self) -> None:
        self._f.close()


class RunFolder:
    """`<out>/`: run.json, items.jsonl, metrics.jsonl, progress.json, report.* ; locked while open."""

    def __init__(self, out: str | Path, identity: dict, details: dict | None = None) -> None:
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self._lock = (self.out / ".lock").open("w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise RunFolderError(f"{self.out} is in use by another evaluation (lock {self.out / '.lock'})") from None
        run_path = self.out / "run.json"
        if run_path.exists():
            run = json.loads(run_path.read_text(encoding="utf-8"))
            theirs = {k: run.get(k) for k in IDENTITY}
            ours = {k: identity.get(k) for k in IDENTITY}
            if theirs != ours:
                diff = ", ".join(f"{k}: {theirs[k]!r} there, {ours[k]!r} now" for k in IDENTITY if theirs[k] != ours[k])
                self.close()
                raise RunFolderError(f"{self.out} holds another run ({diff}); give a new --out to start afresh")
        else:
            run = {**{k: identity.get(k) for k in IDENTITY}, "run_id": uuid.uuid4().hex[:12],
                   "created_at": time.time(), **(details or {})}
            tmp = run_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(run, indent=2), encoding="utf-8")
            os.replace(tmp, run_path)
        self.run = run
        self.items = ItemsFile(self.out / "items.jsonl")

    @property
    def run_id(self) -> str:
        return self.run["run_id"]

    def write_progress(self, done: int, total: int) -> None:
        tmp = self.out / "progress.json.tmp"
        tmp.write_text(json.dumps({"done": done, "total": total}), encoding="utf-8")
        os.replace(tmp, self.out / "progress.json")

    def append_metrics(self, row: dict) -> None:
        with (self.out / "metrics.jsonl").open("a", encoding="utf-8") as f:
            f.write(json.dumps({"time": time.time(), **row}) + "\n")

    def close(self) -> None:
        if hasattr(self, "items"):
            self.items.close()
        if not self._lock.closed:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()

    def __enter__(self) -> "RunFolder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
