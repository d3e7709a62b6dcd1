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


@pytest.mark.skipif(not (MODEL / "config.json").exists(), reason="the shipped tiny model is missing")
def test_a_time_budget_stops_rl_after_the_step_it_runs_out_and_evaluates_there(queries, tmp_path):
    from train.rl import RLRunConfig, train

    out = tmp_path / "run"
    cfg = RLRunConfig.from_file(ROOT / "configs" / "rl_tiny_ci.json",
                                [f"data={queries}", f"out={out}", "max_steps=5", "max_seconds=0.001",
                                 "eval_every=5", "eval_split=test", "eval_limit=2"])
    summary = train(cfg)
    assert summary["steps"] == 1 and (out / "final" / "model.safetensors").exists()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "reward" in r] == [1]
    assert [r["step"] for r in rows if "eval_rapr" in r] == [0, 1]  # the stopping step, though not a multiple of 5


@pytest.mark.skipif(not (MODEL / "config.json").exists(), reason="the shipped tiny model is missing")
def test_rerunning_a_finished_run_takes_no_further_step(queries, tmp_path):
    from train.rl import RLRunConfig, train

    out = tmp_path / "run"
    overrides = [f"data={queries}", f"out={out}", "max_steps=1", "save_steps=1", "group_size=2", "batch_size=2",
                 "eval_every=1", "eval_split=test", "eval_limit=1"]
    first = train(RLRunConfig.from_file(ROOT / "configs" / "rl_tiny_ci.json", overrides))
    second = train(RLRunConfig.from_file(ROOT / "configs" / "rl_tiny_ci.json", overrides))
    assert first["steps"] == second["steps"] == 1
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "reward" in r] == [1]  # was [1, 2]: the rerun took step 2
    assert [r["step"] for r in rows if "eval_rapr" in r] == [0, 1]
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1"]
    assert (out / "final" / "model.safetensors").exists()


def test_queries_whose_media_cannot_be_read_are_skipped_not_fatal(queries, tmp_path):
    from train.rl import load_queries

    good = [json.loads(line) for line in (queries / "validation.jsonl").read_text().splitlines()]
    broken = json.loads(json.dumps(good[0]))
    broken["id"] = "broken"
    bad_picture = tmp_path / "not-a-picture.png"
    bad_picture.write_bytes(b"this is not a PNG")
    broken["meta"]["task"]["media"] = str(bad_picture)
    (queries / "mixed.jsonl").write_text("\n".join(json.dumps(r) for r in [broken, *good]) + "\n")
    tasks = load_queries(str(queries), "mixed")
    assert len(tasks) == len(good) and all(t.id != "broken" for t in tasks)
    (queries / "only_broken.jsonl").write_text(json.dumps(broken) + "\n")
    with pytest.raises(SystemExit, match="no usable RL queries"):
        load_queries(str(queries), "only_broken")
