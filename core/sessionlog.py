"""The SQLite session log of trajectories: every question asked, step by step, as it happens.

Written by the app, evaluation and RL rollouts; read by the app's Inspect, Annotate and Train tabs
and by Datasette as it is. sqlite-utils 4 semantics: each write commits on return, so a step is
grouped with its image rows and the session counters in one (IMMEDIATE) transaction; a process
killed mid-session keeps every finished step, and `mark_unfinished` closes the session later.

Images are files in a content-addressed DiskImageStore beside the DB; the `images` table keeps
hash, path, size and a small WebP thumbnail. Sessions are written through core.recorder.Recorder.
Connections are per thread (Gradio runs handlers in a thread pool and a sqlite3 connection may not
cross threads). The schema and its versions are in core/sessionschema.py, the queries in
core/sessionquery.py; the Studio's own tables live in app/shared/studio_log.py.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Iterable

import sqlite_utils

from core.paths import is_sha
from core.sessionquery import SessionQueries
from core.sessionschema import MIGRATIONS
from core.thumbnails import ThumbnailingStore
from core.trajectory import ImageRef, Media, Step, Trajectory

STATUSES = ("running", "done", "unfinished", "cancelled", "error", "max_ops", "max_images", "max_tokens")

def _js(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


def _unjs(value: str | None) -> Any:
    return None if value is None else json.loads(value)


def default_data_dir() -> Path:
    """Where the Studio keeps its data, and so where eval writes by default: /data/studio on a Hugging
    Face Space with persistent storage mounted, else data/ in the repository."""
    if os.environ.get("SPACE_ID") and Path("/data").is_dir():
        return Path("/data/studio")
    return Path(__file__).resolve().parents[1] / "data"



class StorageError(RuntimeError):
    """The session log cannot be opened or written; the message names the file and the cause."""


def storage_problem(e: BaseException, path: str | Path | None = None) -> str:
    """One line for a storage failure: which file (when given) and why, with what to do."""
    text = str(e).lower()
    errno_ = getattr(e, "errno", None)
    if errno_ in (27, 28) or "disk is full" in text or "no space" in text or "too large" in text:
        cause = "the disk is full (or the file hit its size limit); free some space"
    elif "disk i/o error" in text:
        cause = "a disk write failed (is the disk full?); free some space and try again"
    elif errno_ in (1, 13, 30) or "readonly" in text or "read-only" in text or "permission" in text:
        cause = "it is read-only here; give a writable --db path or fix the folder's permissions"
    elif "unable to open" in text:
        cause = "it cannot be opened (is its folder writable and the file a database?)"
    elif "not a database" in text or "malformed" in text:
        cause = "it is not a (healthy) SQLite database"
    elif "locked" in text:
        cause = "another process holds it locked; try again"
    else:
        cause = (str(e).splitlines() or [type(e).__name__])[0][:160]
    return f"{path}: {cause}" if path else cause


def open_log(path: str | Path, images_dir: str | Path | None = None, cls: type | None = None):
    """`cls(path)` (SessionLog by default; the Studio passes StudioLog), with a StorageError naming
    the file and the cause instead of sqlite's bare "unable to open database file"."""
    try:
        return (cls or SessionLog)(path, images_dir)
    except (OSError, sqlite3.Error) as e:
        raise StorageError(f"cannot use the session log {storage_problem(e, path)}") from None

