"""Synthetic TinyZoom data: ground truth, readability before/after zoom, real-loop traces, records."""
from __future__ import annotations

import json

import numpy as np
import pytest

from core.media import DiskImageStore, MemoryImageStore, write_video
from core.operations import PIXEL_PRESETS, resize_for_model
from core.records import DataError, load_sft_records, record_to_messages, trajectory_to_sft_record
from train.synth import scenes as S
from train.synth.build import BuildConfig, build, categories_for
from train.synth.tasks import VIDEO_FPS, make_item
from train.synth.traces import item_task, make_trace, run_trace

TINY = PIXEL_PRESETS["tiny"]


def contains(outer, inner) -> bool:
    return outer[0] <= inner[0] and outer[1] <= inner[1] and outer[2] >= inner[2] and outer[3] >= inner[3]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_glyph_unreadable_in_overview_readable_after_crop(seed):
    """Measured glyph ink height: a few px at the tiny overview, >= 14 px in the crop the trace makes."""
    item = make_item("zoom_needed", seed, f"z{seed}")
    w, h = item.image.size
    assert 896 <= w <= 1344 and 896 <= h <= 1344
    glyph = item.meta["glyph_box"]
    overview = resize_for_model(item.image, TINY.first_min, TINY.first_max)
    assert overview.width * overview.height <= TINY.first_max
    h_full = S.ink_height(item.image, glyph)
    h_over = S.ink_height(overview, S.scale_box(glyph, overview.width / w, overview.height / h))
    store = MemoryImageStore()
    traj = run_trace(item_task(item), make_trace(item, np.random.default_rng(seed), correction_rate=0), store)
    step = traj.steps[0]
    assert step.tool == "crop_image_normalized" and step.error is None
    assert contains(step.source_box_px, item.meta["tag_box"])  # the scripted box finds the tag
    view = store.get(step.images[0].sha)
    x0, y0, x1, y1 = step.source_box_px
    local = (glyph[0] - x0, glyph[1] - y0, glyph[2] - x0, glyph[3] - y0)
    h_crop = S.ink_height(view, S.scale_box(local, view.width / (x1 - x0), view.height / (y1 - y0)))
    assert h_full >= 20
    assert h_over <= 6, f"glyph is {h_over} px tall in the overview: readable without zooming"
    assert h_crop >= 14, f"glyph is only {h_crop} px tall after the crop"
    assert traj.answer == item.answer and traj.status == "done"


def test_items_are_deterministic_per_seed():
    a, b = make_item("zoom_needed", 7, "x"), make_item("zoom_needed", 7, "x")
    assert a.question == b.question and a.answer == b.answer and a.image.tobytes() == b.image.tobytes()
    c = make_item("zoom_needed", 8, "x")
    assert c.image.tobytes() != a.image.tobytes()


def test_correction_trace_first_crop_misses_and_is_masked():
    item = make_item("zoom_needed", 3, "c")
    trace = make_trace(item, np.random.default_rng(0), correction_rate=1.0)
    assert trace.kind == "correction" and trace.train_turns == [False, True, True]
    traj = run_trace(item_task(item), trace, MemoryImageStore())
    wrong, good = traj.steps[0], traj.steps[1]
    tag = item.meta["tag_box"]
    assert wrong.error is None and not S.overlaps(wrong.source_box_px, tag)
    assert contains(good.source_box_px, tag)
    assert traj.answer == item.answer


def test_zoom_optional_items_answer_without_tools():
    for seed in range(4):
        item = make_item("zoom_optional", seed, f"o{seed}")
        traj = run_trace(item_task(item), make_trace(item, np.random.default_rng(seed)), MemoryImageStore())
        assert traj.n_ops == 0 and traj.answer == item.answer


def test_a_large_shape_on_a_narrow_canvas_fits_its_half():
    # `synth --seed 5 --train 6000` stopped at this item: a shape of up to 379 px asked for on one half
    # of a narrow canvas (ValueError: low >= high)
    item = make_item("zoom_optional", 12292934851544717389, "narrow")
    x0, y0, x1, y1 = item.target
    assert 0 <= x0 < x1 <= 0.5 or 0.5 <= x0 < x1 <= 1
    assert 0 <= y0 < y1 <= 1


