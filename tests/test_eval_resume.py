"""Killing an eval midway (SIGKILL, then Ctrl-C) and re-running it scores every item exactly once."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from core.evaluation.store import ItemsFile, RunFolder, RunFolderError
from tests.test_eval_fixtures import make_vstar

ROOT = Path(__file__).resolve().parents[1]
CROP = ('<tool_call>\n{"name": "crop_image_normalized", "arguments": {"bbox_2d": [0.1, 0.2, 0.5, 0.6], '
        '"target_image": 1}}\n</tool_call>')

# the real CLI, with a replay backend slowed down to a model's pace so the run can be stopped midway
SLOW_EVAL = """
import signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C as at a terminal, also when pytest was started
                                                          # in the background, where SIGINT comes in ignored
from core.backends.replay import ReplayBackend
_batch = ReplayBackend.generate_batch
def slow(self, batch, params):
    time.sleep(0.25)
    return _batch(self, batch, params)
ReplayBackend.generate_batch = slow
from core.cli import main
sys.exit(main(sys.argv[1:]))
"""


def lines(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", SLOW_EVAL, *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def stop_when(proc: subprocess.Popen, items: Path, at_least: int, sig: int, timeout: float = 60) -> int:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if len(lines(items)) >= at_least:
            os.kill(proc.pid, sig)
            break
        time.sleep(0.02)
    proc.stderr_text = proc.communicate(timeout=60)[1]
    return proc.returncode


def test_kill_midway_then_resume_scores_each_item_once(tmp_path):
    n = 12
    data, out, db = make_vstar(tmp_path, n=n), tmp_path / "out", tmp_path / "studio.db"
    replay = tmp_path / "turns.json"
    replay.write_text(json.dumps([CROP, "\\boxed{A}"]))
    args = ["eval", "--bench", "vstar", "--data", str(data), "--backend", "replay", "--replay", str(replay),
            "--out", str(out), "--db", str(db), "--batch", "2", "--quiet"]
    items = out / "items.jsonl"

    rc = stop_when(start(args), items, 3, signal.SIGKILL)  # a crash
    first = len(lines(items))
    assert rc == -signal.SIGKILL and 3 <= first < n, (rc, first)

    proc = start(args)  # Ctrl-C in the second run
    rc = stop_when(proc, items, first + 2, signal.SIGINT)
    second = len(lines(items))
    assert rc == 130 and first + 2 <= second < n, (rc, first, second, proc.stderr_text[-500:])

    done = subprocess.run([sys.executable, "-c", SLOW_EVAL, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    records = lines(items)
    assert Counter(r["id"] for r in records) == {f"vstar_{i}": 1 for i in range(n)}
    report = json.loads((out / "report.json").read_text())
    assert report["n"] == n and report["complete"] and report["accuracy"] == 0.5
    # the session log holds each item once too (a crash between log and file is replaced, not duplicated)
    from core.sessionlog import SessionLog
    from core.sessionquery import SessionFilter
    rows, total = SessionLog(db).list_sessions(SessionFilter(client="eval", limit=100))
    assert total == n and len({r["id"] for r in rows}) == n


def test_torn_last_line_is_cut_and_rerun(tmp_path):
    path = tmp_path / "items.jsonl"
    path.write_text(json.dumps({"id": "a", "sample": 0, "score": 1}) + "\n" + '{"id": "b", "sam')
    f = ItemsFile(path)
    assert "a" in f and "b" not in f
    f.append({"id": "b", "sample": 0, "score": 0})
    f.close()
    assert [json.loads(x)["id"] for x in path.read_text().splitlines()] == ["a", "b"]
    with pytest.raises(RunFolderError, match="already"):
        g = ItemsFile(path)
        try:
            g.append({"id": "a", "sample": 0})
        finally:
            g.close()


def test_one_writer_per_folder(tmp_path):
    ident = {"bench": "vstar", "model": "m", "tools": True, "samples": 1, "data": "d"}
    with RunFolder(tmp_path / "out", ident):
        with pytest.raises(RunFolderError, match="in use"):
            RunFolder(tmp_path / "out", ident)
    with RunFolder(tmp_path / "out", ident) as again:  # released on close
        assert again.run_id
