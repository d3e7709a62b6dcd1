"""`eval --oracle-first-crop`: the first crop becomes the item's target box, run through the real operations."""
from __future__ import annotations

import json
from pathlib import Path

from core.evaluation.oracle import oracle_edit
from core.operations import PixelLimits, smart_resize
from tests.test_eval_fixtures import make_tinyzoom
from tests.test_eval_replay import CROP, FRAMES, read_items, run_eval, turns
from tests.test_operations import release_crop_px

TARGET = [0.6, 0.6, 0.8, 0.75]
MODEL_ARGS = {"bbox_2d": [0.1, 0.2, 0.5, 0.6], "target_image": 1}


def tinyzoom_with_targets(tmp_path: Path) -> Path:
    data = make_tinyzoom(tmp_path, n=5)
    lines = []
    for line in (data / "test.jsonl").read_text().splitlines():
        rec = json.loads(line)
        rec["meta"]["task"]["target"] = TARGET
        if rec["meta"]["task"]["kind"] == "video":
            rec["meta"]["task"]["visible_frames"] = [4, 5]
        lines.append(json.dumps(rec))
    (data / "test.jsonl").write_text("\n".join(lines) + "\n")
    return data


def test_the_first_crop_is_the_target_box(tmp_path):
    data, out = tinyzoom_with_targets(tmp_path), tmp_path / "oracle"
    replay = turns(tmp_path, "t", [CROP, "\\boxed{100}"])
    assert run_eval("--bench", "tinyzoom", "--data", data, "--backend", "replay", "--replay", replay, "--no-db",
                    "--out", out, "--oracle-first-crop") == 0
    items = {r["category"]: r for r in read_items(out)}
    image = items["zoom_needed"]["trajectory"]
    step = image["steps"][0]
    assert step["arguments"] == {"bbox_2d": TARGET, "target_image": 1}
    eval_px = PixelLimits.preset("eval")  # the crop cuts the first view, as the release does (from_view)
    view_h, view_w = smart_resize(448, 448, eval_px.first_min, eval_px.first_max)
    assert tuple(step["box_px"]) == release_crop_px(TARGET, view_w, view_h)
    assert image["meta"]["oracle_first_crop"] == {"step": 0, "model_arguments": MODEL_ARGS}
    assert step["text"].startswith("I will zoom in on the square.")  # the model's reasoning stays
    assert all(r["oracle_step"] == 0 for r in items.values())
    video_step = items["video"]["trajectory"]["steps"][0]
    assert video_step["arguments"] == {"bbox_2d": TARGET, "target_image": 1}  # the model's own frame
    report = json.loads((out / "report.json").read_text())
    assert report["oracle_first_crop"] == {"replaced": 5}


def test_without_the_flag_the_model_crops_where_it_chose(tmp_path):
    data, out = tinyzoom_with_targets(tmp_path), tmp_path / "own"
    replay = turns(tmp_path, "t", [CROP, "\\boxed{100}"])
    assert run_eval("--bench", "tinyzoom", "--data", data, "--backend", "replay", "--replay", replay, "--no-db",
                    "--out", out) == 0
    items = read_items(out)
    assert all(r["trajectory"]["steps"][0]["arguments"] == MODEL_ARGS for r in items)
    assert all("oracle_step" not in r and "oracle_first_crop" not in r["trajectory"]["meta"] for r in items)
    assert "oracle_first_crop" not in json.loads((out / "report.json").read_text())
    # an oracle run cannot resume into the folder of a run without it
    assert run_eval("--bench", "tinyzoom", "--data", data, "--backend", "replay", "--replay", replay, "--no-db",
                    "--out", out, "--oracle-first-crop") == 2


def test_on_a_video_the_first_frames_are_the_visible_ones_and_only_the_first_look_changes(tmp_path):
    data, out = tinyzoom_with_targets(tmp_path), tmp_path / "oracle"
    replay = turns(tmp_path, "t", [FRAMES, CROP, "\\boxed{100}"])
    assert run_eval("--bench", "tinyzoom", "--data", data, "--backend", "replay", "--replay", replay, "--no-db",
                    "--out", out, "--oracle-first-crop") == 0
    items = {r["category"]: r["trajectory"] for r in read_items(out)}
    video = items["video"]["steps"]
    assert video[0]["frames"] == [4, 5] and video[1]["arguments"] == MODEL_ARGS
    image = items["zoom_needed"]["steps"]  # select_frames on an image fails; its first crop is the oracle's
    assert image[0]["error"] and image[1]["arguments"] == {"bbox_2d": TARGET, "target_image": 1}
    assert items["zoom_needed"]["meta"]["oracle_first_crop"]["step"] == 1


def test_only_tinyzoom_has_targets(tmp_path, capsys):
    assert run_eval("--bench", "vstar", "--data", tmp_path, "--oracle-first-crop", "--no-db") == 2
    assert "meta.task.target" in capsys.readouterr().err


def test_no_oracle_for_an_answer_or_a_garbled_call():
    assert oracle_edit("\\boxed{3}", False, TARGET, None) is None
    assert oracle_edit("<tool_call>\n{oops\n</tool_call>", False, TARGET, None) is None
    assert oracle_edit(CROP, False, None, None) is None


def test_oracle_split_counts_wrong_place_and_cannot_read():
    from core.evaluation.report import oracle_markdown, oracle_split

    def rec(i, cat, correct, step=None):
        return {"id": f"q{i}", "category": cat, "correct": correct, "oracle_step": step}

    own = [rec(0, "zoom", False), rec(1, "zoom", False), rec(2, "zoom", True), rec(3, "count", False)]
    oracle = [rec(0, "zoom", True, 0), rec(1, "zoom", False, 0), rec(2, "zoom", False, 0), rec(3, "count", False)]
    split = oracle_split(own, oracle)
    assert list(split) == ["count", "zoom", "all"]
    assert split["zoom"] == {"n": 3, "own": 0.3333, "oracle": 0.3333, "replaced": 3, "wrong_place": 1,
                             "cannot_read": 1, "no_look": 0, "oracle_hurt": 1}
    assert split["count"]["no_look"] == 1 and split["count"]["cannot_read"] == 0
    assert split["all"]["n"] == 4 and split["all"]["own"] == 0.25
    assert "| **all** | 4 | 25.0 | 25.0 | +0.0 | 3 | 1 | 1 | 1 | 1 |" in oracle_markdown(split)
