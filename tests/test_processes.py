"""`python -m train sft` on a CPU splits each batch over one process per core (train/processes.py): the
same steps as one process over the whole batch, every rank taking the clock's decisions together, and
no rank outliving its launcher."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.train_kit import complete_checkpoints, step_rows
from train.processes import auto_processes, planned_processes
from train.synth.build import BuildConfig, build

ROOT = Path(__file__).resolve().parents[1]


def test_the_batch_is_split_over_cores_with_at_least_four_rows_a_rank():
    assert auto_processes(8, 2) == 2
    assert auto_processes(8, 16) == 2  # 4 rows each at most 2 ranks
    assert auto_processes(32, 16) == 8
    assert auto_processes(4, 2) == auto_processes(6, 2) == auto_processes(8, 1) == 1


def test_a_split_the_batch_cannot_take_is_refused_and_a_launched_rank_is_not_split_again(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(SystemExit, match="processes=3 must divide batch_size=8"):
        planned_processes(3, 8, on_gpu=False)
    assert planned_processes(2, 8, on_gpu=True) == 1
    monkeypatch.setenv("RANK", "1")  # inside torchrun, accelerate launch or our own launch
    assert planned_processes(2, 8, on_gpu=False) == 1


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("split_data")
    build(BuildConfig(out=str(out), train=24, validation=0, test=0, seed=5, progress=False))
    return out


def sft(data: Path, run: Path, *overrides: str) -> list[str]:
    """The robust recipe's SFT (batch 8, grounded weight 5, the shipped model) on the small data."""
    return [sys.executable, "-m", "train", "sft", "--config", "configs/sft_tiny_robust.json", f"data={data}",
            f"out={run}", f"final_dir={run / 'final'}", "batch_size=8", "logging_steps=1", "report_to=[]",
            "num_workers=0", "save_steps=100000", *overrides]


@pytest.mark.slow
def test_two_ranks_take_the_steps_one_process_takes_over_the_whole_batch(data, tmp_path):
    runs = {n: tmp_path / f"p{n}" for n in (1, 2)}
    for n, run in runs.items():
        proc = subprocess.run(sft(data, run, "max_steps=2", "max_seconds=null", "save_minutes=null", f"processes={n}"),
                              cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        (summary,) = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith('{"steps"')]
        assert summary["processes"] == n
    one, two = step_rows(runs[1]), step_rows(runs[2])
    assert len(one) == len(two) == 2
    for a, b in zip(one, two):  # the weighted loss over the 8 rows' trained tokens, not the mean of the ranks' means
        assert b["loss"] == pytest.approx(a["loss"], rel=2e-3)
    assert two[0]["grad_norm"] == pytest.approx(one[0]["grad_norm"], rel=2e-3)
    assert (runs[2] / "final" / "model.safetensors").exists()


def processes_with(text: str) -> list[int]:
    """Live processes whose command line mentions `text`."""
    found = []
    for p in Path("/proc").iterdir():
        try:
            if p.name.isdigit() and text in (p / "cmdline").read_bytes().decode(errors="replace"):
                found.append(int(p.name))
        except OSError:
            continue
    return found


@pytest.mark.slow
def test_a_killed_launcher_takes_its_ranks_and_the_rerun_spends_the_budget_left(data, tmp_path):
    run = tmp_path / "run"
    cmd = sft(data, run, "max_seconds=40", "epochs=1000", "save_minutes=0.05", "save_total_limit=2", "processes=2")
    launcher = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.time()
    while not complete_checkpoints(run):  # saves every 3 s: each a decision both ranks take together
        assert launcher.poll() is None and time.time() - t0 < 300
        time.sleep(0.2)
    assert len(processes_with(str(run))) == 3  # the launcher and its two ranks
    os.kill(launcher.pid, signal.SIGKILL)  # the launcher alone, not its process group
    launcher.wait()
    t0 = time.time()
    while processes_with(str(run)):
        assert time.time() - t0 < 10, "a rank outlived its launcher"
        time.sleep(0.2)
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming from" in done.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert summary["processes"] == 2 and (run / "final" / "model.safetensors").exists()
