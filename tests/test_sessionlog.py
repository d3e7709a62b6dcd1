"""The SQLite session log with a real DB file: step-by-step logging, crashes, search, filters, round trips."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import sqlite_utils

from core.backends.base import GenerationParams
from core.backends.replay import ReplayBackend
from core.loop import Episode, LoopConfig, Task, run_to_end
from core.media import Video, load_image
from core.protocol import format_tool_call
from app.shared.studio_log import StudioLog
from core.recorder import Recorder
from core.sessionquery import SessionFilter
from tests.conftest import numbered_frames

ROOT = Path(__file__).resolve().parents[1]


def crop_turn(bbox, target=1):
    return "I zoom on the sign.\n\n" + format_tool_call("crop_image_normalized", {"bbox_2d": bbox, "target_image": target})


TURNS = [crop_turn([0.1, 0.2, 0.3, 0.4]),
         "<tool_call>\n{\"name\": \"crop_image_normalized\", \"arguments\": {bbox_2d: 1}\n</tool_call>",  # error turn
         crop_turn([0.5, 0.5, 0.9, 0.9], target=2),
         "The sign says WOOLSHOPS. \\boxed{WOOLSHOPS}"]


@pytest.fixture
def log(tmp_path):
    return StudioLog(tmp_path / "studio.db")


def run_logged(log, image, turns=TURNS, question="What does the sign say?", truth="WOOLSHOPS", client="app",
               model=None):
    backend = ReplayBackend(turns)
    ep = Episode(Task(question=question, image=image, answer=truth), LoopConfig(), log.images, "replay",
                 model or backend.model_id)
    recorder = Recorder(log, client)
    sid = recorder.start(ep.trajectory)
    while not ep.done:
        step = ep.advance(backend.generate(ep.messages, GenerationParams()))
        recorder.step(sid, step)
    traj = ep.trajectory
    traj.correct = (traj.answer == truth) if truth else None
    recorder.finish(traj)
    return traj


def test_session_logged_step_by_step_with_images_and_round_trip(log, photo_path):
    image = load_image(photo_path)
    traj = run_logged(log, image)
    row = log.session(traj.id)
    assert row["status"] == "done" and row["answer"] == "WOOLSHOPS" and row["correct"] == 1
    assert (row["n_steps"], row["n_ops"], row["n_errors"]) == (4, 2, 1)
    steps = log.steps(traj.id)
    assert [s["idx"] for s in steps] == [0, 1, 2, 3]
    assert json.loads(steps[0]["box_px"]) == traj.steps[0].box_px and steps[1]["error"]
    # every image the trajectory references is a file in the store and a row with a WebP thumbnail
    for ref in traj.image_refs():
        img = log.db.execute("SELECT path, width, height, thumb FROM images WHERE sha = ?", [ref.sha]).fetchone()
        assert img is not None and Path(img[0]).exists() and (img[1], img[2]) == (ref.width, ref.height)
        assert img[3][:4] == b"RIFF" and len(img[3]) < 20_000
    assert log.get_trajectory(traj.id).to_dict() == traj.to_dict()
    assert "trajectory_json" not in row  # the rows are the record; no second copy to drift


def test_round_trip_of_a_video_session(log, tmp_path):
    video = Video.from_frames(list(numbered_frames(12)), fps=2)
    turns = [format_tool_call("select_frames", {"target_frames": [2, 5, 9]}), crop_turn([0.0, 0.0, 0.5, 0.5], 2),
             "\\boxed{7}"]
    traj = run_to_end(ReplayBackend(turns), Task(question="Which number?", video=video), store=log.images)
    Recorder(log, "eval:r1").write(traj)
    back = log.get_trajectory(traj.id)
    assert back.to_dict() == traj.to_dict()
    assert back.steps[0].frames == [2, 5, 9] and back.media.frame_times == traj.media.frame_times
    # re-importing replaces, never duplicates
    Recorder(log, "eval:r1").write(traj)
    assert log.db.execute("SELECT count(*) FROM steps WHERE session_id = ?", [traj.id]).fetchone()[0] == 3


CRASHING_WRITER = textwrap.dedent("""
    import os, sys
    from core.backends.base import GenerationParams
    from core.backends.replay import ReplayBackend
    from core.loop import Episode, LoopConfig, Task
    from core.media import load_image
    from core.recorder import Recorder
    from core.sessionlog import SessionLog
    log = SessionLog({db!r})
    recorder = Recorder(log, "app")
    ep = Episode(Task(question="crash?", image=load_image({image!r})), LoopConfig(), log.images, "replay", "m")
    sid = recorder.start(ep.trajectory)
    backend = ReplayBackend({turns!r})
    for _ in range(2):
        recorder.step(sid, ep.advance(backend.generate(ep.messages, GenerationParams())))
    print(sid, flush=True)
    # the third step is half done when the process dies
    text = backend.generate(ep.messages, GenerationParams())
    os.kill(os.getpid(), 9)
