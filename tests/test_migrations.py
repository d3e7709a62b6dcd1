"""Schema versions: named migrations bring a file of any age to the current schema, once."""
from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from app.shared.studio_log import SCHEMA as STUDIO_TABLES
from app.shared.studio_log import StudioLog
from core.sessionlog import SessionLog
from core.sessionschema import SCHEMA as SESSION_TABLES


@pytest.fixture(params=["jobs with note", "jobs before note"])
def old_db(tmp_path, request) -> Path:
    """A Studio file as written before migrations existed (with or without the later `jobs.note`):
    sessions with the unread `trajectory_json` and no `scorer`, one finished session with a step, one job."""
    path = tmp_path / "old.db"
    con = sqlite3.connect(path)
    # the tables as first created, plus what the files of that time had and the current schema does not
    con.executescript(SESSION_TABLES + STUDIO_TABLES)
    con.execute("ALTER TABLE sessions ADD COLUMN trajectory_json TEXT")
    if request.param == "jobs with note":
        con.execute("ALTER TABLE jobs ADD COLUMN note TEXT")
    con.execute("INSERT INTO sessions (id, created_at, question, media_kind, media_json, status, answer, ground_truth, "
                "correct, n_steps, trajectory_json) VALUES ('s1', ?, 'q?', 'image', ?, 'done', '7', '7', 1, 1, '{}')",
                [time.time(), '{"kind": "image"}'])
    con.execute("INSERT INTO steps (session_id, idx, text) VALUES ('s1', 0, 'The tag reads 7. \\boxed{7}')")
    con.execute("INSERT INTO jobs (id, kind, cmd, status, created_at) VALUES ('j1', 'sft', '[]', 'done', ?)", [time.time()])
    con.commit()
    con.close()
    return path


def test_an_old_file_opens_with_its_rows_and_gains_the_new_columns(old_db):
    log = StudioLog(old_db)
    assert "scorer" in log.db.table("sessions").columns_dict
    assert "owner" in log.db.table("sessions").columns_dict
    triggers = {r[0]: r[1] for r in log.db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'")}
    assert 'UPDATE OF "question", "answer"' in triggers["sessions_au"] and 'UPDATE OF "text"' in triggers["steps_au"]
    assert "note" in log.db.table("jobs").columns_dict
    assert log.get_trajectory("s1").answer == "7" and log.get_trajectory("s1").correct is True
    assert log.get_job("j1")["status"] == "done"
    applied = {r["name"] for r in log.db.table("_sqlite_migrations").rows}
    assert applied == {"m001_sessions", "m002_scorer", "m003_owner", "m004_narrow_fts_triggers", "m005_fork_of",
                       "m006_confidence_and_familiarity", "m007_quota_key", "m001_studio_tables", "m002_jobs_note"}
    assert log.get_trajectory("s1").answer_confidence is None and log.get_trajectory("s1").familiar is None


def test_opening_again_applies_nothing(old_db):
    StudioLog(old_db)
    before = list(SessionLog(old_db).db.table("_sqlite_migrations").rows)
    StudioLog(old_db).close()
    assert list(SessionLog(old_db).db.table("_sqlite_migrations").rows) == before


def test_a_core_only_file_has_no_studio_tables_until_the_studio_opens_it(tmp_path):
    log = SessionLog(tmp_path / "eval.db")
    assert {"sessions", "steps", "images"} <= set(log.db.table_names())
    assert "annotations" not in log.db.table_names() and "trajectory_json" not in log.db.table("sessions").columns_dict
    StudioLog(tmp_path / "eval.db")
    assert {"annotations", "jobs", "metrics"} <= set(log.db.table_names())


def test_the_studio_and_eval_share_one_default_data_folder(monkeypatch):
    from core.sessionlog import default_data_dir

    monkeypatch.delenv("SPACE_ID", raising=False)
    assert default_data_dir() == Path(__file__).resolve().parents[1] / "data"
