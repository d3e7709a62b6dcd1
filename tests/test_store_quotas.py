"""The image store's quotas (app/public/quotas.py) on a real session log with real pictures: a
visitor's oldest finished sessions go first, shared pictures stay while a session refers to them,
running and recent sessions and operators' sessions are never evicted."""
from __future__ import annotations

import time

import pytest

from app import Studio
from app.public.limits import ServerLimits
from app.public.quotas import QuotaError, evict, make_room, key_bytes
from app.shared.studio_log import StudioLog
from core.backends.replay import ReplayBackend
from core.loop import LoopConfig, Task, run_to_end
from core.operations import PixelLimits
from core.recorder import Recorder
from tests.conftest import photo_like


def session(log: StudioLog, owner: str | None, seed: int, status: str = "done", age_s: float = 3600) -> str:
    task = Task(question="What is written?", image=photo_like(300, 200, seed=seed))
    traj = run_to_end(ReplayBackend(["\\boxed{x}"]), task, config=LoopConfig(pixels=PixelLimits.preset("tiny")),
                      store=log.images)
    rec = Recorder(log, "app")
    sid = rec.start(traj, owner=owner, quota_key=owner and f"key:{owner}")
    rec.finish(traj)
    log.db.execute("UPDATE sessions SET status = ?, created_at = created_at - ?, ended_at = ? WHERE id = ?",
                   [status, age_s, time.time() - age_s, sid])
    return sid


@pytest.fixture()
def studio(tmp_path):
    log = StudioLog(tmp_path / "studio.db")
    return Studio(log=log, data_dir=tmp_path, public=True, limits=ServerLimits(store_keep_s=600))


def ids(log: StudioLog) -> set[str]:
    return {r[0] for r in log.db.execute("SELECT id FROM sessions")}


def test_a_visitor_over_quota_loses_their_oldest_session_and_its_files(studio):
    log = studio.log
    old, new = session(log, "visitor:a", 1, age_s=7200), session(log, "visitor:a", 2)
    other = session(log, "visitor:b", 3, age_s=9000)
    one = key_bytes(log.db, "key:visitor:a") // 2
    studio.limits.store_bytes_per_visitor = one + one // 2
    old_files = [log.image_path(r[0]) for r in log.db.execute("SELECT sha FROM images")]
    make_room(studio, "key:visitor:a")
    assert ids(log) == {new, other}
    assert key_bytes(log.db, "key:visitor:a") <= studio.limits.store_bytes_per_visitor
    gone = [p for p in old_files if p is not None and not p.exists()]
    assert gone and all(log.image_path(p.stem) is None for p in gone)


def test_running_recent_and_operator_sessions_are_never_evicted(studio):
    log = studio.log
    running = session(log, "visitor:a", 1, status="running")
    recent = session(log, "visitor:a", 2, age_s=60)
    operator = session(log, "user:op", 3, age_s=9999)
    local = session(log, None, 4, age_s=9999)
    studio.limits.store_bytes_per_visitor = 1
    with pytest.raises(QuotaError, match="over 0 MB"):
        make_room(studio, "key:visitor:a")
    studio.limits.store_bytes_per_visitor, studio.limits.store_bytes = 10 ** 9, 1
    with pytest.raises(QuotaError, match="storage is full"):
        make_room(studio, "key:visitor:b")
    assert ids(log) == {running, recent, operator, local}


def test_a_picture_two_sessions_share_stays_until_both_are_gone(studio):
    log = studio.log
    first, second = session(log, "visitor:a", 7), session(log, "visitor:b", 7)  # the same picture
    shas = {r[0] for r in log.db.execute("SELECT sha FROM images")}
    evict(log, first)
    assert all(log.image_path(s) is not None for s in shas)  # the second session still shows them
    evict(log, second)
    assert not ids(log) and all(log.image_path(s) is None for s in shas)