""")


def test_killed_writer_keeps_finished_steps_and_is_marked_unfinished(tmp_path, photo_path):
    db = tmp_path / "crash.db"
    script = CRASHING_WRITER.format(root=str(ROOT), db=str(db), image=str(photo_path), turns=TURNS)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    sid = proc.stdout.strip()
    log = StudioLog(db)
    assert log.session(sid)["status"] == "running"
    # a live writer's session is left alone; the dead one is closed
    live = StudioLog(db)
    ep = Episode(Task(question="alive", image=load_image(photo_path)), LoopConfig(), live.images)
    live_id = Recorder(live, "app").start(ep.trajectory)
    assert log.mark_unfinished() == 1
    assert log.session(sid)["status"] == "unfinished" and log.session(live_id)["status"] == "running"
    traj = log.get_trajectory(sid)
    assert [s.index for s in traj.steps] == [0, 1] and traj.steps[0].box_px and traj.steps[1].error
    assert traj.status == "unfinished"
    # a closed browser: mark by id
    assert log.mark_unfinished([live_id]) == 1 and log.mark_unfinished([live_id]) == 0
    # the DB is consistent: the FK check finds nothing, WAL is on
    assert log.db.execute("PRAGMA foreign_key_check").fetchall() == []
    assert log.db.journal_mode == "wal"


def test_full_text_search_and_filters(log, photo_path):
    image = load_image(photo_path)
    a = run_logged(log, image, model="m-a")
    b = run_logged(log, image, turns=["No tools needed. \\boxed{FISH}"], question="Which animal is shown?",
                   truth="sheep", model="m-b")
    c = run_logged(log, image, turns=["Plain answer \\boxed{3}"], question="How many cars?", truth=None, model="m-a")
    log.add_annotation(b.id, label="wrong answer", comment="it is a sheep")

    def ids(**kw):
        rows, total = log.list_sessions(SessionFilter(**kw))
        assert total == len(rows)
        return {r["id"] for r in rows}

    assert ids() == {a.id, b.id, c.id}
    assert ids(text="sign") == {a.id}  # question
    assert ids(text="zoom") == {a.id}  # reasoning text of a step
    assert ids(text="animals") == {b.id}  # porter stemming
    assert ids(text='"unbalanced ( . *') == set()  # user input never raises an FTS syntax error
    assert ids(model="m-a") == {a.id, c.id}
    assert ids(outcome="correct") == {a.id} and ids(outcome="incorrect") == {b.id} and ids(outcome="unknown") == {c.id}
    assert ids(min_ops=1) == {a.id} and ids(max_ops=0) == {b.id, c.id}
    assert ids(has_errors=True) == {a.id} and ids(has_errors=False) == {b.id, c.id}
    assert ids(annotated=True) == {b.id} and ids(annotated=False) == {a.id, c.id}
    assert ids(tool="crop_image_normalized") == {a.id}
    assert ids(since=time.time() + 60) == set() and ids(until=time.time() + 60) == {a.id, b.id, c.id}
    rows, total = log.list_sessions(SessionFilter(limit=2, offset=2))
    assert total == 3 and len(rows) == 1
    stats = log.stats()
    assert {r["n_ops"]: r["sessions"] for r in stats["ops"]} == {0: 2, 2: 1}
    assert {r["model"]: r["rapr"] for r in stats["rapr_by_model"]} == {"m-a": 0.5, "m-b": 0.0}
    assert len(stats["latency"]) == 6
    # deleting a session cascades to its steps, annotations and search rows
    log.delete_session(b.id)
    assert ids(text="animals") == set() and log.list_annotations(b.id) == []


def test_annotations_and_jobs(log, photo_path):
    traj = run_logged(log, load_image(photo_path))
    aid = log.add_annotation(traj.id, step_idx=0, label="wrong box", corrected_box=[0.1, 0.1, 0.2, 0.2], annotator="ann")
    (row,) = log.list_annotations(traj.id)
    assert row["id"] == aid and row["corrected_box"] == [0.1, 0.1, 0.2, 0.2] and row["step_idx"] == 0
    with pytest.raises(Exception):  # FK: an annotation needs a real session
        log.add_annotation("no-such-session", label="other")
    log.create_job("j1", "sft", ["python", "-m", "train", "sft"], cwd="/tmp", dataset="d")
    log.update_job("j1", status="running", pid=123)
    assert log.get_job("j1")["status"] == "running" and log.get_job("j1")["cmd"][2] == "train"
    assert [j["id"] for j in log.list_jobs("running")] == ["j1"]


def test_concurrent_threads_share_one_log(log, photo_path):
    from concurrent.futures import ThreadPoolExecutor
    image = load_image(photo_path)
    with ThreadPoolExecutor(4) as pool:
        trajs = list(pool.map(lambda i: run_logged(log, image, question=f"q{i}"), range(8)))
    for t in trajs:
        assert log.get_trajectory(t.id).to_dict() == t.to_dict()
    assert log.db.execute("SELECT count(*) FROM steps").fetchone()[0] == 8 * 4


def test_db_opens_with_plain_sqlite_utils(log, photo_path):
    traj = run_logged(log, load_image(photo_path))
    db = sqlite_utils.Database(log.path)
    fks = {(fk.table, fk.other_table) for fk in db.table("steps").foreign_keys}
    assert ("steps", "sessions") in fks
    assert db.table("sessions").count == 1 and db.table("steps").count == len(traj.steps)


def test_step_images_are_registered_with_no_image_work_inside_the_transaction(log, photo_path, tmp_path):
    calls = []
    thumb, made_here = log.images.thumb, log.images.made_here
    log.images.thumb = lambda sha: calls.append(log.db.conn.in_transaction) or thumb(sha)
    log.images.made_here = lambda sha: calls.append(log.db.conn.in_transaction) or made_here(sha)
    image = load_image(photo_path)
    traj = run_logged(log, image)
    assert calls and not any(calls)  # every thumbnail was ready before its transaction began
    shas = {r.sha for s in traj.steps for r in s.images}
    rows = {r["sha"]: r for r in log.db.query("SELECT sha, path, thumb FROM images")}
    assert shas <= set(rows) and all(Path(rows[s]["path"]).is_file() for s in shas)
    # another process (no thumbnails in memory) decodes the file and makes the same thumbnail
    other = StudioLog(tmp_path / "other.db", images_dir=log.images.root)
    sha = next(iter(shas))
    assert other.images.thumb(sha) == rows[sha]["thumb"]


def test_a_picture_registered_by_another_process_is_not_decoded_again(log, photo_path):
    traj = run_logged(log, load_image(photo_path))
    step = next(s for s in traj.steps if s.images)
    other = StudioLog(log.path, images_dir=log.images.root)  # same files, no thumbnails in memory
    decoded = []
    thumb = other.images.thumb
    other.images.thumb = lambda sha: decoded.append(sha) or thumb(sha)
    Recorder(other).step(traj.id, step)
    assert decoded == []  # found registered: its file is not read back
    assert other.db.execute("SELECT count(*) FROM images WHERE sha = ?", [step.images[0].sha]).fetchone()[0] == 1


def test_counter_updates_leave_the_search_index_alone_and_answers_stay_searchable(log, photo_path):
    db = log.db
    sql = {r[0]: r[1] for r in db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'")}
    assert 'UPDATE OF "question", "answer"' in sql["sessions_au"] and 'UPDATE OF "text"' in sql["steps_au"]
    traj = run_logged(log, load_image(photo_path))
    rows, total = log.list_sessions(SessionFilter(text="woolshops"))
    assert total == 1 and rows[0]["id"] == traj.id
    # a log made before gets the narrow triggers from migration m004 (tests/test_migrations.py)
