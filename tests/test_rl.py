"""A few curiosity-driven GRPO steps on CPU: the shipped tiny model, synthetic TinyZoom queries,
rollouts through the real tool loop, metrics.jsonl and the session log checked."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "assets" / "pixel-reasoner-tiny"
CONTRACT = ("reward", "accuracy", "rapr", "curiosity", "penalty", "ops_per_traj", "error_rate",
            "response_length", "loss")


@pytest.fixture(scope="module")
def queries(tmp_path_factory):
    from train.synth.build import BuildConfig, build

    out = tmp_path_factory.mktemp("tinyzoom_rl")
    build(BuildConfig(out=str(out), train=0, validation=8, test=4, seed=3))
    return out


@pytest.mark.skipif(not (MODEL / "config.json").exists(), reason="the shipped tiny model is missing")
def test_a_few_rl_steps_log_sane_metrics(queries, tmp_path):
    from core.sessionlog import SessionLog
    from train.rl import RLRunConfig, train

    out, db = tmp_path / "run", tmp_path / "sessions.db"
    cfg = RLRunConfig.from_file(ROOT / "configs" / "rl_tiny_ci.json",
                                [f"data={queries}", f"out={out}", f"db={db}", "max_steps=2", "eval_every=2",
                                 "eval_split=test", "eval_limit=4", "log_trajectories=2"])
    summary = train(cfg)
    assert summary["steps"] == 2 and (out / "final" / "model.safetensors").exists()

    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "reward" in r]
    assert [r["step"] for r in steps] == [1, 2]
    for r in steps:
        assert all(k in r for k in CONTRACT), sorted(r)
        assert 0 <= r["accuracy"] <= 1 and 0 <= r["rapr"] <= 1 and 0 <= r["error_rate"] <= 1
        assert r["curiosity"] >= 0 >= r["penalty"] and r["ops_per_traj"] >= 0 and r["response_length"] > 0
        # reward = correctness (<= accuracy: a failed final operation zeroes it) + curiosity + penalty
        assert r["reward"] <= r["accuracy"] + r["curiosity"] + 1e-6
        assert 0 <= r["frac_filtered"] <= 1
    evals = [r for r in rows if "eval_rapr" in r]
    assert [r["step"] for r in evals] == [0, 2]
    assert all(0 <= r["eval_zoom_needed_acc"] <= 1 and 0 <= r["eval_rapr"] <= 1 for r in evals)

    sessions, total = SessionLog(db).list_sessions()
    assert total == 4 and {s["client"] for s in sessions} == {"rl"}
