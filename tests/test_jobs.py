"""Jobs: real subprocesses with real SQLite rows. A tiny command writing metrics.jsonl, a crash, a
cancel that takes the whole process group down, jobs a dead app left running, and the Train tab
through the real server (a custom job, then `python -m train sft` on an annotation export).
"""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from app.training import charts as C
from app.training import jobs as J
from app.shared.studio_log import StudioLog
from core.sessionlog import pid_alive as _alive

ROOT = Path(__file__).resolve().parents[1]

WRITER = textwrap.dedent("""
    import json, os, pathlib, sys, time
    out = pathlib.Path(os.environ["STUDIO_JOB_OUT"])
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    for i in range(1, n + 1):
        with open(out / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"step": i, "time": time.time(), "loss": 1.0 / i, "reward": 0.1 * i,
                                "rapr": 0.5, "curiosity": 0.02, "penalty": -0.05}) + "\\n")
        (out / "progress.json").write_text(json.dumps({"done": i, "total": n}))
        print("step", i, flush=True)
        time.sleep(float(os.environ.get("STEP_SLEEP", "0.05")))
""")


@pytest.fixture()
def runner(tmp_path):
    return J.JobRunner(StudioLog(tmp_path / "studio.db"), tmp_path / "runs")


@pytest.fixture()
def writer(tmp_path):
    path = tmp_path / "writer.py"
    path.write_text(WRITER)
    return path


def test_job_writes_metrics_and_ends_done(runner, writer):
    jid = runner.launch("custom", [sys.executable, str(writer), "5"])
    job = runner.wait(jid, 30)
    assert job["status"] == "done" and job["exit_code"] == 0 and job["pid"] and job["pgid"] == job["pid"]
    assert job["cmd"] == [sys.executable, str(writer), "5"]
    view = runner.view(jid)
    assert [r["step"] for r in view["metrics"]] == [1, 2, 3, 4, 5]
    assert view["progress"] == {"done": 5, "total": 5} and "step 5" in view["log"]
    stored = runner.log.job_metrics(jid)
    assert {r["name"] for r in stored} == {"loss", "reward", "rapr", "curiosity", "penalty"} and len(stored) == 25
    fig = C.job_curves(view["metrics"])
    assert [a.text for a in fig.layout.annotations] == ["loss", "reward", "rapr", "curiosity", "penalty"]
    assert len(fig.data) == 10 and fig.layout.height >= 300  # raw + EMA per metric


def test_a_crash_is_failed_and_its_log_kept(runner):
    jid = runner.launch("custom", [sys.executable, "-c", "print('loading...', flush=True); 1/0"])
    job = runner.wait(jid, 30)
    assert job["status"] == "failed" and job["exit_code"] == 1
    log = Path(job["log_path"]).read_text()
    assert "loading..." in log and "ZeroDivisionError" in log
    bad = runner.launch("custom", ["/nonexistent/command"])
    job = runner.wait(bad, 30)
    assert job["status"] == "failed" and job["exit_code"] == 127


def test_cancel_kills_the_whole_process_group(runner, tmp_path):
    pids = tmp_path / "pids.txt"
    script = (f"import subprocess, sys, time; c = subprocess.Popen([sys.executable, '-c', 'import time; "
              f"time.sleep(60)']); open({str(pids)!r}, 'w').write(str(c.pid)); print('child', c.pid, flush=True); "
              "time.sleep(60)")
    jid = runner.launch("custom", [sys.executable, "-c", script])
    t0 = time.time()
    while not (pids.exists() and pids.read_text()) and time.time() - t0 < 20:
        time.sleep(0.05)
    child = int(pids.read_text())
    job = runner.log.get_job(jid)
    assert job["status"] == "running" and _alive(child)
    t0 = time.time()
    assert runner.cancel(jid, grace=5)
    assert time.time() - t0 < 5  # SIGTERM was enough
    job = runner.wait(jid, 10)
    assert job["status"] == "cancelled" and job["exit_code"] == -15
    assert not _alive(job["pid"]) and not _alive(child)
    assert runner.cancel(jid) is False  # not running any more


