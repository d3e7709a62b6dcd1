"""`python -m train sft`'s mix knob: records of the model's original kind of data drawn into a fine-tune
with the run's seed (mix_data, mix_records), the mix folder built when it is missing."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from core.records import load_sft_records
from train import mix as M
from train.synth.build import BuildConfig, build

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A small dataset to fine-tune on and a TinyZoom folder of 8 training records to mix in."""
    root = tmp_path_factory.mktemp("mix")
    build(BuildConfig(out=str(root / "data"), train=3, validation=0, test=0, seed=1, progress=False))
    build(BuildConfig(out=str(root / "own"), train=8, validation=0, test=0, seed=2, progress=False))
    return root


def test_the_draw_is_the_seeds_in_the_pools_order(folders):
    pool = load_sft_records(folders / "own")
    drawn = M.draw(pool, 5, seed=0)
    assert len(drawn) == 5 and [r.id for r in drawn] == [r.id for r in pool if r in drawn]
    assert [r.id for r in M.draw(pool, 5, seed=0)] == [r.id for r in drawn]
    assert any([r.id for r in M.draw(pool, 5, seed=s)] != [r.id for r in drawn] for s in (1, 2, 3))
    assert M.draw(pool, 50, seed=0) == pool  # fewer than asked: all of them


def test_a_smoke_fine_tune_mixes_the_records_it_was_asked_for(folders, tmp_path, tiny_checkpoint):
    from train.sft import SFTRunConfig, train

    cfg = SFTRunConfig(data=str(folders / "data"), model=str(tiny_checkpoint), out=str(tmp_path / "run"),
                       mix_data=str(folders / "own"), mix_records=4, max_steps=1, batch_size=2, eval_split=None,
                       report_to=[], disable_tqdm=True, save_minutes=None)
    summary = train(cfg)
    assert (summary["train_records"], summary["mixed_records"]) == (3 + 4, 4)
    ran = json.loads((tmp_path / "run" / "sft_config.json").read_text())
    assert (ran["mix_data"], ran["mix_records"]) == (str(folders / "own"), 4)  # the gain view reads them


def test_a_missing_mix_folder_is_built_and_a_foreign_one_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(M, "FRESH", {**M.FRESH, "train": 4, "test": 2})  # the real build, at smoke size
    records, mixed = M.mix_in([], str(tmp_path / "fresh"), 3, seed=0)
    assert mixed == 3 and len(records) == 3
    assert len((tmp_path / "fresh" / "test.jsonl").read_text().splitlines()) == 2  # the gain view's own split
    foreign = tmp_path / "family"
    foreign.mkdir()
    (foreign / "test.jsonl").write_text("{}\n")
    done = subprocess.run([sys.executable, "-m", "train", "sft", "--config", "configs/sft_corrections.json",
                           f"data={tmp_path / 'fresh'}", f"mix_data={foreign}", f"out={tmp_path / 'run'}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and f"error: mix_data {foreign} has no train.jsonl" in done.stderr
    assert (foreign / "test.jsonl").read_text() == "{}\n" and not (foreign / "train.jsonl").exists()


def test_the_fresh_set_is_the_data_jobs():
    from app.training.jobs import FRESH_SYNTH

    assert M.fresh_command("X").split("--out X ")[1].split() == FRESH_SYNTH
