"""Annotations -> SFT export: correction plans, re-execution through the real operations, the record
format read by core/records.py (with masks the SFT collator honours), labels JSONL, and `python -m train sft`
on the exported folder for two steps.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from app.annotate import corrections as C
from app.annotate import export as E
from core.backends.replay import ReplayBackend
from core.encoding import IGNORE_INDEX, VisionTextEncoder
from core.loop import LoopConfig, Task, run_to_end
from core.media import Video, load_image
from core.operations import PixelLimits
from core.protocol import format_tool_call
from app.shared.studio_log import StudioLog
from core.records import load_sft_records
from core.recorder import Recorder

ROOT = Path(__file__).resolve().parents[1]
TAG = ROOT / "assets" / "examples" / "zoom_needed_101.png"  # a "3" on a small blue tag near (0.46, 0.69)
GOOD_BOX = [0.44, 0.66, 0.48, 0.72]
WRONG = "The tag must be at the top. Let me zoom.\n\n" + format_tool_call(
    "crop_image_normalized", {"bbox_2d": [0.7, 0.05, 0.85, 0.2], "target_image": 1})
ANSWER_7 = "I cannot read it clearly; it looks like a 7. \\boxed{7}"
CONFIG = LoopConfig(pixels=PixelLimits.preset("tiny"))


def logged(log: StudioLog, turns: list[str], question="What is written on the blue tag?", answer="3",
           image: Path = TAG) -> str:
    task = Task(question=question, image=load_image(image), answer=answer, media_path=str(image))
    traj = run_to_end(ReplayBackend(turns), task, config=CONFIG, store=log.images)
    traj.correct = traj.answer == answer
    return Recorder(log, "app").write(traj)


@pytest.fixture()
def log(tmp_path):
    return StudioLog(tmp_path / "studio.db")


def test_plan_turns_the_wrong_crop_into_the_corrected_one_and_answers_after_it(log):
    sid = logged(log, [WRONG, ANSWER_7])
    log.add_annotation(sid, 0, "wrong box", "the tag is lower", corrected_box=GOOD_BOX, annotator="t")
    log.add_annotation(sid, None, "wrong answer", corrected_answer="3", annotator="t")
    plan = C.plan_corrections(log.get_trajectory(sid), log.list_annotations(sid))
    assert plan.skip is None and plan.answer == "3" and plan.corrected
    assert [(t.train, t.note) for t in plan.turns] == [(True, "correction"), (True, "corrected answer")]
    assert '"bbox_2d": [0.44, 0.66, 0.48, 0.72], "target_image": 1' in plan.turns[0].text
    assert plan.turns[0].text.startswith("The tag must be at the top. Let me zoom.")  # the model's own words
    assert plan.turns[1].text.endswith("\\boxed{3}") and "looks like a 3" in plan.turns[1].text


def test_the_answer_turn_after_a_corrected_box_reads_the_right_answer(log, tmp_path):
    """Bug: the trained answer turn kept the model's reading of its wrong crop and boxed the right
    answer: "The tag reads 7.\\n\\n\\boxed{3}" taught the model to say one thing and answer another."""
    sid = logged(log, [WRONG, "The tag reads 7.\n\n\\boxed{7}"])
    log.add_annotation(sid, 0, "wrong box", corrected_box=GOOD_BOX)
    log.add_annotation(sid, None, "wrong answer", corrected_answer="3")
    E.export_annotated(log, tmp_path / "export")
    (rec,) = load_sft_records(tmp_path / "export")
    texts = [m["content"][0]["text"] if isinstance(m["content"], list) else m["content"]
             for m in rec.messages if m["role"] == "assistant"]
    assert rec.train_turns == [True, True]
    assert '"bbox_2d": [0.44, 0.66, 0.48, 0.72], "target_image": 1' in texts[0]  # the corrected call
    assert texts[1] == "The tag reads 3.\n\n\\boxed{3}"


def test_the_corrected_box_is_written_as_the_model_writes_its_boxes(log):
    """Bug: a box drawn at [0.9517, ...] became "bbox_2d": [0.952, ...] for a model that writes two
    decimals; 50 such corrections taught the embedded model to write "0.555555..." and broke its calls."""
    sid = logged(log, [WRONG, ANSWER_7])  # the model's box: [0.7, 0.05, 0.85, 0.2]
    log.add_annotation(sid, 0, "wrong box", corrected_box=[0.4412, 0.6561, 0.4788, 0.7213])
    plan = C.plan_corrections(log.get_trajectory(sid), log.list_annotations(sid))
    assert '"bbox_2d": [0.44, 0.65, 0.48, 0.73]' in plan.turns[0].text  # rounded outward: the drawn box stays in
    assert C.box_decimals({"bbox_2d": [0.125, 0.5, 0.75, 0.9]}) == 3 and C.box_decimals(None) == 3


def test_plans_that_are_not_exported_say_why(log):
    sid = logged(log, [WRONG, ANSWER_7])
    traj = log.get_trajectory(sid)
    assert C.plan_corrections(traj, []).skip == "not annotated"
    log.add_annotation(sid, 1, "hallucinated observation", "it says 3")
    assert "final answer is labeled bad" in C.plan_corrections(traj, log.list_annotations(sid)).skip
    ok = logged(log, [ANSWER_7.replace("7", "3")])
    log.add_annotation(ok, None, "other", "no zoom, but right")
    assert "labeled bad and has no correction" in C.plan_corrections(log.get_trajectory(ok),
                                                                    log.list_annotations(ok)).skip
    wrong = logged(log, [ANSWER_7])
    log.add_annotation(wrong, 0, "other", corrected_text="Let me zoom first.\n\n" + format_tool_call(
        "crop_image_normalized", {"bbox_2d": GOOD_BOX, "target_image": 1}))
    assert "no corrected answer" in C.plan_corrections(log.get_trajectory(wrong), log.list_annotations(wrong)).skip


def test_the_steps_after_a_corrected_crop_are_dropped_they_answered_the_wrong_view(log):
    refine = "Closer on the right half.\n\n" + format_tool_call(
        "crop_image_normalized", {"bbox_2d": [0.5, 0.1, 0.9, 0.9], "target_image": 3})
    turns = [WRONG, "Hmm.\n\n" + format_tool_call("crop_image_normalized",
                                                 {"bbox_2d": [0.1, 0.1, 0.9, 0.9], "target_image": 1}),
             refine, "\\boxed{3}"]
    sid = logged(log, turns)
    log.add_annotation(sid, 0, "wrong box", corrected_box=GOOD_BOX)
    plan = C.plan_corrections(log.get_trajectory(sid), log.list_annotations(sid))
    assert [(t.note, t.source_step) for t in plan.turns] == [("correction", 0), ("kept", 3)]  # a right answer stays
    assert '"bbox_2d": [0.44, 0.66, 0.48, 0.72]' in plan.turns[0].text and plan.skip is None


def test_export_reexecutes_corrections_and_writes_records_and_labels(log, tmp_path, tiny_checkpoint):
    from train.sft import SFTCollator

    sid = logged(log, [WRONG, ANSWER_7])
    log.add_annotation(sid, 0, "wrong box", corrected_box=GOOD_BOX, annotator="ann")
    log.add_annotation(sid, None, "wrong answer", "should be 3", corrected_answer="3", annotator="ann")
    bad = "<tool_call>\n{\"name\": \"crop_image_normalized\", \"arguments\": {bbox_2d: x}\n</tool_call>"
    fmt = logged(log, [bad, "Let me zoom properly.\n\n" + format_tool_call(
        "crop_image_normalized", {"bbox_2d": GOOD_BOX, "target_image": 1}), "It reads 3. \\boxed{3}"])
    log.add_annotation(fmt, 0, "format error", "JSON without quotes")
    skipped = logged(log, [ANSWER_7])
    log.add_annotation(skipped, 0, "wrong answer")
    logged(log, [ANSWER_7])  # not annotated: not in the export at all

    rows = E.preview(log)
    assert {r["session_id"]: r["skip"] is None for r in rows} == {sid: True, fmt: True, skipped: False}
    out = tmp_path / "export"
    report = E.export_annotated(log, out)
    assert (report.sessions, report.records, report.corrected, report.labels) == (3, 2, 1, 4)
    assert report.skipped[0]["session_id"] == skipped and "configs/sft_corrections.json" in report.markdown()

    records = load_sft_records(out)
    by_source = {r.meta["source_session"]: r for r in records}
    rec = by_source[sid]
    assert rec.train_turns == [True, True] and rec.meta["answer"] == "3"
    assert rec.meta["labels"] == ["wrong box", "wrong answer"]
    roles = [m["role"] for m in rec.messages]
    assert roles == ["system", "user", "assistant", "user", "assistant"]
    # the correction's observation is the real crop of the padded corrected box, from the exported images
    obs = rec.messages[3]["content"]
    assert obs[0]["text"].startswith("\nHere is the cropped image (Image Size:")
    crop_path = out / obs[1]["image"]
    assert crop_path.exists() and not Path(obs[1]["image"]).is_absolute()
    crop = np.asarray(load_image(crop_path))
    blue = (crop[..., 2] > 180) & (crop[..., 0] < 80) & (crop[..., 1] < 110)
    assert blue.sum() > 30, "the corrected crop shows the blue tag"
    shown = [c for m in rec.messages[1:] if isinstance(m["content"], list) for c in m["content"] if c.get("image")]
    assert len(shown) == 2  # the tag and the corrected crop: the wrong crop is not in the record
    assert rec.messages[-1]["content"][0]["text"].endswith("\\boxed{3}")
    assert by_source[fmt].train_turns == [False, True, True]  # the format error stays, masked
    task = rec.meta["task"]  # what `python -m train rl` reads: the full-resolution original, the answer
    assert task["answer"] == "3" and task["kind"] == "image" and task["question"] == "What is written on the blue tag?"
    assert load_image(out / task["media"]).size == (1180, 996)

    labels = [json.loads(line) for line in (out / "labels.jsonl").read_text().splitlines()]
    assert {(r["session_id"], r["step_idx"], r["label"]) for r in labels} == {
        (sid, 0, "wrong box"), (sid, None, "wrong answer"), (fmt, 0, "format error"), (skipped, 0, "wrong answer")}
    assert next(r for r in labels if r["label"] == "wrong box")["corrected_box"] == GOOD_BOX
    summary = json.loads((out / "export.json").read_text())
    assert summary["records"] == 2 and summary["skipped"][0]["reason"]

    # the SFT collator: loss only on the trained turns (the wrong crop and the format error are masked)
    encoder = VisionTextEncoder.from_pretrained(tiny_checkpoint)
    batch = SFTCollator(records, encoder, "tiny")([{"row": i} for i in range(len(records))])
    for i, r in enumerate(records):
        text = encoder.tokenizer.decode([t for t in batch["labels"][i].tolist() if t != IGNORE_INDEX])
        turns = [m["content"][0]["text"] for m in r.messages if m["role"] == "assistant"]
        for turn, trained in zip(turns, r.train_turns):
            assert (turn in text) == trained


def test_video_wrong_frames_corrected(log, video_path, tmp_path):
    task = Task(question="Which frame shows 20?", video=Video.from_file(video_path), answer="20",
                media_path=str(video_path))
    turns = ["Let me look.\n\n" + format_tool_call("select_frames", {"target_frames": [1, 2]}), "\\boxed{3}"]
    traj = run_to_end(ReplayBackend(turns), task, config=CONFIG, store=log.images)
    sid = Recorder(log, "import").write(traj)
    log.add_annotation(sid, 0, "wrong frame", corrected_frames=[10, 11])
    log.add_annotation(sid, 1, "wrong answer", corrected_answer="20")
    report = E.export_annotated(log, tmp_path / "v")
    assert report.records == 1, report.skipped
    (rec,) = load_sft_records(tmp_path / "v")
    assert rec.train_turns == [True, True]
    assert rec.messages[1]["content"][0]["type"] == "video"
    obs = rec.messages[3]["content"]
    assert "Numbered" in obs[0]["text"] and len(obs) == 3  # two real frames came back
    assert rec.meta["task"]["kind"] == "video" and (tmp_path / "v" / rec.meta["task"]["media"]).stat().st_size > 1000


def test_train_sft_runs_on_the_exported_folder(log, tmp_path):
    sid = logged(log, [WRONG, ANSWER_7])
    log.add_annotation(sid, 0, "wrong box", corrected_box=GOOD_BOX)
    log.add_annotation(sid, None, "wrong answer", corrected_answer="3")
    ok = logged(log, ["Zoom.\n\n" + format_tool_call("crop_image_normalized",
                                                      {"bbox_2d": GOOD_BOX, "target_image": 1}), "\\boxed{3}"])
    log.add_annotation(ok, 1, "other", corrected_text="The tag reads 3. \\boxed{3}")
    out = tmp_path / "export"
    assert E.export_annotated(log, out).records == 2
    run = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "train", "sft", "--config", "configs/sft_tiny_ci.json",
                           f"data={out}", f"out={run}", "max_steps=2", "save_steps=100", "vocab_size=400"],
                          cwd=ROOT, capture_output=True, text=True, timeout=240,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r and "train_runtime" not in r] == [1, 2]
    assert (run / "final" / "model.safetensors").exists()
