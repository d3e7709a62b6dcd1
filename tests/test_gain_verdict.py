"""The Train tab never recommends a model its own gain view shows worse, and warns before a run that
passes many times over a handful of records (15 passes over 4 corrections made the embedded model
37.5 points worse on its own items)."""
from __future__ import annotations

import json

from app.training import gain as G
from app.training.commands import size_warning


def result(mean: float, ci: list[float]) -> dict:
    return {"base_model": "assets/pixel-reasoner-tiny", "tuned_model": "data/runs/x/final", "sets": {},
            "all": {"n": 16, "base": {"accuracy": 0.938, "ci95": [0.8, 1.0]},
                    "tuned": {"accuracy": 0.938 + mean, "ci95": [0.3, 0.8]}, "gain": {"mean": mean, "ci95": ci}}}


def test_a_worse_model_is_not_recommended():
    text = G.markdown(result(-0.375, [-0.62, -0.12]))
    assert "python app.py --model data/runs/x/final" not in text
    assert "worse" in text and "keep the start model" in text and "-37.5 points" in text
    assert G.is_worse(result(-0.375, [-0.62, -0.12]))


def test_a_model_not_shown_better_is_not_recommended_outright():
    assert "not better" in G.verdict(result(-0.05, [-0.2, 0.1]))
    assert "interval includes no gain" in G.verdict(result(0.05, [-0.1, 0.2]))
    assert not G.is_worse(result(0.05, [-0.1, 0.2]))


def test_a_clearly_better_model_is_recommended():
    assert G.verdict(result(0.2, [0.1, 0.3])).endswith("`python app.py --model data/runs/x/final`")


def test_many_passes_over_four_records_warn_before_launch(tmp_path):
    export = tmp_path / "annotations-1"
    export.mkdir()
    (export / "train.jsonl").write_text("".join(json.dumps({"id": i}) + "\n" for i in range(4)))
    cmd = ["python", "-m", "train", "sft", "--config", "configs/sft_corrections.json", "out=x", f"data={export}"]
    warning = size_warning("sft", "configs/sft_corrections.json", cmd)
    assert warning.startswith("⚠️ 4 training records, about 8 passes")  # the config's 8 epochs
    assert size_warning("sft", "configs/sft_corrections.json", cmd + ["max_steps=2"]) is not None  # still tiny
    many = tmp_path / "big"
    many.mkdir()
    (many / "train.jsonl").write_text("{}\n" * 400)
    assert size_warning("sft", "configs/sft_corrections.json", cmd[:-1] + [f"data={many}"]) is None
    some = tmp_path / "some"
    some.mkdir()
    (some / "train.jsonl").write_text("{}\n" * 60)  # 8 passes over 60 corrections alone: forgets (docs/corrections.md)
    assert size_warning("sft", "configs/sft_corrections.json", cmd[:-1] + [f"data={some}"]) is not None
    assert size_warning("rl", "configs/rl_tiny.json", cmd) is None


def test_evaluating_a_run_without_held_out_items_says_so_before_launch(tmp_path):
    import pytest

    from app import Studio
    from app.shared.studio_log import StudioLog
    from app.training.commands import build_command

    studio = Studio(log=StudioLog(tmp_path / "studio.db"), data_dir=tmp_path)
    run = tmp_path / "runs" / "sft-1"
    run.mkdir(parents=True)
    (run / "sft_config.json").write_text(json.dumps({"model": "assets/pixel-reasoner-tiny", "data": str(tmp_path)}))
    with pytest.raises(ValueError, match="no held-out items"):
        build_command(studio, "gain", None, "", None, str(run), 16, "", "", str(tmp_path / "runs" / "gain-1"))
    (tmp_path / "tinyzoom").mkdir()
    (tmp_path / "tinyzoom" / "test.jsonl").write_text("{}\n")
    cmd = build_command(studio, "gain", None, "", None, str(run), 16, "", "", str(tmp_path / "runs" / "gain-1"))
    assert "app.training.gain" in " ".join(cmd)
