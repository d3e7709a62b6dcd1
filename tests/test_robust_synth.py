"""The varied generator, the search trace kinds, the shift suite and its report (all on CPU, seconds)."""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import replace

import numpy as np
import pytest

from core.encoding import IGNORE_INDEX, VisionTextEncoder
from core.evaluation import load_items
from core.evaluation.report import bootstrap_ci
from core.media import DiskImageStore, MemoryImageStore
from core.records import load_sft_records, trajectory_to_sft_record
from train.shift_report import crop_outcomes, shift_row, to_markdown
from train.synth import scenes as S
from train.synth import search_traces as ST
from train.synth.build import build_suite, draw_trace
from train.synth.shifts import SHIFTS, shift_categories
from train.synth.tasks import CATEGORIES, make_item
from train.synth.traces import item_task, make_trace, run_trace
from train.synth.varied import CONTROL, TRAIN, make_varied

GOLDEN = {("zoom_needed", 0): "c1b846cd68fa38db", ("zoom_needed", 1): "ba4fd824221d7680",
          ("zoom_optional", 0): "fafe5f8d3340d3a7", ("zoom_optional", 1): "f7e48a826176bba0",
          ("counting", 0): "c16284cc56a9bfe6", ("counting", 1): "0a4adc901621469b",
          ("relative", 0): "35b99d6aaa6e5c4f", ("relative", 1): "19b1eb3f1b3fe7ef",
          ("video", 0): "ba04443359e94a26", ("video", 1): "ac596d6a2e93b648"}
"""Digests of items and traces of the generator before the varied one was added (commit f60c6d3)."""


def contains(outer, inner) -> bool:
    return outer[0] <= inner[0] and outer[1] <= inner[1] and outer[2] >= inner[2] and outer[3] >= inner[3]


def digest(item, trace) -> str:
    images = [item.image] if item.image is not None else item.frames[::7]
    text = repr((item.question, item.answer, item.target, trace.kind, trace.turns, trace.train_turns))
    return hashlib.sha256(b"".join(i.tobytes() for i in images) + text.encode()).hexdigest()[:16]


@pytest.mark.parametrize("category", CATEGORIES)
def test_old_seeds_give_the_same_items_and_traces(category):
    for seed in (0, 1):
        item = make_item(category, seed, "x")
        trace = make_trace(item, np.random.default_rng(seed + 1), correction_rate=0.5)
        assert digest(item, trace) == GOLDEN[category, seed]


@pytest.mark.parametrize("category", CATEGORIES)
def test_varied_items_are_valid_and_deterministic_per_seed(category):
    sizes = set()
    for seed in range(4):
        a, b = make_varied(category, seed, "v", TRAIN), make_varied(category, seed, "v", TRAIN)
        pics_a = [a.image] if a.image is not None else a.frames
        pics_b = [b.image] if b.image is not None else b.frames
        assert (a.question, a.answer) == (b.question, b.answer)
        assert b"".join(p.tobytes() for p in pics_a) == b"".join(p.tobytes() for p in pics_b)
        w, h = pics_a[0].size
        sizes.add((w, h))
        if a.meta.get("tag_box"):  # the tag is on the canvas and holds its glyph
            tag, glyph = a.meta["tag_box"], a.meta["glyph_box"]
            assert 0 <= tag[0] and 0 <= tag[1] and tag[2] <= w and tag[3] <= h
            assert contains(tag, glyph)
        if category == "video":
            assert a.visible_frames and len(a.visible_frames) <= 4
            lo, hi = a.meta["source_frames"]
            assert 0 <= lo <= hi < len(a.frames)
    assert len(sizes) > 1 or category == "video"


TEMPLATES = {"zoom_needed": r"What is written on the (red|blue|green) tag\?",
             "zoom_optional": r"(What colour is the large \w+\?|Is the large \w+ on the left or the right side\?)",
             "counting": r"How many \w+ circles are there\?",
             "relative": r"Is the \w+ \w+ to the left or to the right of the \w+ \w+\?",
             "video": r"What is written on the red sign that appears in the video\?"}


ANSWERS = {"zoom_needed": set(S.GLYPHS) | {ST.NOT_FOUND}, "video": set(S.GLYPHS), "counting": set("12345"),
           "zoom_optional": set(S.SHAPE_COLORS) | {"left", "right"}, "relative": {"left", "right"}}


@pytest.mark.parametrize("category", CATEGORIES)
def test_varied_items_keep_the_original_wording_and_answers(category):
    for seed in range(4):
        old, new = make_item(category, seed, "o"), make_varied(category, seed, "v", TRAIN)
        for item in (old, new):
            assert re.fullmatch(TEMPLATES[category], item.question), item.question
            assert item.answer in ANSWERS[category], item.answer


