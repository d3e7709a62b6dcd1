"""The SQLite session log: every question asked, step by step, as it happens.

Written by the app, evaluation and RL rollouts; read by the app's Inspect, Annotate and Train tabs
and by Datasette as it is. sqlite-utils 4 semantics: each write commits on return, so a step is
grouped with its image rows and the session counters in one (IMMEDIATE) transaction; a process
killed mid-session keeps every finished step, and `mark_unfinished` closes the session later.

Images are files in a content-addressed DiskImageStore beside the DB; the `images` table keeps
hash, path, size and a small WebP thumbnail. Connections are per thread (Gradio runs handlers in a
thread pool and a sqlite3 connection may not cross threads).
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable

import sqlite_utils
from PIL import Image

from core.thumbnails import THUMB_SIDE, ThumbnailingStore, make_thumb  # noqa: F401 (re-exported)
from core.trajectory import ImageRef, Media, Step, Trajectory

STATUSES = ("running", "done", "unfinished", "cancelled", "error", "max_ops", "max_images", "max_tokens")

SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    ended_at REAL,
    question TEXT NOT NULL,
    choices TEXT,               -- JSON list or NULL
    media_kind TEXT,            -- image | video | frames
    media_path TEXT,
    media_sha TEXT,             -- the original image (or first overview frame)
    media_json TEXT,            -- core.trajectory.Media as JSON
    model TEXT,
    backend TEXT,
    client TEXT,                -- app | eval:<run> | train:<job_id> | import
    status TEXT NOT NULL DEFAULT 'running',
    error TEXT,
    answer TEXT,
    ground_truth TEXT,
    correct INTEGER,            -- 1 | 0 | NULL (unknown)
    n_steps INTEGER NOT NULL DEFAULT 0,
    n_ops INTEGER NOT NULL DEFAULT 0,
    n_errors INTEGER NOT NULL DEFAULT 0,
    tokens_in INTEGER NOT NULL DEFAULT 0,
    tokens_out INTEGER NOT NULL DEFAULT 0,
    seconds REAL NOT NULL DEFAULT 0,
    tools_enabled INTEGER NOT NULL DEFAULT 1,
    guideline TEXT,
    config_json TEXT,
    meta_json TEXT,
    compare_of TEXT,            -- the session this tools-off run was compared with
    host TEXT,
    pid INTEGER,                -- writer process, to find sessions a crash left running
    trajectory_json TEXT        -- the whole record, written when the session ends
);
CREATE TABLE IF NOT EXISTS images (
    sha TEXT PRIMARY KEY,
    path TEXT,
    width INTEGER,
    height INTEGER,
    bytes INTEGER,
    thumb BLOB,                 -- WebP, longest side 128 px
    created_at REAL
);
CREATE TABLE IF NOT EXISTS steps (
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    text TEXT NOT NULL,
    tool TEXT,
    arguments TEXT,             -- JSON
    error TEXT,
    observation TEXT,
    target_image INTEGER,
    box_norm TEXT,              -- JSON [x0,y0,x1,y1] in [0,1]
    box_px TEXT,                -- JSON, pixels of the target image
    source_box_px TEXT,         -- JSON, pixels of the original input
    frames TEXT,                -- JSON, 1-based overview frame numbers
    image_shas TEXT,            -- JSON list of images.sha returned by the operation
    tokens_in INTEGER, tokens_out INTEGER,
    gen_seconds REAL, tool_seconds REAL,
    finish_reason TEXT,
    started_at REAL,
    PRIMARY KEY (session_id, idx)
);
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
    created_at REAL NOT NULL, started_at REAL, ended_at REAL,
    note TEXT                   -- why it failed when no exit code tells (e.g. the app died while it ran)
);
CREATE TABLE IF NOT EXISTS metrics (
    job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    step INTEGER NOT NULL,
    name TEXT NOT NULL,
    value REAL,
    t REAL
);
CREATE INDEX IF NOT EXISTS idx_sessions_created ON sessions(created_at);
CREATE INDEX IF NOT EXISTS idx_sessions_model ON sessions(model, correct);
CREATE INDEX IF NOT EXISTS idx_sessions_status ON sessions(status);
CREATE INDEX IF NOT EXISTS idx_sessions_question ON sessions(question);
CREATE INDEX IF NOT EXISTS idx_sessions_compare ON sessions(compare_of);
CREATE INDEX IF NOT EXISTS idx_annotations_session ON annotations(session_id, step_idx);
CREATE INDEX IF NOT EXISTS idx_metrics_job ON metrics(job_id, step);
"""

