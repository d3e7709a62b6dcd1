"""Nothing a job or a config does may write into assets/ (the shipped model and examples)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from app import Studio
from app.training import commands as T
from app.shared.studio_log import StudioLog
from train.sft import SFTRunConfig, train

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "assets"


def tree_snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("key", ["out", "final_dir"])
def test_a_run_that_would_write_into_assets_is_refused_before_it_starts(key, tmp_path):
    before = tree_snapshot(ASSETS)
    cfg = SFTRunConfig(data=str(tmp_path), out=str(tmp_path / "run"), model="tiny")
    setattr(cfg, key, "assets/pixel-reasoner-tiny")
    with pytest.raises(SystemExit, match=f"{key}=assets/pixel-reasoner-tiny is inside assets/"):
        train(cfg)
    assert tree_snapshot(ASSETS) == before
    assert not (tmp_path / "run").exists()


def test_no_config_writes_into_assets():
    for path in sorted((ROOT / "configs").glob("*.json")):
        cfg = json.loads(path.read_text())
        for key in ("out", "final_dir"):
            if cfg.get(key):
                assert not (ROOT / cfg[key]).resolve().is_relative_to(ASSETS), f"{path.name}: {key}={cfg[key]}"


def test_the_train_tabs_default_fine_tune_starts_from_the_embedded_model_and_stays_in_its_run_folder(tmp_path):
    studio = Studio(log=StudioLog(tmp_path / "studio.db"), data_dir=tmp_path)
    config = T.default_config("sft")
    assert config == "configs/sft_corrections.json"
    cfg = json.loads((ROOT / config).read_text())
    assert cfg["model"] == "assets/pixel-reasoner-tiny"
    out = tmp_path / "runs" / "job1"
    cmd = T.build_command(studio, "sft", config, "data/exports/x", None, "", None, "", "", str(out))
    overrides = dict(a.split("=", 1) for a in cmd if "=" in a)
    assert overrides["out"] == str(out) and overrides["final_dir"] == f"{out}/final"
    assert overrides["data"] == "data/exports/x"
    run = SFTRunConfig.from_file(ROOT / config, [f"{k}={v}" for k, v in overrides.items()])
    assert Path(run.final_dir).is_relative_to(out) and run.model == "assets/pixel-reasoner-tiny"


def test_the_data_job_writes_tinyzoom_into_the_data_folder(tmp_path):
    studio = Studio(log=StudioLog(tmp_path / "studio.db"), data_dir=tmp_path)
    out = tmp_path / "runs" / "job"
    cmd = T.build_command(studio, "data", None, "", None, "", None, "--train 0 --test 2", "", str(out))
    assert cmd[1:5] == ["-m", "train", "synth", "--out"] and Path(cmd[5]) == tmp_path / "tinyzoom"
    job = studio.jobs.launch("data", cmd, out)
    assert studio.jobs.wait(job, 120)["status"] == "done", (out / "job.log").read_text()[-2000:]
    assert len((tmp_path / "tinyzoom" / "test.jsonl").read_text().splitlines()) == 2


def test_gain_compares_the_same_items_with_a_paired_interval():
    from app.training.gain import compare, markdown

    base = {"a": 0.0, "b": 1.0, "c": 0.0, "d": 1.0}
    tuned = {"a": 1.0, "b": 1.0, "c": 1.0, "d": 1.0, "only-tuned": 0.0}
    c = compare(base, tuned)
    assert c["n"] == 4 and (c["base"]["accuracy"], c["tuned"]["accuracy"], c["gain"]["mean"]) == (0.5, 1.0, 0.5)
    lo, hi = c["gain"]["ci95"]
    assert 0.0 <= lo <= 0.5 <= hi <= 1.0
    text = markdown({"base_model": "m0", "tuned_model": "m1", "sets": {"held out": c}})
    assert "| **held out**: like them, never trained on | 4 | 50.0%" in text and "+50.0 pts" in text
    assert "--model m1" in text