def test_video_sign_only_in_selected_frames(tmp_path):
    """The sign shows in 3 of 16 overview frames; select_frames returns them from the real mp4."""
    item = make_item("video", 5, "v")
    path = write_video(item.frames, tmp_path / "v.mp4", fps=VIDEO_FPS, qp=18)
    store = MemoryImageStore()
    traj = run_trace(item_task(item, str(path)), make_trace(item, np.random.default_rng(0)), store)
    step = traj.steps[0]
    assert step.tool == "select_frames" and step.frames == item.visible_frames and step.error is None
    tag = item.meta["tag_box"]
    red = S.TAG_COLORS["red"]

    def shows_sign(img, size) -> bool:
        sx, sy = img.width / size[0], img.height / size[1]
        x0, y0, x1, y1 = S.scale_box(tag, sx, sy)
        border = np.asarray(img)[y0:y1, x0:x0 + max(2, (x1 - x0) // 8)].reshape(-1, 3).astype(int)
        return bool((np.abs(border - red).sum(1) < 90).mean() > 0.5)

    size = item.frames[0].size
    assert all(shows_sign(store.get(r.sha), size) for r in step.images)
    hidden = [k for k in range(1, 17) if k not in item.visible_frames]
    overview = [store.get(r.sha) for r in traj.media.overview]
    assert not any(shows_sign(overview[k - 1], size) for k in hidden)
    assert traj.answer == item.answer


def test_record_roundtrip_and_sizes(tmp_path):
    store = DiskImageStore(tmp_path / "images")
    item = make_item("zoom_needed", 4, "r")
    trace = make_trace(item, np.random.default_rng(1), correction_rate=1.0)
    traj = run_trace(item_task(item), trace, store)
    rec = trajectory_to_sft_record(traj, store, trace.train_turns, relative_to=tmp_path)
    (tmp_path / "train.jsonl").write_text(json.dumps(rec) + "\n")
    [loaded] = load_sft_records(tmp_path)
    assert loaded.train_turns == [False, True, True] and loaded.n_assistant == 3
    msgs = record_to_messages(loaded, TINY)
    images = [p["image"] for m in msgs if not isinstance(m["content"], str) for p in m["content"] if p["type"] == "image"]
    assert len(images) == 3  # overview + two crops
    assert all(im.width % 28 == 0 and im.height % 28 == 0 and im.width * im.height <= TINY.first_max for im in images)
    assert "Here is the cropped image" in msgs[3]["content"][0]["text"]


def test_released_format_is_read(tmp_path):
    """The released PixelReasoner-SFT-Data keeps a `message_list` with relative image paths."""
    from PIL import Image

    Image.new("RGB", (300, 200), (200, 10, 10)).save(tmp_path / "a.png")
    rec = {"qid": "q1", "message_list": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": [{"type": "image", "image": "a.png"}, {"type": "text", "text": "Colour?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Red. \\boxed{red}"}]}]}
    (tmp_path / "released.json").write_text(json.dumps([rec]))
    [r] = load_sft_records(tmp_path / "released.json")
    assert r.id == "q1" and r.train_turns is None
    msgs = record_to_messages(r, TINY)
    assert msgs[1]["content"][0]["image"].size == (280, 168) or msgs[1]["content"][0]["image"].width % 28 == 0
    (tmp_path / "bad.jsonl").write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    with pytest.raises(DataError, match="no assistant turn"):
        load_sft_records(tmp_path / "bad.jsonl")


def test_build_is_reproducible(tmp_path):
    """The test split depends only on the seed: two builds give identical jsonl (and category mix)."""
    cats = categories_for(10)
    assert set(cats) == {"zoom_needed", "zoom_optional", "counting", "relative", "video"}
    for name in ("a", "b"):
        build(BuildConfig(out=str(tmp_path / name), train=2, validation=0, test=10, seed=3))
    a, b = (tmp_path / "a" / "test.jsonl").read_text(), (tmp_path / "b" / "test.jsonl").read_text()
    assert a == b
    rows = [json.loads(line) for line in a.splitlines()]
    assert len(rows) == 10 and all((tmp_path / "a" / r["meta"]["task"]["media"]).exists() for r in rows)
    assert {r["meta"]["category"] for r in rows} == set(cats)


def test_closeups_are_training_only_crops_answered_directly(tmp_path):
    """`closeups` appends short reading records to train (not to test): the tool's own crop of the
    tag, where the glyph is readable, answered without a tool call."""
    build(BuildConfig(out=str(tmp_path), train=2, validation=0, test=5, seed=3, closeups=2))
    rows = [json.loads(line) for line in (tmp_path / "train.jsonl").read_text().splitlines()]
    closeups = [r for r in rows if r["meta"]["category"] == "closeup"]
    assert len(rows) == 4 and len(closeups) == 2
    assert all(json.loads(line)["meta"]["category"] != "closeup" for line in (tmp_path / "test.jsonl").open())
    for row in closeups:
        answer = row["meta"]["task"]["answer"]
        assert row["messages"][-1]["content"][0]["text"] == f"The tag reads {answer}.\n\n\\boxed{{{answer}}}"
        assert "<tool_call>" not in json.dumps(row["messages"][2:])
        [rec] = [r for r in load_sft_records(tmp_path) if r.id == row["id"]]
        [image] = [p["image"] for m in record_to_messages(rec, TINY) if not isinstance(m["content"], str)
                   for p in m["content"] if p["type"] == "image"]
        scene = make_item("zoom_needed", row["meta"]["seed"], "x")
        assert image.width < scene.image.width / 2  # a crop, not the scene
    # the same seed gives the same close-ups
    build(BuildConfig(out=str(tmp_path / "again"), train=2, validation=0, test=0, seed=3, closeups=2))
    assert (tmp_path / "again" / "train.jsonl").read_text() == (tmp_path / "train.jsonl").read_text()
