"""Training and evaluation jobs: detached subprocesses of the real commands, one SQLite row each.

Generic on purpose: a job is an argv list plus an out folder where the command writes
`metrics.jsonl` (one JSON object per line: `step`, `time`, any numeric keys) and optionally
`progress.json` ({"done", "total"}); docs/protocol.md, section 6. The runner never imports what
it runs.

- `launch` starts `argv` in its own process group (`start_new_session`), stdout and stderr to
  `<out>/job.log` (a file, never a pipe: a full pipe blocks the child). A tiny `sh` wrapper writes
  the exit status to `<out>/exit_code`, so a job that outlives the app still ends with a status.
- A watcher thread waits on the child and sets `done` (exit 0) or `failed` (with the log kept).
- `cancel` sends SIGTERM to the group, then SIGKILL after a grace period; the row says `cancelled`.
- `reconcile` (at app start and on each poll) settles rows left `running` whose process is gone:
  from `<out>/exit_code` when the wrapper wrote one, else `failed` ("the app stopped while it ran").
"""
from __future__ import annotations

import json
import logging
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from app.shared.studio_log import StudioLog
from core.sessionlog import pid_alive

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
KINDS = ("sft", "rl", "eval", "data", "gain", "custom")
WRAPPER = '"$@"; code=$?; echo "$code" > "$0.tmp" && mv "$0.tmp" "$0"; exit "$code"'
ORPHANED = "the process ended while no app watched it and left no exit status (the app stopped while it ran?)"


# ---- commands -------------------------------------------------------------------------------------

def python() -> str:
    return sys.executable


def train_command(kind: str, config: str, out: str, dataset: str | None = None, model: str | None = None,
                  extra: list[str] = ()) -> list[str]:
    """`python -m train sft|rl`: everything it writes, the final model included, lands in `out`."""
    cmd = [python(), "-m", "train", kind, "--config", config, f"out={out}", f"final_dir={out}/final"]
    return cmd + ([f"data={dataset}"] if dataset else []) + ([f"model={model}"] if model else []) + list(extra)


FRESH_TRAIN = 400
FRESH_SYNTH = ["--train", str(FRESH_TRAIN), "--validation", "0", "--test", "64", "--seed", "0"]
"""The Studio's small TinyZoom set (train/mix.py: FRESH builds the same when a fine-tune's mix folder
is missing): records to mix into a corrections fine-tune and the gain view's own split."""


def synth_command(out: str, data_dir: str, extra: list[str] = ()) -> list[str]:
    """Generate TinyZoom (train and held-out test split) into `data_dir`; the job's log stays in `out`."""
    return [python(), "-m", "train", "synth", "--out", data_dir, *FRESH_SYNTH, "--workers", "2", *extra]


def gain_command(out: str, base: str, tuned: str, export: str | None, own: str | None, data: list[str] = (),
                 limit: int | None = None, extra: list[str] = ()) -> list[str]:
    """`python -m app.training.gain`: the run's model against its start model on the same items (the
    export's own questions, items like them, the own split)."""
    cmd = [python(), "-m", "app.training.gain", "--base", base, "--tuned", tuned, "--out", out]
    cmd += (["--export", export] if export else []) + (["--own", own] if own else [])
    for d in data:
        cmd += ["--data", d]
    return cmd + (["--limit", str(int(limit))] if limit else []) + list(extra)


def eval_command(bench: str, out: str, data: str | None = None, model: str | None = None,
                 limit: int | None = None, extra: list[str] = ()) -> list[str]:
    cmd = [python(), "-m", "core", "eval", "--bench", bench, "--out", out]
    if data:
        cmd += ["--data", data]
    if model:
        cmd += ["--model", model]
    if limit:
        cmd += ["--limit", str(int(limit))]
    return cmd + list(extra)


def preview(cmd: list[str]) -> str:
    """The exact command line, as one would type it."""
    return shlex.join(["python" if c == python() else c for c in cmd])


# ---- reading a job's files -------------------------------------------------------------------------

def read_metrics(path: str | Path | None) -> list[dict]:
    """Rows of metrics.jsonl with a numeric step; a half-written last line is skipped."""
    if not path or not Path(path).exists():
        return []
    rows = []
    for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), (int, float)):
            rows.append(row)
    return rows


def read_progress(out_dir: str | Path | None) -> dict | None:
    path = Path(out_dir) / "progress.json" if out_dir else None
    if path is None or not path.exists():
        return None
    try:
        p = json.loads(path.read_text())
        return {"done": int(p["done"]), "total": int(p["total"])}
    except (ValueError, KeyError, TypeError):
        return None


def tail(path: str | Path | None, lines: int = 200, max_bytes: int = 64_000) -> str:
    """The last lines of a log, read from the end of the file."""
    if not path or not Path(path).exists():
        return ""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - max_bytes))
        data = f.read().decode("utf-8", errors="replace")
    return "\n".join(data.splitlines()[-lines:])


# ---- the runner ------------------------------------------------------------------------------------

