"""Forks in the Studio: Keep as correction turns a fork that ends right into an exported SFT record."""
import json

import pytest

from app.annotate.export import export_annotated
from app.inspecting.forks import correction_of, fork_edit, keep_as_correction
from app.shared.studio_log import StudioLog
from core.backends.replay import ReplayBackend
from core.fork import Edit, ForkError, fork_to_end, task_of
from core.loop import Task, run_to_end
from core.media import load_image
from core.recorder import Recorder
from tests.test_fork import TURNS

CONTINUATION = ["(step 0: the fork's edited call)", "It reads \\boxed{WOOLSHOPS}."]  # replay turn i = turn i


@pytest.fixture()
def logged(tmp_path, photo_path):
    """A wrong session and its fork at step 0 that ends right, both in a Studio log."""
    log = StudioLog(tmp_path / "studio.db")
    task = Task(question="What does the sign say?", image=load_image(photo_path), media_path=str(photo_path),
                answer="WOOLSHOPS")
    parent = run_to_end(ReplayBackend(TURNS), task, store=log.images)
    parent.correct = False
    Recorder(log).write(parent)
    fork = fork_to_end(ReplayBackend(CONTINUATION), parent, 0, Edit(box=[0.12, 0.22, 0.28, 0.38]),
                       task_of(parent, log.image_path), store=log.images)
    Recorder(log).write(fork)
    return log, parent, fork


def test_a_right_fork_becomes_an_annotation_on_its_edited_step(logged):
    log, parent, fork = logged
    assert fork.correct is True
    ann_id, new = keep_as_correction(log, fork.id)
    ann = log.list_annotations(fork.id)
    assert new and [a["id"] for a in ann] == [ann_id]
    assert (ann[0]["step_idx"], ann[0]["label"]) == (0, "wrong box")
    assert ann[0]["corrected_text"] == fork.steps[0].text
    assert keep_as_correction(log, fork.id) == (ann_id, False)  # twice: nothing added


def test_the_kept_fork_is_in_the_export_with_its_continuation_trained(logged, tmp_path):
    log, parent, fork = logged
    keep_as_correction(log, fork.id)
    report = export_annotated(log, tmp_path / "export", hold_out_every=0, progress=False)
    assert report.exported_sessions == [fork.id] and report.corrected == 1
    record = json.loads((tmp_path / "export" / "train.jsonl").read_text().splitlines()[0])
    assert record["meta"]["source_session"] == fork.id
    assert record["train_turns"] == [True, True]
    assistant = [m for m in record["messages"] if m["role"] == "assistant"]
    assert '"bbox_2d": [0.12, 0.22, 0.28, 0.38]' in assistant[0]["content"][0]["text"]
    assert "WOOLSHOPS" in assistant[1]["content"][0]["text"]


def test_only_a_fork_that_ends_right_is_kept(logged):
    log, parent, fork = logged
    with pytest.raises(ValueError, match="not a fork"):
        keep_as_correction(log, parent.id)
    fork.correct = False
    with pytest.raises(ValueError, match="a wrong answer"):
        correction_of(fork)


def test_edits_from_the_form():
    assert fork_edit("box", [0.1, 0.2, 0.3, 0.4]) == Edit(box=[0.1, 0.2, 0.3, 0.4], target_image=1)
    assert fork_edit("frames", frames="3, 5 7") == Edit(frames=[3, 5, 7])
    assert fork_edit("text", text="\\boxed{1}") == Edit(text="\\boxed{1}")
    for kind, kw, message in [("box", {}, "two clicks"), ("frames", {"frames": "3, x"}, "whole numbers"),
                              ("text", {"text": " "}, "new text")]:
        with pytest.raises(ForkError, match=message):
            fork_edit(kind, **kw)


def test_a_video_fork_streams_and_is_logged_step_by_step(tmp_path, video_path):
    from app.inspecting.forks import stream_fork
    from core.media import Video
    from tests.test_fork import frames_call

    log = StudioLog(tmp_path / "studio.db")
    turns = [frames_call([3, 5]), "\\boxed{5}"]
    task = Task(question="Which number?", video=Video.from_file(video_path, n=16), media_path=str(video_path),
                answer="9")
    parent = run_to_end(ReplayBackend(turns), task, store=log.images)
    Recorder(log).write(parent)
    views = list(stream_fork(log, ReplayBackend(["-", "\\boxed{9}"]), parent.id, 0, fork_edit("frames", frames="9, 10"),
                             40_000_000))
    markdown, picture, fork = views[-1]
    assert "select_frames [9, 10]" in markdown and "Answer: 9** ✅" in markdown
    assert picture is not None and picture.width > picture.height  # the strip of the two frames
    row = log.session(fork.id)
    assert (row["fork_of"], row["fork_step"], row["status"], row["correct"]) == (parent.id, 0, "done", 1)
    assert [s.frames for s in log.get_trajectory(fork.id).steps] == [[9, 10], None]


def test_a_fork_that_cannot_be_made_logs_nothing(logged):
    from app.inspecting.forks import stream_fork

    log, parent, fork = logged
    before = log.list_sessions()[1]
    with pytest.raises(ForkError, match="calls crop_image_normalized"):
        next(stream_fork(log, ReplayBackend(TURNS), parent.id, 0, Edit(frames=[1]), 40_000_000))
    assert log.list_sessions()[1] == before