_STEP_COLS = ("session_id", "idx", "text", "tool", "arguments", "error", "observation", "target_image", "box_norm",
              "box_px", "source_box_px", "frames", "image_shas", "tokens_in", "tokens_out", "gen_seconds",
              "tool_seconds", "finish_reason", "started_at")
_STEP_SQL = (f"INSERT OR REPLACE INTO steps ({', '.join(_STEP_COLS)}) "
             f"VALUES ({', '.join('?' * len(_STEP_COLS))})")


def _js(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


def _unjs(value: str | None) -> Any:
    return None if value is None else json.loads(value)


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


@dataclass
class SessionFilter:
    """What the Inspect table asks for; every field is optional and applied in SQL."""

    model: str | None = None
    outcome: str | None = None  # correct | incorrect | unknown
    min_ops: int | None = None
    max_ops: int | None = None
    has_errors: bool | None = None
    annotated: bool | None = None
    since: float | None = None  # epoch seconds
    until: float | None = None
    text: str | None = None  # full-text search over question, answer and reasoning
    status: str | None = None
    client: str | None = None  # prefix match: "eval" matches "eval:run1"
    question: str | None = None  # exact question (side-by-side comparison)
    tool: str | None = None  # sessions with at least one step calling this operation
    limit: int = 50
    offset: int = 0


class SessionLog:
    """One SQLite file plus its image folder. Safe to share between threads and processes."""

    def __init__(self, db_path: str | Path, images_dir: str | Path | None = None) -> None:
        self.path = Path(db_path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.images = ThumbnailingStore(images_dir or self.path.parent / "images")
        self._local = threading.local()
        self._host = socket.gethostname()
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
        db = self.db
        db.enable_wal()
        with self._tx():
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            if "note" not in db.table("jobs").columns_dict:  # DBs made before the column existed
                db.execute("ALTER TABLE jobs ADD COLUMN note TEXT")
            if "sessions_fts" not in db.table_names():
                db.table("sessions").enable_fts(["question", "answer"], create_triggers=True, tokenize="porter")
            if "steps_fts" not in db.table_names():
                db.table("steps").enable_fts(["text"], create_triggers=True, tokenize="porter")
            self._narrow_fts_triggers()

    def _narrow_fts_triggers(self) -> None:
        """Re-index a row's text only when that text changes: sqlite-utils' update triggers fire on
        any column, so each step's counter update re-tokenized its session's question and answer."""
        db = self.db
        for table, cols in (("sessions", ("question", "answer")), ("steps", ("text",))):
            name = f"{table}_au"
            row = db.execute("SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = ?", [name]).fetchone()
            if row is None or " UPDATE OF " in row[0]:
                continue
            quoted = ", ".join(f'"{c}"' for c in cols)
            old = ", ".join(f'old."{c}"' for c in cols)
            new = ", ".join(f'new."{c}"' for c in cols)
            db.execute(f'DROP TRIGGER "{name}"')
            db.execute(f'CREATE TRIGGER "{name}" AFTER UPDATE OF {quoted} ON "{table}" BEGIN\n'
                       f'  INSERT INTO "{table}_fts" ("{table}_fts", rowid, {quoted}) VALUES(\'delete\', old.rowid, {old});\n'
                       f'  INSERT INTO "{table}_fts" (rowid, {quoted}) VALUES (new.rowid, {new});\nEND')

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    # ---- writing ---------------------------------------------------------------------------

    def _image_rows(self, refs: Iterable[ImageRef | None]) -> list[list]:
        """images rows for refs whose files are in the store and not yet registered, made before
        the transaction that inserts them (a step commits only once its image files exist)."""
        rows, seen = [], set()
        for ref in refs:
            if ref is None or ref.sha in seen:
                continue
            seen.add(ref.sha)
            if self.db.execute("SELECT 1 FROM images WHERE sha = ?", [ref.sha]).fetchone():
                continue
            path = self.images.path(ref.sha)
            if not path.exists():
                continue  # made with a memory store elsewhere: the step keeps the sha only
            rows.append([ref.sha, str(path), ref.width, ref.height, path.stat().st_size,
                         self.images.thumb(ref.sha), time.time()])
        return rows

    def _insert_images(self, rows: list[list]) -> None:
        self.db.conn.executemany("INSERT OR IGNORE INTO images (sha, path, width, height, bytes, thumb, created_at) "
                                 "VALUES (?, ?, ?, ?, ?, ?, ?)", rows)

    def put_images(self, images: Iterable[Image.Image]) -> list[ImageRef]:
        """Store pictures made outside the loop (imports, corrections) and register them."""
        refs = [ImageRef(self.images.put(im), im.width, im.height) for im in images]
        rows = self._image_rows(refs)
        with self._tx():
            self._insert_images(rows)
        return refs

    def start_session(self, traj: Trajectory, client: str = "app", compare_of: str | None = None) -> str:
        """Insert the session row (status running) before the first step is generated."""
        m = traj.media
        media_ref = m.image or (m.overview[0] if m.overview else None)
        row = {
            "id": traj.id, "created_at": traj.created_at, "question": traj.question, "choices": _js(traj.choices),
            "media_kind": m.kind, "media_path": m.path, "media_sha": media_ref.sha if media_ref else None,
            "media_json": json.dumps(asdict(m)), "model": traj.model, "backend": traj.backend, "client": client,
            "status": "running", "ground_truth": traj.ground_truth, "tools_enabled": int(traj.tools_enabled),
            "guideline": traj.guideline, "config_json": json.dumps(traj.config), "meta_json": json.dumps(traj.meta),
            "compare_of": compare_of or traj.meta.get("compare_of"), "host": self._host, "pid": os.getpid(),
        }
        db = self.db
        rows = self._image_rows([m.image, m.model_view, *m.overview])
        with self._tx():
            self._insert_images(rows)
            db.execute(f"INSERT INTO sessions ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                       list(row.values()))
        return traj.id

    def _insert_step(self, session_id: str, step: Step) -> None:
        self.db.execute(_STEP_SQL, [
            session_id, step.index, step.text, step.tool, _js(step.arguments), step.error, step.observation,
            step.target_image, _js(step.box_norm), _js(step.box_px), _js(step.source_box_px), _js(step.frames),
            json.dumps([[r.sha, r.width, r.height] for r in step.images]), step.tokens_in, step.tokens_out,
            step.gen_seconds, step.tool_seconds, step.finish_reason, step.started_at])

    def log_step(self, session_id: str, step: Step) -> None:
        """One transaction: the step row, its image rows, and the session's running counters."""
        db = self.db
        rows = self._image_rows(step.images)
        with self._tx():
            self._insert_images(rows)
            self._insert_step(session_id, step)
            db.execute(
                "UPDATE sessions SET n_steps = n_steps + 1, n_ops = n_ops + ?, n_errors = n_errors + ?, "
                "tokens_in = tokens_in + ?, tokens_out = tokens_out + ?, seconds = seconds + ? WHERE id = ?",
                [int(step.is_operation), int(bool(step.error)), step.tokens_in, step.tokens_out,
                 step.gen_seconds + step.tool_seconds, session_id])

    def finish_session(self, traj: Trajectory) -> None:
        """Close the session with its status and answer; steps not yet logged are added first."""
        db = self.db
        rows = self._image_rows([ref for step in traj.steps for ref in step.images])
        with self._tx():
            self._insert_images(rows)
            logged = {r[0] for r in db.execute("SELECT idx FROM steps WHERE session_id = ?", [traj.id])}
            for step in traj.steps:
                if step.index not in logged:
                    self._insert_step(traj.id, step)
            db.execute(
                "UPDATE sessions SET status = ?, error = ?, answer = ?, ground_truth = ?, correct = ?, ended_at = ?, "
                "n_steps = ?, n_ops = ?, n_errors = ?, tokens_in = ?, tokens_out = ?, seconds = ?, meta_json = ?, "
                "trajectory_json = ? WHERE id = ?",
                [traj.status if traj.status != "running" else "done", traj.error, traj.answer, traj.ground_truth,
                 None if traj.correct is None else int(traj.correct), time.time(), len(traj.steps), traj.n_ops,
                 traj.n_errors, sum(s.tokens_in for s in traj.steps), sum(s.tokens_out for s in traj.steps),
                 sum(s.gen_seconds + s.tool_seconds for s in traj.steps), json.dumps(traj.meta), traj.to_json(),
                 traj.id])

    def log_trajectory(self, traj: Trajectory, client: str = "import") -> str:
        """Store a whole trajectory at once (imports, eval). Re-importing the same id replaces it."""
        db = self.db
        with self._tx():
            db.execute("DELETE FROM sessions WHERE id = ?", [traj.id])
            self.start_session(traj, client)
            self.finish_session(traj)
        return traj.id

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
            ids = [i for i, host, pid in rows if host == self._host and not pid_alive(pid)]
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
        m = json.loads(row["media_json"])
        media = Media(**{**m, "image": ImageRef(**m["image"]) if m.get("image") else None,
                         "model_view": ImageRef(**m["model_view"]) if m.get("model_view") else None,
                         "overview": [ImageRef(**r) for r in m.get("overview", [])]})
        steps = [Step(
            index=s["idx"], text=s["text"], tool=s["tool"], arguments=_unjs(s["arguments"]), error=s["error"],
            observation=s["observation"], images=[ImageRef(*r) for r in json.loads(s["image_shas"] or "[]")],
            target_image=s["target_image"], box_norm=_unjs(s["box_norm"]), box_px=_unjs(s["box_px"]),
            source_box_px=_unjs(s["source_box_px"]), frames=_unjs(s["frames"]), tokens_in=s["tokens_in"] or 0,
            tokens_out=s["tokens_out"] or 0, gen_seconds=s["gen_seconds"] or 0.0,
            tool_seconds=s["tool_seconds"] or 0.0, finish_reason=s["finish_reason"] or "stop",
            started_at=s["started_at"] or 0.0) for s in self.steps(session_id)]
        status = row["status"]
        return Trajectory(
            question=row["question"], media=media, choices=_unjs(row["choices"]), answer=row["answer"],
            ground_truth=row["ground_truth"], correct=None if row["correct"] is None else bool(row["correct"]),
            steps=steps, status=status, error=row["error"], tools_enabled=bool(row["tools_enabled"]),
            guideline=row["guideline"] or "vcot", backend=row["backend"] or "", model=row["model"] or "",
            config=_unjs(row["config_json"]) or {}, id=row["id"], created_at=row["created_at"],
            meta=_unjs(row["meta_json"]) or {})

    def image_path(self, sha: str) -> Path | None:
        path = self.images.path(sha)
        return path if path.exists() else None

    def _where(self, f: SessionFilter) -> tuple[str, list]:
        clauses, args = [], []
        if f.model:
            clauses.append("s.model = ?"), args.append(f.model)
        if f.outcome == "correct":
            clauses.append("s.correct = 1")
        elif f.outcome == "incorrect":
            clauses.append("s.correct = 0")
        elif f.outcome == "unknown":
            clauses.append("s.correct IS NULL")
        if f.min_ops is not None:
            clauses.append("s.n_ops >= ?"), args.append(f.min_ops)
        if f.max_ops is not None:
            clauses.append("s.n_ops <= ?"), args.append(f.max_ops)
        if f.has_errors is not None:
            clauses.append("s.n_errors > 0" if f.has_errors else "s.n_errors = 0")
        if f.annotated is not None:
            clauses.append(("" if f.annotated else "NOT ") +
                           "EXISTS (SELECT 1 FROM annotations a WHERE a.session_id = s.id)")
        if f.since is not None:
            clauses.append("s.created_at >= ?"), args.append(f.since)
        if f.until is not None:
            clauses.append("s.created_at < ?"), args.append(f.until)
        if f.status:
            clauses.append("s.status = ?"), args.append(f.status)
        if f.client:
            clauses.append("(s.client = ? OR s.client LIKE ?)"), args.extend([f.client, f.client + ":%"])
        if f.question:
            clauses.append("s.question = ?"), args.append(f.question)
        if f.tool:
            clauses.append("EXISTS (SELECT 1 FROM steps t WHERE t.session_id = s.id AND t.tool = ? "
                           "AND t.error IS NULL)"), args.append(f.tool)
        if f.text and f.text.strip():
            q = self.db.quote_fts(f.text.strip())
            clauses.append(
                "(s.rowid IN (SELECT rowid FROM sessions_fts WHERE sessions_fts MATCH ?) OR s.id IN "
                "(SELECT st.session_id FROM steps st WHERE st.rowid IN "
                "(SELECT rowid FROM steps_fts WHERE steps_fts MATCH ?)))")
            args.extend([q, q])
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", args

    def list_sessions(self, f: SessionFilter | None = None) -> tuple[list[dict], int]:
        """One page of sessions (newest first) and the total count matching the filter."""
        f = f or SessionFilter()
        where, args = self._where(f)
        db = self.db
        total = db.execute(f"SELECT count(*) FROM sessions s{where}", args).fetchone()[0]
        rows = list(db.query(
            "SELECT s.id, s.created_at, s.question, s.media_kind, s.model, s.backend, s.client, s.status, s.answer, "
            "s.ground_truth, s.correct, s.n_steps, s.n_ops, s.n_errors, s.seconds, s.tools_enabled, s.compare_of, "
            "(SELECT count(*) FROM annotations a WHERE a.session_id = s.id) AS n_annotations "
            f"FROM sessions s{where} ORDER BY s.created_at DESC, s.id LIMIT ? OFFSET ?",
            [*args, f.limit, f.offset]))
        return rows, total

    def models(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT DISTINCT model FROM sessions WHERE model IS NOT NULL "
                                              "ORDER BY model")]

    def stats(self, f: SessionFilter | None = None) -> dict[str, list[dict]]:
        """Rows for the Inspect charts: ops per session, RaPR by day and by model, step latency."""
        where, args = self._where(f or SessionFilter())
        db = self.db
        base = f"FROM sessions s{where}"
        and_ = " AND " if where else " WHERE "
        return {
            "ops": list(db.query(f"SELECT s.n_ops AS n_ops, count(*) AS sessions {base} GROUP BY s.n_ops "
                                 "ORDER BY s.n_ops", args)),
            "rapr_by_day": list(db.query(
                "SELECT date(s.created_at, 'unixepoch') AS day, s.model AS model, count(*) AS sessions, "
                f"avg(s.n_ops > 0) AS rapr, avg(s.correct) AS accuracy {base}{and_}s.tools_enabled = 1 "
                "GROUP BY day, s.model ORDER BY day", args)),
            "rapr_by_model": list(db.query(
                f"SELECT s.model AS model, count(*) AS sessions, avg(s.n_ops > 0) AS rapr, avg(s.correct) AS accuracy "
                f"{base}{and_}s.tools_enabled = 1 GROUP BY s.model ORDER BY s.model", args)),
            "latency": list(db.query(
                "SELECT st.session_id, st.idx, st.tool, st.error IS NOT NULL AS is_error, st.gen_seconds, "
                f"st.tool_seconds, st.tokens_out FROM steps st JOIN sessions s ON s.id = st.session_id{where} "
                "ORDER BY s.created_at DESC LIMIT 5000", args)),
        }

    # ---- annotations and jobs ----------------------------------------------------------------

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