def run(item, trace):
    traj = run_trace(item_task(item), trace, MemoryImageStore())
    assert traj.status == "done" and all(s.error is None for s in traj.steps)
    return traj


def first_seed(shift: str, category: str, want) -> object:
    for seed in range(200):
        item = make_varied(category, seed, f"s{seed}", SHIFTS[shift].variety)
        if want(item):
            return item
    raise AssertionError("no seed gives such an item")


def test_two_step_zoom_where_one_crop_cannot_resolve():
    item = first_seed("canvas_3000x2000_same_glyph", "zoom_needed", ST.needs_two_steps)
    assert not ST.needs_two_steps(make_varied("zoom_needed", 0, "c", CONTROL))  # the original canvas: one crop
    trace = ST.search_trace(item, np.random.default_rng(0), colour_fix_rate=0.0)
    assert trace.kind == "two_step" and trace.train_turns == [True, True, True]
    traj = run(item, trace)
    coarse, fine = traj.steps[0], traj.steps[1]
    assert coarse.target_image == 1 and fine.target_image == 2
    assert contains(coarse.source_box_px, item.meta["tag_box"])
    assert contains(fine.source_box_px, item.meta["glyph_box"])  # the crop of the crop holds the glyph
    assert traj.answer == item.answer


def test_colour_fix_trace_crops_the_other_colour_then_the_asked_one_and_masks_the_wrong_turn():
    item = first_seed("distractor_tags", "zoom_needed", lambda it: it.meta.get("distractors"))
    trace = ST.colour_fix(item, np.random.default_rng(1))
    assert trace.train_turns == [False, True, True]
    traj = run(item, trace)
    wrong_tags = [d["box"] for d in item.meta["distractors"] if contains(traj.steps[0].source_box_px, d["box"])]
    assert wrong_tags and not contains(traj.steps[0].source_box_px, item.meta["tag_box"])
    assert "not the " + item.subject in traj.steps[1].text
    assert contains(traj.steps[1].source_box_px, item.meta["tag_box"]) and traj.answer == item.answer


def test_not_found_answer_when_the_asked_colour_is_absent():
    item = make_varied("zoom_needed", 3, "a", replace(CONTROL, absent_rate=1.0))
    assert item.answer == ST.NOT_FOUND and item.target is None and item.meta["distractors"]
    trace = draw_trace(item, np.random.default_rng(0), 0.2, 0.1)
    assert trace.kind == "not_found" and trace.train_turns[-1] and not any(trace.train_turns[:-1])
    traj = run(item, trace)
    assert traj.answer == "none" and f"no {item.subject}" in traj.steps[-1].text


def test_counting_and_relation_traces_crop_the_objects():
    item = first_seed("control", "counting", lambda it: len(it.meta["boxes"]) <= 3)
    traj = run(item, ST.count_crops(item, np.random.default_rng(0)))
    w, h = item.image.size
    for step, box in zip(traj.steps, item.meta["boxes"]):
        assert contains(step.source_box_px, (box[0] * w + 2, box[1] * h + 2, box[2] * w - 2, box[3] * h - 2))
    assert traj.answer == item.answer and traj.n_ops == len(item.meta["boxes"])
    item = make_varied("relative", 2, "r", CONTROL)
    traj = run(item, ST.relation(item, np.random.default_rng(0)))
    assert traj.n_ops == 2 and traj.answer == item.answer


def test_new_trace_kinds_round_trip_the_record_format_and_mask_the_erroneous_crop(tmp_path, tiny_checkpoint):
    from train.sft import SFTCollator

    store = DiskImageStore(tmp_path / "images")
    items = [first_seed("distractor_tags", "zoom_needed", lambda it: it.meta.get("distractors")),
             first_seed("canvas_3000x2000_same_glyph", "zoom_needed", ST.needs_two_steps),
             make_varied("zoom_needed", 3, "a", replace(CONTROL, absent_rate=1.0))]
    traces = [ST.colour_fix(items[0], np.random.default_rng(1)), ST.two_step(items[1], np.random.default_rng(1)),
              ST.not_found(items[2], np.random.default_rng(1))]
    with (tmp_path / "train.jsonl").open("w") as f:
        for item, trace in zip(items, traces):
            rec = trajectory_to_sft_record(run_trace(item_task(item), trace, store), store, trace.train_turns,
                                           relative_to=tmp_path)
            f.write(json.dumps(rec) + "\n")
    records = load_sft_records(tmp_path)
    assert [r.train_turns for r in records] == [t.train_turns for t in traces]
    encoder = VisionTextEncoder.from_pretrained(tiny_checkpoint)
    batch = SFTCollator(records, encoder, "tiny")([{"row": i} for i in range(len(records))])
    for i, (rec, trace) in enumerate(zip(records, traces)):
        labelled = encoder.tokenizer.decode([t for t in batch["labels"][i].tolist() if t != IGNORE_INDEX])
        for turn, trained in zip(trace.turns, trace.train_turns):
            assert (turn in labelled) == trained, f"{rec.id}: {turn[:40]!r} trained={trained}"
    two = [m for m in records[1].messages if m["role"] == "assistant"][1]["content"][0]["text"]
    assert '"target_image": 2' in two