def test_jobs_a_dead_app_left_running_are_settled_at_start(tmp_path, writer):
    db = tmp_path / "studio.db"
    # an "app" process launches a job and dies at once (os._exit: no watcher thread survives)
    app = textwrap.dedent(f"""
        import os, sys
        from app.training.jobs import JobRunner
        from app.shared.studio_log import StudioLog
        r = JobRunner(StudioLog({str(db)!r}), {str(tmp_path / 'runs')!r})
        print(r.launch("custom", [sys.executable, {str(writer)!r}, "4"], env={{"STEP_SLEEP": "0.5"}}), flush=True)
        os._exit(0)
    """)
    out = subprocess.run([sys.executable, "-c", app], capture_output=True, text=True, timeout=60, cwd=ROOT)
    jid = out.stdout.strip().splitlines()[-1]
    # a second row whose process is long gone and left no exit status (the app and the job died together)
    log = StudioLog(db)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    log.create_job("ghost", "sft", ["python", "-m", "train", "sft"], out_dir=str(tmp_path / "ghost"))
    log.update_job("ghost", status="running", pid=dead.pid, pgid=dead.pid, started_at=time.time())

    runner = J.JobRunner(log, tmp_path / "runs")  # the restarted app
    assert runner.reconcile() == 1
    ghost = log.get_job("ghost")
    assert ghost["status"] == "failed" and ghost["note"] == J.ORPHANED
    assert log.get_job(jid)["status"] == "running"  # still alive: re-attached, not failed
    job = runner.wait(jid, 30)
    assert job["status"] == "done" and job["exit_code"] == 0  # from the wrapper's exit file
    assert len(runner.view(jid)["metrics"]) == 4


# ---- the Train tab through the real server ----------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _poll_until_ended(client, jid: str, timeout: float):
    t0 = time.time()
    while time.time() - t0 < timeout:
        table, md, progress, fig, log, _gain, _rl = client.predict(jid, 0.6, api_name="/train_poll")
        status = next(r[2] for r in table["data"] if r[0] == jid)
        if status not in ("queued", "running"):
            return status, md, progress, fig, log
        time.sleep(0.5)
    raise AssertionError(f"{jid} did not end in {timeout} s")


def test_train_tab_launches_polls_and_trains_on_an_export(tmp_path, writer):
    from gradio_client import Client

    from app import Studio
    from app.annotate import export as E
    from app.ui import build_app, launch_kwargs
    from tests.test_export import GOOD_BOX, WRONG, ANSWER_7, logged

    log = StudioLog(tmp_path / "studio.db")
    studio = Studio(log=log, data_dir=tmp_path, backend="replay", enable_training=True)
    sid = logged(log, [WRONG, ANSWER_7])
    log.add_annotation(sid, 0, "wrong box", corrected_box=GOOD_BOX)
    log.add_annotation(sid, None, "wrong answer", corrected_answer="3")
    export_dir = tmp_path / "exports" / "ann1"
    assert E.export_annotated(log, export_dir).records == 1
    demo = build_app(studio)
    demo.queue().launch(prevent_thread_lock=True, quiet=True, server_port=_free_port(), **launch_kwargs())
    try:
        client = Client(demo.local_url, verbose=False)
        # a generic command writing metrics.jsonl
        msg, table, jid = client.predict("custom", None, "", "tinyzoom", "", None, "", f"python {writer} 6", False,
                                         api_name="/train_launch")
        assert "launched" in msg and jid
        status, md, progress, fig, log_text = _poll_until_ended(client, jid, 30)
        assert status == "done" and "6 / 6" in progress and "step 6" in log_text and "6 metric rows" in md
        assert "reward" in json.dumps(fig)
        # the real SFT command on the exported annotation set (the dataset list offers it)
        from app.training.commands import datasets
        assert str(export_dir) in datasets(studio)
        msg, table, sft = client.predict("sft", "configs/sft_tiny_ci.json", str(export_dir), "tinyzoom", "", None,
                                         "max_steps=2 save_steps=100 vocab_size=400", "", False,
                                         api_name="/train_launch")
        assert "launched" in msg, msg
        job = log.get_job(sft)
        assert job["cmd"][1:6] == ["-m", "train", "sft", "--config", "configs/sft_tiny_ci.json"]
        assert f"data={export_dir}" in job["cmd"] and job["dataset"] == str(export_dir)
        status, md, _, fig, log_text = _poll_until_ended(client, sft, 240)
        assert status == "done", log_text[-3000:]
        assert {r["step"] for r in log.job_metrics(sft) if r["name"] == "loss"} == {1, 2}
        assert (Path(job["out_dir"]) / "final" / "model.safetensors").exists()
        # cancel through the API
        msg, table, slow = client.predict("custom", None, "", "tinyzoom", "", None, "",
                                          "python -c 'import time; time.sleep(60)'", False, api_name="/train_launch")
        time.sleep(0.5)
        msg, _ = client.predict(slow, api_name="/train_cancel")
        assert "cancelled" in msg and log.get_job(slow)["status"] == "cancelled"
    finally:
        demo.close()
