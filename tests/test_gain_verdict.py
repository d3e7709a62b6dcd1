"""The Train tab never recommends a model its own gain view shows worse, and warns before a run that
passes many times over a handful of records (15 passes over 4 corrections made the embedded model
37.5 points worse on its own items)."""
from __future__ import annotations

import json

from app.training import gain as G
from app.training.commands import size_warning


def part(mean: float, ci: list[float], n: int = 16) -> dict:
    return {"n": n, "base": {"accuracy": 0.938, "ci95": [0.8, 1.0]},
            "tuned": {"accuracy": 0.938 + mean, "ci95": [0.3, 0.8]}, "gain": {"mean": mean, "ci95": ci}}


def result(mean: float, ci: list[float], **more: dict) -> dict:
    return {"base_model": "assets/pixel-reasoner-tiny", "tuned_model": "data/runs/x/final",
            "sets": {"trained on": part(0.5, [0.3, 0.7]), "held out": part(mean, ci), **more}}


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


def test_the_verdict_rests_on_items_never_trained_on_and_says_what_was_forgotten():
    only_trained = {"base_model": "m0", "tuned_model": "m1", "sets": {"trained on": part(0.5, [0.3, 0.7])}}
    assert G.verdict(only_trained).startswith("No items never trained on") and G.is_worse(only_trained) is None
    forgot = result(0.2, [0.1, 0.3], **{"own split": part(-0.1, [-0.15, -0.05])})
    assert "better on held-out items like the corrected ones" in G.verdict(forgot)
    assert "It forgot" in G.verdict(forgot) and "-10.0 points on its own split" in G.verdict(forgot)
    kept = result(0.2, [0.1, 0.3], **{"own split": part(-0.01, [-0.05, 0.03])})
    assert "forgot" not in G.verdict(kept)
    no_held = {"base_model": "m0", "tuned_model": "m1", "sets": {"own split": part(-0.2, [-0.3, -0.1])}}
    assert "worse** on its own split" in G.verdict(no_held) and G.is_worse(no_held) == -0.2


def test_many_passes_over_four_records_warn_before_launch(tmp_path):
    export = tmp_path / "annotations-1"
    export.mkdir()
    (export / "train.jsonl").write_text("".join(json.dumps({"id": i}) + "\n" for i in range(4)))
    cmd = ["python", "-m", "train", "sft", "--config", "configs/sft_corrections.json", "out=x", f"data={export}"]
    warning = size_warning("sft", "configs/sft_corrections.json", cmd)
    assert warning.startswith("⚠️ 4 training records, about 3 passes")  # the config's 3 epochs
    assert size_warning("sft", "configs/sft_corrections.json", cmd + ["max_steps=2"]) is not None  # still tiny
    many = tmp_path / "big"
    many.mkdir()
    (many / "train.jsonl").write_text("{}\n" * 400)
    assert size_warning("sft", "configs/sft_corrections.json", cmd[:-1] + [f"data={many}"]) is None
    some = tmp_path / "some"
    some.mkdir()
    (some / "train.jsonl").write_text("{}\n" * 60)  # 8 passes over 60 corrections alone: forgets (docs/corrections.md)
    alone = cmd[:-1] + [f"data={some}", "mix_records=0", "epochs=8"]
    assert size_warning("sft", "configs/sft_corrections.json", alone) is not None
    mix = tmp_path / "tinyzoom"  # not built yet: the run builds it (400 records) and mixes them in: the recipe
    assert size_warning("sft", "configs/sft_corrections.json", cmd[:-1] + [f"data={some}", f"mix_data={mix}"]) is None
    assert size_warning("rl", "configs/rl_tiny.json", cmd) is None


def test_a_fresh_set_up_says_before_launch_what_the_jobs_build_first(tmp_path):
    from app import Studio
    from app.shared.studio_log import StudioLog
    from app.training.commands import before_start, build_command

    studio = Studio(log=StudioLog(tmp_path / "studio.db"), data_dir=tmp_path)
    sft = build_command(studio, "sft", "configs/sft_corrections.json", str(tmp_path / "exports" / "x"), None, "",
                        None, "", "", str(tmp_path / "runs" / "sft-1"))
    assert f"mix_data={tmp_path / 'tinyzoom'}" in sft  # the Studio's own folder, where the data job writes it
    assert f"`{tmp_path / 'tinyzoom'}` is not built yet" in before_start("sft", "configs/sft_corrections.json", sft)
    run = tmp_path / "runs" / "sft-1"
    run.mkdir(parents=True)
    (run / "sft_config.json").write_text(json.dumps({"model": "assets/pixel-reasoner-tiny", "data": str(tmp_path),
                                                     "mix_data": str(tmp_path / "tinyzoom"), "mix_records": 100}))
    cmd = build_command(studio, "gain", None, "", None, str(run), 16, "", "", str(tmp_path / "runs" / "gain-1"))
    assert cmd[cmd.index("--own") + 1] == str(tmp_path / "tinyzoom") and cmd[cmd.index("--export") + 1] == str(tmp_path)
    assert "its own split" in before_start("gain", None, cmd)
    (tmp_path / "tinyzoom").mkdir()
    (tmp_path / "tinyzoom" / "notes.txt").write_text("not TinyZoom")
    assert "holds no train.jsonl and is not written into" in before_start("sft", None, sft)
    assert "holds no test.jsonl" in before_start("gain", None, cmd)
    for split in ("train", "test"):
        (tmp_path / "tinyzoom" / f"{split}.jsonl").write_text("{}\n")
    assert before_start("gain", None, cmd) == "" and "not built" not in before_start("sft", None, sft)