def test_shift_suite_folders_load_with_the_eval_loader(tmp_path):
    names = ["control", "canvas_900x1600", "video_short"]
    sizes = build_suite(tmp_path, per_shift=3, names=names)
    assert sizes == {n: 3 for n in names}
    for name in names:
        items = load_items("tinyzoom", tmp_path / name)
        assert len(items) == 3 and all(i.id.startswith(f"shift-{name}-") for i in items)
        task = items[0].task()
        assert task.image is not None or task.video is not None
    first = load_items("tinyzoom", tmp_path / "canvas_900x1600")[0].task()
    assert first.image.size == (900, 1600)
    assert len(load_items("tinyzoom", tmp_path / "video_short")[0].task().video.overview) < 16
    assert shift_categories(SHIFTS["video_short"], 5) == ["video"] * 5
    mix = shift_categories(SHIFTS["control"], 20)
    assert sorted(set(mix[:8])) == sorted(["zoom_needed", "zoom_optional", "counting", "relative"])  # interleaved
    assert mix.count("zoom_needed") == 9 and mix.count("counting") == 3


def record(i, score, category="zoom_needed", calls=1, errors=0, steps=()):
    return {"id": f"q{i}", "score": float(score), "correct": bool(score), "category": category, "n_ops": 1,
            "n_tool_calls": calls, "n_error_turns": errors, "trajectory": {"steps": list(steps)}}


def test_the_report_computes_intervals_and_crop_outcomes_on_a_known_input():
    glyph = [100, 100, 120, 130]
    hit = {"source_box_px": [50, 50, 200, 200], "target_image": 1}
    miss = {"source_box_px": [500, 500, 700, 700], "target_image": 1}
    fine = {"source_box_px": [90, 90, 140, 140], "target_image": 2}
    records = [record(0, 1, steps=[hit]), record(1, 1, steps=[miss, fine]), record(2, 0, steps=[miss]),
               record(3, 0, "counting", calls=2, errors=1), record(4, 1, "video")]
    assert crop_outcomes(records[1], glyph) == {"first_hit": False, "last_hit": True, "recovered": True,
                                                "two_step": True}
    row = shift_row("x", records, {f"q{i}": glyph for i in range(3)}, n_boot=500)
    assert row["n"] == 5 and row["accuracy"] == 0.6 and row["ci95"] == bootstrap_ci([1, 1, 0, 0, 1], n_boot=500)
    assert row["n_focus"] == 4 and row["focus_accuracy"] == 0.75
    assert row["ci95"][0] < 0.6 < row["ci95"][1]
    assert row["clean_calls"] == round(5 / 6, 4)  # 6 calls, one error turn
    assert (row["first_crop_hit"], row["missed_recovered"], row["n_missed"]) == (0.3333, 0.5, 2)
    assert row["two_step"] == 0.3333 and row["last_crop_hit"] == 0.6667
    table = to_markdown([row], "t")
    assert "| x | 5 | 60 (" in table and "75 (" in table and "50 (of 2)" in table


def test_the_variety_flag_builds_varied_records_and_rejects_unknown_names(tmp_path, capsys):
    from train.synth.build import main

    assert main(["--out", str(tmp_path), "--train", "3", "--validation", "0", "--test", "0", "--variety"]) == 0
    records = [json.loads(line) for line in (tmp_path / "train.jsonl").read_text().splitlines()]
    assert len(records) == 3 and all("background" in r["meta"] for r in records)
    assert json.loads((tmp_path / "dataset.json").read_text())["config"]["variety"] == "train"
    with pytest.raises(SystemExit) as e:
        main(["--out", str(tmp_path), "--variety", "shift:nope"])
    assert e.value.code == 2 and "unknown shift 'nope'" in capsys.readouterr().err


