"""The one way a session is written to the log, whoever produces it: the Studio's Ask tab, evaluation,
RL rollouts, imports and tests.

    rec = Recorder(log, client="eval:run1")
    sid = rec.start(traj)            # the session row, status running, before the first token
    rec.step(sid, step)              # each finished step: one transaction with its images and counters
    rec.finish(traj)                 # status, answer, verdict and scorer; steps not yet logged are added
    rec.write(traj)                  # or a trajectory that already ended, at once
    rec.read(sid)                    # the Trajectory back, also for a session that never finished

A process killed mid-session keeps every finished step; `SessionLog.mark_unfinished` closes such
sessions later. Images are registered (row + WebP thumbnail) when a step or session refers to them.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict
from typing import Iterable

from core.paths import is_sha
from core.sessionlog import SessionLog, _js
from core.trajectory import ImageRef, Step, Trajectory

_STEP_COLS = ("session_id", "idx", "text", "tool", "arguments", "error", "observation", "target_image", "box_norm",
              "box_px", "source_box_px", "frames", "image_shas", "tokens_in", "tokens_out", "gen_seconds",
              "tool_seconds", "finish_reason", "started_at", "mean_logprob", "unsure")
_STEP_SQL = (f"INSERT OR REPLACE INTO steps ({', '.join(_STEP_COLS)}) "
             f"VALUES ({', '.join('?' * len(_STEP_COLS))})")


def _bit(value: bool | None) -> int | None:
    return None if value is None else int(value)


class Recorder:
    """Writes sessions of one client (app, eval[:run], rl, import, ...) into a SessionLog."""

    def __init__(self, log: SessionLog, client: str = "app") -> None:
        self.log, self.client = log, client

    def _image_rows(self, refs: Iterable[ImageRef | None]) -> list[list]:
        """images rows for refs whose files are in the store and not yet registered, made before the
        transaction that inserts them (no image work inside it; a step commits only once its files exist).
        A picture this process just stored (its thumbnail in memory) skips the lookup: the insert
        ignores one already registered."""
        rows, seen, store = [], set(), self.log.images
        for ref in refs:
            if ref is None or ref.sha in seen or not is_sha(ref.sha):
                continue
            seen.add(ref.sha)
            thumb = store.made_here(ref.sha)
            if thumb is None and self.log.db.execute("SELECT 1 FROM images WHERE sha = ?", [ref.sha]).fetchone():
                continue
            path = store.path(ref.sha)
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                continue  # made with a memory store elsewhere: the step keeps the sha only
            rows.append([ref.sha, str(path), ref.width, ref.height, size,
                         thumb if thumb is not None else store.thumb(ref.sha), time.time()])
        return rows

    def _insert_images(self, rows: list[list]) -> None:
        self.log.db.conn.executemany("INSERT OR IGNORE INTO images (sha, path, width, height, bytes, thumb, "
                                     "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)", rows)

    def start(self, traj: Trajectory, compare_of: str | None = None, owner: str | None = None,
              quota_key: str | None = None) -> str:
        """Insert the session row (status running) before the first step is generated; `owner` is
        the visitor who asked (public mode shows visitors their own sessions only), `quota_key` whom
        its stored pictures count against (public mode's per-visitor quota)."""
        m = traj.media
        media_ref = m.image or (m.overview[0] if m.overview else None)
        fork = traj.meta.get("fork_of") if isinstance(traj.meta.get("fork_of"), dict) else {}
        row = {
            "id": traj.id, "created_at": traj.created_at, "question": traj.question, "choices": _js(traj.choices),
            "media_kind": m.kind, "media_path": m.path, "media_sha": media_ref.sha if media_ref else None,
            "media_json": json.dumps(asdict(m)), "model": traj.model, "backend": traj.backend, "client": self.client,
            "status": "running", "ground_truth": traj.ground_truth, "tools_enabled": int(traj.tools_enabled),
            "guideline": traj.guideline, "config_json": json.dumps(traj.config), "meta_json": json.dumps(traj.meta),
            "compare_of": compare_of or traj.meta.get("compare_of"), "host": self.log.host, "pid": os.getpid(),
            "owner": owner, "quota_key": quota_key, "fork_of": fork.get("session"), "fork_step": fork.get("step"),
            "familiar": _bit(traj.familiar), "familiarity": traj.familiarity,
        }
        db = self.log.db
        rows = self._image_rows([m.image, m.model_view, *m.overview])
        with self.log._tx():
            self._insert_images(rows)
            db.execute(f"INSERT INTO sessions ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                       list(row.values()))
        return traj.id

    def _insert_step(self, session_id: str, step: Step) -> None:
        self.log.db.execute(_STEP_SQL, [
            session_id, step.index, step.text, step.tool, _js(step.arguments), step.error, step.observation,
            step.target_image, _js(step.box_norm), _js(step.box_px), _js(step.source_box_px), _js(step.frames),
            json.dumps([[r.sha, r.width, r.height] for r in step.images]), step.tokens_in, step.tokens_out,
            step.gen_seconds, step.tool_seconds, step.finish_reason, step.started_at, step.mean_logprob,
            _js(step.unsure)])

    def step(self, session_id: str, step: Step) -> None:
        """One transaction: the step row, its image rows, and the session's running counters."""
        db = self.log.db
        rows = self._image_rows(step.images)
        with self.log._tx():
            self._insert_images(rows)
            self._insert_step(session_id, step)
            db.execute(
                "UPDATE sessions SET n_steps = n_steps + 1, n_ops = n_ops + ?, n_errors = n_errors + ?, "
                "tokens_in = tokens_in + ?, tokens_out = tokens_out + ?, seconds = seconds + ? WHERE id = ?",
                [int(step.is_operation), int(bool(step.error)), step.tokens_in, step.tokens_out,
                 step.gen_seconds + step.tool_seconds, session_id])

    def finish(self, traj: Trajectory) -> None:
        """Close the session with its status and answer; steps not yet logged are added first."""
        db = self.log.db
        rows = self._image_rows([ref for step in traj.steps for ref in step.images])
        with self.log._tx():
            self._insert_images(rows)
            logged = {r[0] for r in db.execute("SELECT idx FROM steps WHERE session_id = ?", [traj.id])}
            for step in traj.steps:
                if step.index not in logged:
                    self._insert_step(traj.id, step)
            db.execute(
                "UPDATE sessions SET status = ?, error = ?, answer = ?, ground_truth = ?, correct = ?, scorer = ?, "
                "ended_at = ?, n_steps = ?, n_ops = ?, n_errors = ?, tokens_in = ?, tokens_out = ?, seconds = ?, "
                "meta_json = ?, answer_confidence = ?, familiar = ?, familiarity = ? WHERE id = ?",
                [traj.status if traj.status != "running" else "done", traj.error, traj.answer, traj.ground_truth,
                 _bit(traj.correct), traj.scorer, time.time(), len(traj.steps),
                 traj.n_ops, traj.n_errors, sum(s.tokens_in for s in traj.steps), sum(s.tokens_out for s in traj.steps),
                 sum(s.gen_seconds + s.tool_seconds for s in traj.steps), json.dumps(traj.meta),
                 traj.answer_confidence, _bit(traj.familiar), traj.familiarity, traj.id])

    def write(self, traj: Trajectory) -> str:
        """Store a whole trajectory at once (imports, eval). Re-importing the same id replaces it."""
        db = self.log.db
        with self.log._tx():
            db.execute("DELETE FROM sessions WHERE id = ?", [traj.id])
            self.start(traj)
            self.finish(traj)
        return traj.id

    def read(self, session_id: str) -> Trajectory:
        return self.log.get_trajectory(session_id)