@dataclass
class JobRunner:
    log: StudioLog
    runs_dir: Path  # default parent of out folders
    cwd: Path = ROOT

    def __post_init__(self) -> None:
        self.runs_dir = Path(self.runs_dir)
        self._procs: dict[str, subprocess.Popen] = {}
        self._lock = threading.Lock()

    def new_out_dir(self, kind: str) -> tuple[str, Path]:
        job_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{kind}-{uuid.uuid4().hex[:6]}"
        return job_id, self.runs_dir / job_id

    def launch(self, kind: str, cmd: list[str], out_dir: str | Path | None = None, dataset: str | None = None,
               job_id: str | None = None, env: dict | None = None) -> str:
        """Start the command detached; returns the job id (its row is 'running', or 'failed' if it
        could not start, with the reason in the log)."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}")
        if not cmd:
            raise ValueError("empty command")
        if job_id is None or out_dir is None:
            new_id, new_out = self.new_out_dir(kind)
            job_id, out_dir = job_id or new_id, out_dir or new_out
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        log_path, exit_file = out / "job.log", out / "exit_code"
        exit_file.unlink(missing_ok=True)
        self.log.create_job(job_id, kind, list(cmd), cwd=str(self.cwd), log_path=str(log_path),
                            metrics_path=str(out / "metrics.jsonl"), out_dir=str(out), dataset=dataset)
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "STUDIO_JOB_ID": job_id,
                    "STUDIO_JOB_OUT": str(out), **(env or {})}
        with open(log_path, "ab") as log_f:
            log_f.write(f"$ {preview(cmd)}\n".encode())
            log_f.flush()
            try:
                proc = subprocess.Popen(["/bin/sh", "-c", WRAPPER, str(exit_file), *cmd], cwd=self.cwd,
                                        stdout=log_f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        start_new_session=True, env=full_env)
            except OSError as e:
                log_f.write(f"cannot start: {e}\n".encode())
                self.log.update_job(job_id, status="failed", note=f"cannot start: {e}", ended_at=time.time())
                return job_id
        self.log.update_job(job_id, status="running", pid=proc.pid, pgid=os.getpgid(proc.pid),
                            started_at=time.time())
        with self._lock:
            self._procs[job_id] = proc
        threading.Thread(target=self._watch, args=(job_id, proc), daemon=True, name=f"job-{job_id}").start()
        return job_id

    def _watch(self, job_id: str, proc: subprocess.Popen) -> None:
        code = proc.wait()
        self._finish(job_id, code)
        with self._lock:
            self._procs.pop(job_id, None)

    def _finish(self, job_id: str, code: int | None, note: str | None = None) -> None:
        job = self.log.get_job(job_id)
        if job is None:
            return
        status = job["status"]
        if status not in ("cancelled", "done", "failed"):
            status = "done" if code == 0 else "failed"
        if code is not None and code < 0 and not note:
            note = f"killed by signal {-code}"
        self.log.update_job(job_id, status=status, exit_code=code, ended_at=job["ended_at"] or time.time(),
                            **({"note": note} if note else {}))
        try:
            self.log.add_metrics(job_id, read_metrics(job["metrics_path"]))
        except Exception as e:  # a metrics copy must never hide the job's status
            logger.warning("job %s: metrics not copied to SQLite: %s", job_id, e)

    def cancel(self, job_id: str, grace: float = 10.0) -> bool:
        """SIGTERM the job's process group, SIGKILL after `grace` seconds; False if not running."""
        job = self.log.get_job(job_id)
        if job is None or job["status"] != "running" or not job["pgid"]:
            return False
        self.log.update_job(job_id, status="cancelled", ended_at=time.time(), note="cancelled from the app")
        pgid = job["pgid"]
        try:
            os.killpg(pgid, signal.SIGTERM)
        except ProcessLookupError:
            return True
        deadline = time.time() + grace
        while time.time() < deadline:
            if not _group_alive(pgid):
                break
            time.sleep(0.1)
        else:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return True

    def reconcile(self) -> int:
        """Settle 'running' rows whose process is gone and that no thread of this app watches."""
        n = 0
        for job in self.log.list_jobs(status="running"):
            with self._lock:
                watched = job["id"] in self._procs
            if watched or pid_alive(job["pid"]):
                continue
            exit_file = Path(job["out_dir"] or ".") / "exit_code"
            code = None
            if exit_file.exists():
                try:
                    code = int(exit_file.read_text().strip())
                except ValueError:
                    code = None
            self._finish(job["id"], code, None if code is not None else ORPHANED)
            n += 1
        return n

    def wait(self, job_id: str, timeout: float = 60.0) -> dict:
        """Block until the job leaves 'queued'/'running' (tests and scripts)."""
        t0 = time.time()
        while time.time() - t0 < timeout:
            self.reconcile()
            job = self.log.get_job(job_id)
            with self._lock:
                watched = job_id in self._procs
            if job["status"] not in ("queued", "running") and not watched:
                return job
            time.sleep(0.1)
        raise TimeoutError(f"job {job_id} still {self.log.get_job(job_id)['status']} after {timeout} s")

    def view(self, job_id: str) -> dict:
        """Row, progress, metrics rows and log tail of one job (what the Train tab polls)."""
        self.reconcile()
        job = self.log.get_job(job_id)
        if job is None:
            raise KeyError(f"no job {job_id!r}")
        return {"job": job, "progress": read_progress(job["out_dir"]), "metrics": read_metrics(job["metrics_path"]),
                "log": tail(job["log_path"])}


def _group_alive(pgid: int) -> bool:
    """Any live (non-zombie) process left in the group."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    proc = Path("/proc")
    if not proc.is_dir():
        return True
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False
