"""The ablation driver: its statistics and mixes on known inputs, and the whole table at smoke size
(every stage and all five rows, real SFT/RL/eval on the shipped tiny model; no claims), resumed."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from experiments.ablation.mixes import trap_records
from experiments.ablation.plan import ROWS, SIZES, stages
from experiments.ablation.stats import matrix, mean_ci, paired_diff, per_item

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "assets" / "pixel-reasoner-tiny"


def test_intervals_cover_the_mean_and_pairing_by_item_removes_item_difficulty():
    rng = np.random.default_rng(0)
    difficulty = rng.random(40)  # items differ a lot; the two rows differ by exactly 0.1 on every item
    a = np.stack([difficulty + 0.1, difficulty + 0.1, difficulty + 0.1])
    b = np.stack([difficulty, difficulty, difficulty])
    s = mean_ci(a)
    assert s["lo"] < s["mean"] < s["hi"] and (s["seeds"], s["items"]) == (3, 40)
    d = paired_diff(a, b)
    assert d["diff"] == pytest.approx(0.1) and d["lo"] == pytest.approx(0.1) and d["hi"] == pytest.approx(0.1)
    noisy = a + rng.normal(0, 0.05, a.shape)  # seeds disagree: the interval widens but still holds 0.1
    d = paired_diff(noisy, b)
    assert d["lo"] < 0.1 < d["hi"] and d["hi"] - d["lo"] < 0.2
    with pytest.raises(ValueError, match="same items"):
        paired_diff(a[:, :10], b)


def test_item_values_average_samples_and_keep_only_items_every_seed_has():
    recs = [{"id": "x", "category": "zoom_needed", "score": 1.0, "n_ops": 1},
            {"id": "x", "category": "zoom_needed", "score": 0.0, "n_ops": 0},
            {"id": "y", "category": "zoom_needed", "score": 1.0, "n_ops": 2},
            {"id": "z", "category": "video", "score": 1.0, "n_ops": 1}]
    assert per_item(recs, "acc", "zoom_needed") == {"x": 0.5, "y": 1.0}
    assert per_item(recs, "rapr", "zoom_needed") == {"x": 0.5, "y": 1.0}
    assert per_item(recs, "ops", "zoom_needed") == {"x": 0.5, "y": 2.0}
    m, ids = matrix([{"x": 0.5, "y": 1.0}, {"y": 0.0, "w": 1.0}])
    assert ids == ["y"] and m.tolist() == [[1.0], [0.0]]


def test_the_trap_mix_keeps_textual_and_correction_traces_and_strips_most_tool_use():
    def rec(trace):
        return {"meta": {"trace": trace}, "train_turns": [True, True],
                "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"},
                             {"role": "assistant", "content": "zoom"}, {"role": "user", "content": "obs"},
                             {"role": "assistant", "content": "\\boxed{A}"}]}
    records = [rec(t) for t in ["textual", "textual_notool", "correction"] * 5 + ["pixel", "video"] * 50]
    mix = trap_records(records, pixel_share=0.2, seed=1)
    kinds = [r["meta"]["trace"] for r in mix]
    assert kinds[:15] == [r["meta"]["trace"] for r in records[:15]]
    direct = [r for r in mix if r["meta"]["trace"].startswith("textual_from_")]
    assert 60 <= len(direct) <= 95  # about 80% of the 100 tool-using records
    assert all(len(r["messages"]) == 3 and r["messages"][-1]["content"] == "\\boxed{A}" for r in direct)
    assert records[15]["meta"]["trace"] == "pixel"  # the input is left as it was


def test_every_rl_row_gets_the_same_compute_and_every_seed():
    size = SIZES["cpu"]
    rl = [s for s in stages(Path("/x"), size) if s.name.startswith("rl-")]
    assert len(rl) == 4 * size.seeds >= 12
    for key in ("max_steps", "group_size", "batch_size", "learning_rate", "max_new_tokens"):
        assert len({[a for a in s.argv if a.startswith(key + "=")][0] for s in rl}) == 1
    evals = [s for s in stages(Path("/x"), size) if s.name.startswith("eval-")]
    assert len(evals) == 2 * (3 + 4 * size.seeds)


@pytest.mark.skipif(not (MODEL / "config.json").exists(), reason="the shipped tiny model is missing")
def test_the_driver_at_smoke_size_writes_the_table_and_curves_and_resumes(tmp_path, capsys):
    from experiments.rl_ablation import main

    out, docs = tmp_path / "run", tmp_path / "docs"
    argv = ["--size", "smoke", "--out", str(out), "--docs", str(docs), "--set", "train=8", "test=5"]
    assert main(argv) == 0
    text = (docs / "rl_ablation.md").read_text()
    for row in ROWS:
        assert f"| {row.title} | 1 |" in text
    assert "full) − RL without curiosity" in text and "| greedy | acc |" in text and "not run" not in text
    assert "Does looking closer pay" in text and "| trap | " in text
    assert (docs / "rl_ablation_curves.html").stat().st_size > 1000
    assert (docs / "rl_ablation_curves.png").read_bytes()[:4] == b"\x89PNG"
    info = json.loads((out / "info.json").read_text())
    assert len(info["stages"]) == len(stages(out, SIZES["smoke"]))
    for row in ROWS[1:]:
        assert [json.loads(x)["step"] for x in (out / "rl" / row.key / "seed0" / "metrics.jsonl").read_text()
                .splitlines() if "reward" in x] == [1]
    capsys.readouterr()

    (docs / "rl_ablation.md").write_text("# Notes\n\nkept\n\n" + text.split("\n", 2)[2] + "\nafter\n")
    done = sorted(p.name for p in (out / "done").iterdir())
    (out / "done" / "eval-full-seed0-greedy.json").unlink()
    before = {p.name: p.stat().st_mtime for p in (out / "done").iterdir()}
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "ran 1 stages" in printed and "eval-full-seed0-greedy:" in printed and "rl-full-seed0:" not in printed
    assert sorted(p.name for p in (out / "done").iterdir()) == done
    assert all((out / "done" / n).stat().st_mtime == t for n, t in before.items())
    text = (docs / "rl_ablation.md").read_text()
    assert text.startswith("# Notes\n\nkept\n") and text.rstrip().endswith("after")  # hand-written parts kept