def pid_alive(pid: int | None) -> bool:
    """Whether a process runs (a zombie, exited but not yet reaped, does not)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


class SessionLog(SessionQueries):
    """One SQLite file plus its image folder. Safe to share between threads and processes."""

    def __init__(self, db_path: str | Path, images_dir: str | Path | None = None) -> None:
        self.path = Path(db_path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.images = ThumbnailingStore(images_dir or self.path.parent / "images")
        self._local = threading.local()
        self.host = socket.gethostname()
        self._create()

    # ---- connections and schema ------------------------------------------------------------

    @property
    def db(self) -> sqlite_utils.Database:
        db = getattr(self._local, "db", None)
        if db is None or getattr(self._local, "pid", None) != os.getpid():
            db = sqlite_utils.Database(self.path)
            db.execute("PRAGMA busy_timeout = 10000")
            db.execute("PRAGMA foreign_keys = ON")
            db.execute("PRAGMA synchronous = NORMAL")
            self._local.db, self._local.pid = db, os.getpid()
        return db

    @contextlib.contextmanager
    def _tx(self):
        """One write transaction, taken with BEGIN IMMEDIATE.

        sqlite-utils' `atomic()` opens a deferred BEGIN; a transaction that reads before it writes
        then fails at once with "database is locked" when another connection writes meanwhile
        (the busy timeout does not apply to a lock upgrade). Nested calls use atomic's savepoints.
        """
        db = self.db
        if db.conn.in_transaction:
            with db.atomic():
                yield db
            return
        db.conn.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            if db.conn.in_transaction:
                db.conn.execute("ROLLBACK")
            raise
        db.conn.execute("COMMIT")

    def _create(self) -> None:
        """Bring the file to the current schema; one IMMEDIATE transaction, so two processes opening
        the same file at once apply each migration once."""
        self.db.enable_wal()
        with self._tx() as db:
            MIGRATIONS.apply(db)

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    def set_status(self, session_id: str, status: str, error: str | None = None) -> None:
        self.db.execute("UPDATE sessions SET status = ?, error = COALESCE(?, error), ended_at = ? WHERE id = ?",
                        [status, error, time.time(), session_id])

    def mark_unfinished(self, session_ids: Iterable[str] | None = None) -> int:
        """Mark sessions left 'running' as 'unfinished'; returns how many.

        With ids (a closed browser): those sessions, if still running. Without: every running
        session whose writer process on this host is gone (a crash), so live writers elsewhere
        (an eval next to the app) are left alone.
        """
        db = self.db
        if session_ids is not None:
            ids = list(session_ids)
        else:
            rows = db.execute("SELECT id, host, pid FROM sessions WHERE status = 'running'").fetchall()
            ids = [i for i, host, pid in rows if host == self.host and not pid_alive(pid)]
        n = 0
        with self._tx():
            for sid in ids:
                n += db.execute("UPDATE sessions SET status = 'unfinished', ended_at = ? "
                                "WHERE id = ? AND status = 'running'", [time.time(), sid]).rowcount
        return n

    def delete_session(self, session_id: str) -> None:
        self.db.execute("DELETE FROM sessions WHERE id = ?", [session_id])

    # ---- reading ---------------------------------------------------------------------------

    def session(self, session_id: str) -> dict | None:
        rows = list(self.db.query("SELECT * FROM sessions WHERE id = ?", [session_id]))
        return rows[0] if rows else None

    def steps(self, session_id: str) -> list[dict]:
        return list(self.db.query("SELECT * FROM steps WHERE session_id = ? ORDER BY idx", [session_id]))

    def get_trajectory(self, session_id: str) -> Trajectory:
        """Rebuild the Trajectory from the rows, also for sessions that never finished."""
        row = self.session(session_id)
        if row is None:
            raise KeyError(f"no session {session_id!r}")
        media = Media.from_dict(json.loads(row["media_json"]))
        steps = [Step(
            index=s["idx"], text=s["text"], tool=s["tool"], arguments=_unjs(s["arguments"]), error=s["error"],
            observation=s["observation"], images=[ImageRef(*r) for r in json.loads(s["image_shas"] or "[]")],
            target_image=s["target_image"], box_norm=_unjs(s["box_norm"]), box_px=_unjs(s["box_px"]),
            source_box_px=_unjs(s["source_box_px"]), frames=_unjs(s["frames"]), tokens_in=s["tokens_in"] or 0,
            tokens_out=s["tokens_out"] or 0, gen_seconds=s["gen_seconds"] or 0.0,
            tool_seconds=s["tool_seconds"] or 0.0, finish_reason=s["finish_reason"] or "stop",
            started_at=s["started_at"] or 0.0, mean_logprob=s["mean_logprob"], unsure=_unjs(s["unsure"]))
            for s in self.steps(session_id)]
        status = row["status"]
        return Trajectory(
            question=row["question"], media=media, choices=_unjs(row["choices"]), answer=row["answer"],
            ground_truth=row["ground_truth"], correct=None if row["correct"] is None else bool(row["correct"]),
            scorer=row["scorer"], answer_confidence=row["answer_confidence"],
            familiar=None if row["familiar"] is None else bool(row["familiar"]), familiarity=row["familiarity"],
            steps=steps, status=status, error=row["error"], tools_enabled=bool(row["tools_enabled"]),
            guideline=row["guideline"] or "vcot", backend=row["backend"] or "", model=row["model"] or "",
            config=_unjs(row["config_json"]) or {}, id=row["id"], created_at=row["created_at"],
            meta=_unjs(row["meta_json"]) or {})

    def image_path(self, sha: str) -> Path | None:
        """The stored file of an image, or None (also for a name that is not a content hash)."""
        if not is_sha(sha):
            return None
        path = self.images.path(sha)
        return path if path.exists() else None

