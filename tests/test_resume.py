"""Runs cut off by `kill -9` go on where they stopped: SFT from its last checkpoint (at most one
save interval lost), the whole robust recipe from its last finished stage or evaluated item."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.train_kit import complete_checkpoints
from train.synth.build import BuildConfig, build

ROOT = Path(__file__).resolve().parents[1]


def kill_when(cmd: list[str], ready, env: dict | None = None, timeout: float = 600) -> None:
    """Start `cmd`, wait until `ready()` holds, then kill -9 its whole process group."""
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    t0 = time.time()
    while not ready():
        assert proc.poll() is None, f"{cmd[:4]} ended before it could be killed"
        assert time.time() - t0 < timeout, "never got ready"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def sft_command(tmp_path: Path, *overrides: str) -> tuple[list[str], Path]:
    """`python -m train sft` from the shipped model on 24 fresh records, logging every step; and its run folder."""
    data, run = tmp_path / "data", tmp_path / "run"
    build(BuildConfig(out=str(data), train=24, validation=0, test=0, seed=5, progress=False))
    return [sys.executable, "-m", "train", "sft", f"data={data}", "model=assets/pixel-reasoner-tiny", f"out={run}",
            "batch_size=2", "logging_steps=1", "eval_split=null", "report_to=[]", "disable_tqdm=true",
            *overrides], run


def test_sft_killed_mid_run_resumes_from_its_last_checkpoint(tmp_path):
    cmd, run = sft_command(tmp_path, "max_steps=10", "save_minutes=0.003", "save_steps=1000", "save_total_limit=3",
                           "learning_rate=1e-4")
    kill_when(cmd, lambda: any(s >= 2 for s in complete_checkpoints(run)))
    resumed_from = complete_checkpoints(run)[-1]
    assert resumed_from < 10
    logged_before = len((run / "metrics.jsonl").read_text().splitlines())
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, timeout=600)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 10  # not one step more, not fewer
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    rerun = [r["step"] for r in rows[logged_before:] if "train_runtime" not in r]
    assert rerun == list(range(resumed_from + 1, 11))  # the rerun starts right after the checkpoint
    assert (Path(summary["final_dir"]) / "model.safetensors").exists()


def saved_spent(run: Path) -> float:
    """The time budget spent, as the newest complete checkpoint saved it."""
    state = json.loads((run / f"checkpoint-{complete_checkpoints(run)[-1]}" / "trainer_state.json").read_text())
    return state["stateful_callbacks"]["TimeBudgetCallback"]["attributes"]["spent"]


def test_a_run_with_a_time_budget_resumes_with_the_time_it_had_left(tmp_path):
    cmd, run = sft_command(tmp_path, "max_seconds=60", "max_steps=100000", "epochs=1000", "save_minutes=0.05",
                           "save_steps=100000", "save_total_limit=2")
    kill_when(cmd, lambda: bool(complete_checkpoints(run)) and saved_spent(run) >= 35)
    left = 60 - saved_spent(run)
    logged_before = len((run / "metrics.jsonl").read_text().splitlines())
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, timeout=600)
    times = [json.loads(line)["time"] for line in (run / "metrics.jsonl").read_text().splitlines()[logged_before:]]
    assert times[-1] - times[0] < left + 10  # not a fresh 60 s budget


def test_the_robust_recipe_killed_during_sft_and_again_during_its_reports_finishes_on_rerun(tmp_path):
    env = {**os.environ, "SCALE": "0.002", "WORKERS": "2", "RUNS": str(tmp_path / "runs"),
           "DATA": str(tmp_path / "data"), "SHIFTS": str(tmp_path / "shifts")}
    cmd = ["bash", "scripts/train_robust.sh"]
    kill_when(cmd, lambda: bool(complete_checkpoints(tmp_path / "runs" / "sft")), env=env)
    before = tmp_path / "runs" / "shifts-before"
    kill_when(cmd, lambda: any(p.stat().st_size for p in before.glob("*/items.jsonl")), env=env)
    done_shifts = {p.parent.name for p in before.glob("*/items.jsonl") if p.stat().st_size}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "already built with this config" in done.stderr  # the data was kept, not made again
    assert "already reached step" in done.stderr  # SFT had finished before the second kill
    for shift in done_shifts:  # the start model's finished items were kept: fewer than its 2 are new
        (first,) = re.findall(rf"^{shift}: \S+ \((\d) new items\)$", done.stderr, re.M)[:1]
        assert int(first) < 2
    report = (tmp_path / "runs" / "shifts" / "report.md").read_text()
    assert "pooled zoom-needed" in report and "before → after" in report
    assert (tmp_path / "runs" / "final" / "model.safetensors").exists()


def test_the_time_schedule_decays_by_the_steps_when_the_epochs_end_before_the_budget():
    import torch
    from transformers import TrainerControl, TrainerState

    from train.run import TimeBudgetCallback

    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=1e-4)
    budget = TimeBudgetCallback(seconds=3600, lr=1e-4, warmup=0.0)
    state = TrainerState(max_steps=100, global_step=0)
    budget.on_train_begin(None, state, TrainerControl())
    state.global_step = 99  # the last step, seconds into an hour's budget
    budget.on_step_begin(None, state, TrainerControl(), optimizer=opt)
    assert opt.param_groups[0]["lr"] < 1e-6  # decayed, not still at the peak


def test_the_logged_learning_rate_is_the_one_the_time_schedule_set():
    import torch
    from transformers import TrainerControl, TrainerState, get_constant_schedule

    from train.run import TimeBudgetCallback

    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=1e-4)
    sched = get_constant_schedule(opt)  # what `train sft` runs under max_seconds
    budget = TimeBudgetCallback(seconds=3600, lr=1e-4, warmup=0.0)
    state = TrainerState(max_steps=100, global_step=50)
    budget.on_train_begin(None, state, TrainerControl())
    budget.on_step_begin(None, state, TrainerControl(), optimizer=opt, lr_scheduler=sched)
    used = opt.param_groups[0]["lr"]
    opt.step(), sched.step()
    assert 4e-5 < used < 6e-5  # half-way down the cosine
    assert sched.get_last_lr()[0] == used == opt.param_groups[0]["lr"]  # the trainer logs get_last_lr()
