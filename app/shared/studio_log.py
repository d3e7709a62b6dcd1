"""The Studio's own tables beside the trajectories: annotations, jobs and their metrics.

`StudioLog` is the session log (core.sessionlog) plus these tables, versioned by their own named
migrations; the app opens its database with it. Evaluation and training write trajectories with the
plain SessionLog into the same file; the Studio's tables appear when the Studio opens it.
"""
from __future__ import annotations

import json
import time
from typing import Any, Iterable

from sqlite_utils.migrations import Migrations

from core.sessionlog import SessionLog, _js, _unjs
from core.sessionquery import SessionFilter
from core.sessionschema import execute_script

SCHEMA = """
CREATE TABLE IF NOT EXISTS annotations (
    id INTEGER PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    step_idx INTEGER,           -- NULL: the whole trajectory
    label TEXT,
    comment TEXT,
    corrected_answer TEXT,
    corrected_box TEXT,         -- JSON [x0,y0,x1,y1] normalized
    corrected_frames TEXT,      -- JSON list
    corrected_text TEXT,
    annotator TEXT,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,         -- sft | rl | eval
    cmd TEXT NOT NULL,          -- JSON argv
    cwd TEXT,
    pid INTEGER, pgid INTEGER,
    status TEXT NOT NULL DEFAULT 'queued',  -- queued | running | done | failed | cancelled
    exit_code INTEGER,
    log_path TEXT, metrics_path TEXT, out_dir TEXT,
    dataset TEXT,
    created_at REAL NOT NULL, started_at REAL, ended_at REAL
);
CREATE TABLE IF NOT EXISTS metrics (
    job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    step INTEGER NOT NULL,
    name TEXT NOT NULL,
    value REAL,
    t REAL
);
CREATE INDEX IF NOT EXISTS idx_annotations_session ON annotations(session_id, step_idx);
CREATE INDEX IF NOT EXISTS idx_metrics_job ON metrics(job_id, step);
"""

MIGRATIONS = Migrations("pixel-reasoner-studio")


@MIGRATIONS()
def m001_studio_tables(db) -> None:
    execute_script(db, SCHEMA)


@MIGRATIONS()
def m002_jobs_note(db) -> None:
    """Why a job failed when no exit code tells (e.g. the app died while it ran). Files made before
    migrations may already have the column."""
    if "note" not in db.table("jobs").columns_dict:
        db.execute("ALTER TABLE jobs ADD COLUMN note TEXT")


class StudioLog(SessionLog):
    """The session log with the Studio's tables; the Inspect table counts and filters annotations."""

    LIST_EXTRA = ", (SELECT count(*) FROM annotations a WHERE a.session_id = s.id) AS n_annotations"

    def _create(self) -> None:
        super()._create()
        with self._tx() as db:
            MIGRATIONS.apply(db)

    def _extra_where(self, f: SessionFilter) -> list[str]:
        if f.annotated is None:
            return []
        return [("" if f.annotated else "NOT ") + "EXISTS (SELECT 1 FROM annotations a WHERE a.session_id = s.id)"]

    def add_annotation(self, session_id: str, step_idx: int | None = None, label: str | None = None,
                       comment: str | None = None, corrected_answer: str | None = None,
                       corrected_box: list[float] | None = None, corrected_frames: list[int] | None = None,
                       corrected_text: str | None = None, annotator: str | None = None) -> int:
        cur = self.db.execute(
            "INSERT INTO annotations (session_id, step_idx, label, comment, corrected_answer, corrected_box, "
            "corrected_frames, corrected_text, annotator, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [session_id, step_idx, label, comment, corrected_answer, _js(corrected_box), _js(corrected_frames),
             corrected_text, annotator, time.time()])
        return cur.lastrowid

    def list_annotations(self, session_id: str | None = None) -> list[dict]:
        sql, args = "SELECT * FROM annotations", []
        if session_id is not None:
            sql, args = sql + " WHERE session_id = ?", [session_id]
        rows = list(self.db.query(sql + " ORDER BY created_at, id", args))
        for r in rows:
            r["corrected_box"], r["corrected_frames"] = _unjs(r["corrected_box"]), _unjs(r["corrected_frames"])
        return rows

    def delete_annotation(self, annotation_id: int) -> None:
        self.db.execute("DELETE FROM annotations WHERE id = ?", [annotation_id])

    def create_job(self, job_id: str, kind: str, cmd: list[str], cwd: str | None = None, **fields: Any) -> str:
        row = {"id": job_id, "kind": kind, "cmd": json.dumps(cmd), "cwd": cwd, "status": "queued",
               "created_at": time.time(), **fields}
        self.db.execute(f"INSERT INTO jobs ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                        list(row.values()))
        return job_id

    def update_job(self, job_id: str, **fields: Any) -> None:
        if fields:
            sets = ", ".join(f"{k} = ?" for k in fields)
            self.db.execute(f"UPDATE jobs SET {sets} WHERE id = ?", [*fields.values(), job_id])

    def get_job(self, job_id: str) -> dict | None:
        rows = list(self.db.query("SELECT * FROM jobs WHERE id = ?", [job_id]))
        if rows:
            rows[0]["cmd"] = json.loads(rows[0]["cmd"])
        return rows[0] if rows else None

    def list_jobs(self, status: str | None = None) -> list[dict]:
        sql, args = "SELECT * FROM jobs", []
        if status:
            sql, args = sql + " WHERE status = ?", [status]
        rows = list(self.db.query(sql + " ORDER BY created_at DESC", args))
        for r in rows:
            r["cmd"] = json.loads(r["cmd"])
        return rows

    def add_metrics(self, job_id: str, rows: Iterable[dict]) -> int:
        """Copy metrics.jsonl rows into `metrics` (one row per numeric key), replacing the job's old ones."""
        values = [(job_id, int(r["step"]), k, float(v), r.get("time")) for r in rows if "step" in r
                  for k, v in r.items() if k not in ("step", "time") and isinstance(v, (int, float))
                  and not isinstance(v, bool)]
        with self._tx() as db:
            db.execute("DELETE FROM metrics WHERE job_id = ?", [job_id])
            db.conn.executemany("INSERT INTO metrics (job_id, step, name, value, t) VALUES (?, ?, ?, ?, ?)", values)
        return len(values)

    def job_metrics(self, job_id: str) -> list[dict]:
        return list(self.db.query("SELECT step, name, value, t FROM metrics WHERE job_id = ? ORDER BY step, name",
                                  [job_id]))
