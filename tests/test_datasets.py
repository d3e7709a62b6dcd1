"""Synth and export folders are Hugging Face datasets: `datasets.load_dataset(folder)` reads them
through their dataset card, and the `images` column casts to `datasets.Image` (real files decoded)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from datasets import Image, Sequence, load_dataset
from PIL import Image as PILImage

from app.annotate import export as E
from app.shared.studio_log import StudioLog
from tests.test_export import ANSWER_7, GOOD_BOX, WRONG, logged

ROOT = Path(__file__).resolve().parents[1]


def as_images(ds, folder: Path):
    """The card's recipe: paths relative to the folder, then the Image feature."""
    return ds.map(lambda r: {"images": [str(folder / p) for p in r["images"]]}).cast_column(
        "images", Sequence(Image()))


def test_a_synth_folder_loads_with_load_dataset_and_shows_progress(tmp_path):
    out = tmp_path / "tinyzoom"
    proc = subprocess.run([sys.executable, "-m", "train", "synth", "--out", str(out), "--train", "3",
                           "--validation", "2", "--test", "0", "--seed", "5"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "train: 100%" in proc.stderr and "validation: 100%" in proc.stderr  # the tqdm bars
    ds = load_dataset(str(out), cache_dir=str(tmp_path / "hf"))  # a fresh cache: datasets reuses one by path
    assert {k: len(v) for k, v in ds.items()} == {"train": 3, "validation": 2}  # no empty test split
    row = ds["validation"][0]
    first = next(p for m in row["messages"] if isinstance(m["content"], list) for p in m["content"]
                 if p.get("type") == "image")
    assert row["images"][0] == first["image"] and row["meta"]["task"]["answer"]
    pictures = as_images(ds["validation"], out)[0]["images"]
    assert len(pictures) == len(row["images"]) >= 1
    assert pictures[0].size == PILImage.open(out / row["images"][0]).size


def test_an_export_folder_loads_with_load_dataset(tmp_path):
    log = StudioLog(tmp_path / "db" / "studio.db")
    sid = logged(log, [WRONG, ANSWER_7])
    log.add_annotation(sid, 0, "wrong box", corrected_box=GOOD_BOX)
    log.add_annotation(sid, None, "wrong answer", corrected_answer="3")
    out = tmp_path / "export"
    assert E.export_annotated(log, out, progress=False).records == 1
    train = load_dataset(str(out), split="train", cache_dir=str(tmp_path / "hf"))
    assert len(train) == 1 and train[0]["train_turns"] == [True, True]
    pictures = as_images(train, out)[0]["images"]
    assert len(pictures) == 2  # the tag and the corrected crop
    assert all(p.size == PILImage.open(out / rel).size for p, rel in zip(pictures, train[0]["images"]))
    labels = load_dataset(str(out), "labels", split="train", cache_dir=str(tmp_path / "hf"))
    assert len(labels) == 2 and set(labels["session_id"]) == {sid}
