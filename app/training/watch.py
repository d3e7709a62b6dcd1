"""What the Train tab shows of its jobs: the jobs table, a job's header and progress bar, and an RL
job's alarms and curves against its own curiosity target H."""
from __future__ import annotations

import json
import time
from pathlib import Path

from app import Studio
from app.training import alarms as AL
from app.training import jobs as J

JOB_COLUMNS = ["id", "kind", "status", "exit", "dataset", "started", "duration", "note"]


def jobs_table(studio: Studio) -> list[list]:
    rows = []
    now = time.time()
    for j in studio.log.list_jobs()[:200]:
        start = j["started_at"] or j["created_at"]
        end = j["ended_at"] or (now if j["status"] == "running" else start)
        rows.append([j["id"], j["kind"], j["status"], "" if j["exit_code"] is None else j["exit_code"],
                     j["dataset"] or "", time.strftime("%m-%d %H:%M:%S", time.localtime(start)),
                     f"{end - start:.0f} s", (j["note"] or "")[:60]])
    return rows


def progress_html(progress: dict | None, status: str) -> str:
    if not progress or not progress.get("total"):
        return f"<div>status <b>{status}</b></div>"
    share = min(1.0, progress["done"] / progress["total"])
    return (f"<div>status <b>{status}</b> · {progress['done']} / {progress['total']} ({share:.0%})</div>"
            f"<div style='background:#e5e7eb;border-radius:4px;height:12px;margin-top:4px'>"
            f"<div style='background:#4f46e5;width:{share * 100:.1f}%;height:12px;border-radius:4px'></div></div>")


def job_markdown(job: dict, n_rows: int) -> str:
    note = f"\n\n⚠️ {job['note']}" if job.get("note") else ""
    code = "" if job["exit_code"] is None else f" (exit {job['exit_code']})"
    return (f"**{job['id']}** · {job['kind']} · **{job['status']}**{code} · pid {job['pid']} · "
            f"{n_rows} metric rows\n\n`{J.preview(job['cmd'])}`\n\nlog `{job['log_path']}` · metrics "
            f"`{job['metrics_path']}`{note}")


def rl_target(job: dict) -> float:
    """The RL run's curiosity target H (from `<out>/rl_config.json`; 0.3, the release's, when unreadable)."""
    config = Path(job.get("out_dir") or ".") / "rl_config.json"
    try:
        return float(json.loads(config.read_text()).get("H", 0.3)) if config.exists() else 0.3
    except (ValueError, TypeError, OSError):
        return 0.3


def rl_alarms(job: dict, rows: list[dict]) -> list[AL.Alarm]:
    """Collapse alarms of an RL job, with the run's own H."""
    if job.get("kind") != "rl":
        return []
    return AL.collapse_alarms(rows, AL.AlarmSettings(H=rl_target(job)))


def rl_curves(job: dict, rows: list[dict]):
    """An RL job's rollout RaPR per step against H and its eval accuracy per eval step (None for
    other jobs)."""
    if job.get("kind") != "rl":
        return None
    from app.training.rl_curves import rl_figure

    return rl_figure({job["id"]: rows}, rl_target(job), title=f"RaPR vs H · eval accuracy · {job['id']}")


def gain_of(studio: Studio, final: str) -> dict | None:
    """The newest finished gain result whose fine-tuned model is `final`."""
    for job in studio.log.list_jobs(status="done"):
        path = Path(job["out_dir"] or ".") / "gain.json"
        if job["kind"] == "gain" and path.is_file():
            result = json.loads(path.read_text(encoding="utf-8"))
            if Path(result.get("tuned_model", "")) == Path(final):
                return result
    return None
