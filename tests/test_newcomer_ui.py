"""Papercuts a newcomer met in the Studio, each pinned: example captions that tell the examples apart,
a learning-rate panel that shows its value."""
from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_example_captions_are_short_and_each_different():
    labels = [e["label"] for e in json.loads((ROOT / "assets" / "examples" / "examples.json").read_text())]
    assert len(set(labels)) == len(labels)
    assert all(len(label) <= 7 for label in labels), labels  # the gallery's thumbnails cut captions past ~7 characters


def test_a_constant_learning_rate_is_drawn_around_its_value():
    from app.training.charts import job_curves

    fig = job_curves([{"step": s, "learning_rate": 1e-4, "loss": 2.0 - s / 10} for s in range(1, 6)])
    lr_axis = next(a for name, a in fig.layout.to_plotly_json().items()
                   if name.startswith("yaxis") and a.get("range") and a["range"][0] > 0)
    assert lr_axis["range"][0] < 1e-4 < lr_axis["range"][1] and lr_axis["exponentformat"] == "e"


def test_asking_a_model_not_loaded_yet_says_it_is_loading_first(tmp_path):
    from app import Studio
    from app.ask.session import AskSettings, ask_stream
    from app.shared.studio_log import StudioLog

    studio = Studio(log=StudioLog(tmp_path / "studio.db"), data_dir=tmp_path, backend="transformers")
    picture = ROOT / "assets" / "examples" / "zoom_needed_101.png"
    missing = str(tmp_path / "no-such-model")
    first, *rest = ask_stream(studio, str(picture), "What is on the tag?",
                              AskSettings(backend="transformers", model=missing), "k")
    assert first[2].startswith(f"loading `{missing}` (transformers)")
    assert rest and rest[-1][2].startswith("⚠️") and "does not exist" in rest[-1][2]


def test_the_train_tab_chooses_the_export_just_made(tmp_path):
    import os
    import time

    from app import Studio
    from app.shared.studio_log import StudioLog
    from app.training.commands import dataset_choice

    studio = Studio(log=StudioLog(tmp_path / "studio.db"), data_dir=tmp_path)
    assert dataset_choice(studio, None)[1] is None
    for i, name in enumerate(("annotations-1", "annotations-2")):
        (tmp_path / "exports" / name).mkdir(parents=True)
        (tmp_path / "exports" / name / "train.jsonl").write_text("{}\n")
        os.utime(tmp_path / "exports" / name / "train.jsonl", (time.time() + i, time.time() + i))
    choices, value = dataset_choice(studio, None)
    assert value.endswith("exports/annotations-2") and value in choices
    older = value.replace("annotations-2", "annotations-1")  # not "-2": the tmp folder may be pytest-206
    assert dataset_choice(studio, older)[1] == value  # an older export gives way
    assert dataset_choice(studio, "data/tinyzoom")[1] == "data/tinyzoom"  # a dataset chosen by hand stays


def test_a_small_picture_is_enlarged_for_annotating_so_clicks_land_on_it():
    from PIL import Image

    from app.annotate.labeling import MAX_SIDE, overlay
    from core.trajectory import Media, Step, Trajectory

    small = Image.new("RGB", (224, 168), (200, 10, 10))
    traj = Trajectory(question="q", media=Media(kind="image"),
                      steps=[Step(index=0, text="t", tool="crop_image_normalized", source_box_px=[10, 10, 60, 60])])
    shown = overlay(small, traj, 0, [0.5, 0.5, 0.9, 0.9])
    assert shown.size == (MAX_SIDE, 750)
