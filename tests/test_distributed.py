"""Distributed training on CPU: `accelerate launch --multi_gpu --num_processes 2` (gloo) for SFT and
RL on the tiny model. Both ranks step (the 2-process loss is the 1-process loss on the same global
batch), `<out>/init` is built once, the summary printed once, DDP does not search for unused
parameters, and an RL step has a gradient. Unsupported vLLM modes are refused at config load."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.train_kit import step_rows
from train.processes import free_port

ROOT = Path(__file__).resolve().parents[1]
SFT_ARGS = ["max_steps=2", "logging_steps=1", "report_to=[]", "disable_tqdm=true", "vocab_size=600", "eval_split=null",
            "lr_scheduler=constant", "warmup_ratio=0", "learning_rate=3e-3", "save_steps=1000", "torch_threads=1"]
DDP_SEARCH_WARNING = "find_unused_parameters=True was specified"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from train.synth.build import BuildConfig, build

    out = tmp_path_factory.mktemp("tinyzoom_ddp")
    build(BuildConfig(out=str(out), train=8, validation=8, test=0, seed=0, progress=False))
    return out


def launch(command: list[str], processes: int) -> subprocess.CompletedProcess:
    """`python -m train ...` as one process, or under accelerate with `processes` CPU ranks (gloo)."""
    if processes == 1:
        argv = [sys.executable, "-m", "train", *command]
    else:
        argv = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                "--main_process_port", str(free_port()), "-m", "train", *command]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def summaries(proc) -> list[dict]:
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith('{"steps"')]


@pytest.mark.slow
def test_two_process_sft_matches_one_process_on_the_same_global_batch(data, tmp_path):
    one = launch(["sft", f"data={data}", f"out={tmp_path / 'one'}", "batch_size=4", *SFT_ARGS], 1)
    two = launch(["sft", f"data={data}", f"out={tmp_path / 'two'}", "batch_size=2", *SFT_ARGS], 2)
    (s1,), (s2,) = summaries(one), summaries(two)  # one summary each, not one per rank
    assert (s1["processes"], s2["processes"], s1["steps"], s2["steps"]) == (1, 2, 2, 2)
    # each step's loss is over the 4 records of the global batch: rank 1's half counts
    for a, b in zip(step_rows(tmp_path / "one"), step_rows(tmp_path / "two"), strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=2e-3)
    assert two.stderr.count("start checkpoint built") == 1  # <out>/init by rank 0 only
    assert DDP_SEARCH_WARNING not in two.stderr
    assert (tmp_path / "two" / "final" / "model.safetensors").exists()


@pytest.mark.slow
def test_two_process_rl_takes_a_step_with_a_gradient(data, tmp_path):
    out = tmp_path / "rl"
    # seed 2 draws groups whose samples disagree (with seed 0 all 8 samples were right: no gradient)
    proc = launch(["rl", "--config", "configs/rl_tiny_ci.json", f"data={data}", f"out={out}", "max_steps=1",
                   "torch_threads=1", "seed=2"], 2)
    (summary,) = summaries(proc)
    assert summary["processes"] == 2 and summary["steps"] == 1
    (row,) = step_rows(out)
    assert row["grad_norm"] > 0 and row["frac_filtered"] < 1 and row["loss"] != 0
    assert DDP_SEARCH_WARNING not in proc.stderr


def test_unsupported_vllm_modes_are_refused_when_the_config_loads():
    from train.rl import RLRunConfig

    assert RLRunConfig.from_file(None, ["vllm_mode=colocate"]).vllm_mode == "colocate"
    with pytest.raises(SystemExit, match="vllm_mode='server' is not supported"):
        RLRunConfig.from_file(None, ["vllm_mode=server"])