def test_shift_report_command_evaluates_every_shift_folder(tmp_path, capsys):
    from train.shift_report import main

    build_suite(tmp_path / "suite", per_shift=3, names=["control", "video_short"])
    replay = tmp_path / "turns.json"
    replay.write_text(json.dumps(["It reads left.\n\n\\boxed{left}"]))
    out = tmp_path / "out"
    assert main(["--suite", str(tmp_path / "suite"), "--backend", "replay", "--replay", str(replay),
                 "--out", str(out)]) == 0
    rows = json.loads((out / "shifts.json").read_text())["rows"]
    assert [r["shift"] for r in rows] == ["control", "video_short"] and all(r["n"] == 3 for r in rows)
    truths = [i.truth for i in load_items("tinyzoom", tmp_path / "suite" / "control")]
    assert rows[0]["accuracy"] == round(truths.count("left") / 3, 4) and rows[1]["accuracy"] == 0.0
    assert (out / "control" / "items.jsonl").is_file() and "| video_short | 3 |" in capsys.readouterr().out
    assert main(["--suite", str(tmp_path / "nowhere"), "--backend", "replay", "--replay", str(replay)]) == 2


def test_the_report_gives_each_shift_its_confidence_and_unfamiliar_share_and_the_suite_a_reliability_table():
    from train.shift_report import suite_calibration

    records = [record(0, 1), record(1, 0), record(2, 1)]
    for r, conf, familiar in zip(records, (0.95, 0.3, 0.99), (True, False, None)):
        r["answer_confidence"], r["familiar"] = conf, familiar
    row = shift_row("x", records, n_boot=100)
    assert row["confidence"] == round((0.95 + 0.3 + 0.99) / 3, 4) and row["unfamiliar"] == 0.5
    assert to_markdown([row]).splitlines()[-1].endswith("| 75 | 50 |")
    table = suite_calibration(records)
    assert "| 0.2–0.4 | 1 | 30.0 | 0.0 |" in table and "| 0.9–1.0 | 2 | 97.0 | 100.0 |" in table
    assert suite_calibration([record(0, 1)]) == ""


def test_a_failure_family_is_one_shift_drawn_in_the_named_categories_only(tmp_path):
    from train.synth.build import main

    assert main(["--shift-suite", str(tmp_path), "--shifts", "distractor_tags", "--categories", "zoom_needed",
                 "--per-shift", "3", "--no-progress"]) == 0
    assert [p.name for p in tmp_path.iterdir()] == ["distractor_tags"]
    items = load_items("tinyzoom", tmp_path / "distractor_tags")
    assert [i.category for i in items] == ["zoom_needed"] * 3
    with pytest.raises(SystemExit):
        main(["--shift-suite", str(tmp_path), "--shifts", "tag_cornr"])


def test_the_bars_name_the_shift_that_sets_each_and_say_whether_it_is_met():
    from train.shift_report import Bars, check_bars, compare_markdown

    rows = [{"shift": "bg_white", "focus_accuracy": 0.4, "clean_calls": 0.97, "two_step": None},
            {"shift": "canvas_4200x1800", "focus_accuracy": 0.8, "clean_calls": 0.9, "two_step": 0.6},
            {"shift": "jpeg15", "focus_accuracy": 0.9, "clean_calls": 1.0, "two_step": 0.0}]
    lines = check_bars(rows, [1.0] * 8 + [0.0] * 2)
    assert lines[0].startswith("pooled zoom-needed 80% (") and lines[0].endswith("of 10, bar 75%: met")
    assert lines[1] == "lowest shift bg_white 40%, bar 50%: NOT met"
    assert lines[2] == "lowest clean calls canvas_4200x1800 90%, bar 95%: NOT met"
    assert lines[3] == "two-step zooms canvas_4200x1800 60%, bar 50%: met"  # jpeg15 does not need two steps
    assert check_bars(rows, [1.0, 0.0], Bars(pooled_zoom_needed=0.6))[0].endswith("bar 60%: NOT met")
    table = compare_markdown([{"shift": "bg_white", "focus_accuracy": 0.0, "clean_calls": 0.5}], rows)
    assert "| bg_white | 0 → 40 | 50 → 97 |" in table and "| jpeg15 | – → 90 | – → 100 |" in table


def test_shift_report_refuses_a_missing_before_report_before_evaluating(tmp_path, capsys):
    from train.shift_report import main

    build_suite(tmp_path / "suite", per_shift=1, names=["control"])
    replay = tmp_path / "turns.json"
    replay.write_text(json.dumps(["\\boxed{left}"]))
    assert main(["--suite", str(tmp_path / "suite"), "--backend", "replay", "--replay", str(replay),
                 "--out", str(tmp_path / "out"), "--before", str(tmp_path / "nothing")]) == 2
    assert "no shifts.json" in capsys.readouterr().err and not (tmp_path / "out").exists()
