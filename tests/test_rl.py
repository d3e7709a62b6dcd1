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


def _ablation_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("rl_ablation", ROOT / "experiments" / "rl_ablation.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_ablation_report_compares_arms_at_their_last_common_eval_and_windows_rollouts():
    abl = _ablation_module()
    ev = lambda step, acc, rapr: {"step": step, "eval_zoom_needed_acc": acc, "eval_rapr": rapr}  # noqa: E731
    evals = {"curiosity": {0: ev(0, 0.1, 0.4), 5: ev(5, 0.3, 0.35), 7: ev(7, 0.5, 0.1)},  # stopped by a budget at 7
             "no_curiosity": {0: ev(0, 0.1, 0.4), 5: ev(5, 0.2, 0.0), 10: ev(10, 0.6, 0.0)}}
    check = abl.goal_check(evals, H=0.3)
    assert check == {"step": 5, "keeps_rapr": True, "curiosity_acc": 0.3, "no_curiosity_acc": 0.2, "higher": True}
    evals["curiosity"][5]["eval_rapr"] = 0.2
    assert abl.goal_check(evals, H=0.3)["keeps_rapr"] is False
    assert abl.goal_check({"curiosity": evals["curiosity"]}, H=0.3) is None

    train = [{"step": s, "rapr": s / 10, "accuracy": 0.5, "reward": 0.5, "rapr_image": 0.0,
              **({"rapr_video": 1.0} if s % 2 else {})} for s in range(1, 13)]
    w = abl.windowed(train, 10)
    assert sorted(w) == [0, 1]  # steps 1-10 and 11-12
    assert w[0]["rapr"] == pytest.approx(0.55) and w[1]["rapr"] == pytest.approx(1.15)
    assert w[0]["rapr_video"] == 1.0  # steps without a video in the batch are left out, not counted as 0


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
