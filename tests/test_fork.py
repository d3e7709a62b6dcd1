"""Forks: earlier steps kept byte for byte, the edited call run through the real operations, the model
going on from the new observation (replay and the embedded model), on images, crops of crops and videos."""
import json
import re
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

from core.backends.base import Backend, Generation
from core.backends.replay import ReplayBackend
from core.fork import Edit, ForkError, edit_text, fork_to_end, start_fork, task_of
from core.loop import LoopConfig, Task, run_to_end
from core.media import MemoryImageStore, Video, load_image
from core.operations import PixelLimits
from core.protocol import format_tool_call
from core.trajectory import Trajectory
from tests.test_loop_replay import crop_call
from tests.test_operations import release_crop_px

ROOT = Path(__file__).resolve().parent.parent


def frames_call(frames):
    return "Let me pick frames.\n\n" + format_tool_call("select_frames", {"target_frames": frames})


TURNS = [crop_call([0.1, 0.1, 0.3, 0.3]), crop_call([0.2, 0.2, 0.6, 0.6], target=2), "It reads \\boxed{WOOL}."]


@pytest.fixture()
def parent(photo_path):
    task = Task(question="What does the sign say?", image=load_image(photo_path), media_path=str(photo_path),
                answer="WOOLSHOPS")
    return run_to_end(ReplayBackend(TURNS), task)


def shown_size(step) -> tuple[int, int]:
    """The size of the picture a step added, as its observation told the model."""
    w, h = re.search(r"Image Size: (\d+)x(\d+)", step.observation).groups()
    return int(w), int(h)


def steps_json(traj: Trajectory, upto: int) -> list[str]:
    return [json.dumps(asdict(s)) for s in traj.steps[:upto]]


def test_earlier_steps_are_the_parents_byte_for_byte(parent):
    forked = fork_to_end(ReplayBackend(TURNS), parent, 1, Edit(box=[0.5, 0.5, 0.9, 0.9]), task_of(parent))
    assert steps_json(forked, 1) == steps_json(parent, 1)
    assert forked.media == parent.media


def test_the_edited_crop_is_the_release_crop_of_the_edited_box(parent, photo_path):
    store = MemoryImageStore()
    forked = fork_to_end(ReplayBackend(TURNS), parent, 1, Edit(box=[0.5, 0.5, 0.9, 0.9]), task_of(parent),
                         store=store)
    step, first = forked.steps[1], parent.steps[0]
    w, h = shown_size(first)  # image 2 is the first crop as the model was shown it
    assert step.arguments == {"bbox_2d": [0.5, 0.5, 0.9, 0.9], "target_image": 2}
    assert tuple(step.box_px) == release_crop_px([0.5, 0.5, 0.9, 0.9], w, h)
    # the same pixels as a run whose model had written that box: the loop's one crop path
    fresh = run_to_end(ReplayBackend([TURNS[0], crop_call([0.5, 0.5, 0.9, 0.9], target=2), TURNS[2]]),
                       task_of(parent))
    assert step.images == fresh.steps[1].images and step.observation == fresh.steps[1].observation
    assert step.source_box_px == fresh.steps[1].source_box_px
    assert store.get(step.images[0].sha).size == (step.images[0].width, step.images[0].height)


def test_the_fork_records_its_parent_and_edit_and_is_judged(parent):
    forked = fork_to_end(ReplayBackend(TURNS), parent, 1, Edit(box=[0.5, 0.5, 0.9, 0.9]), task_of(parent))
    assert forked.meta["fork_of"] == {"session": parent.id, "step": 1}
    assert forked.meta["fork_edit"] == {"box": [0.5, 0.5, 0.9, 0.9]}
    assert forked.id != parent.id and forked.status == "done" and forked.answer == "WOOL"
    assert forked.correct is False and forked.scorer == "text"


def test_forking_the_first_crop_renumbers_nothing_and_crops_the_new_crop(parent):
    """A crop of a crop after the fork targets the fork's own image 2."""
    forked = fork_to_end(ReplayBackend(TURNS), parent, 0, Edit(box=[0.6, 0.1, 0.9, 0.4]), task_of(parent))
    first, second = forked.steps[0], forked.steps[1]
    assert first.box_px != parent.steps[0].box_px and second.target_image == 2
    assert second.box_px == list(release_crop_px([0.2, 0.2, 0.6, 0.6], *shown_size(first)))  # cut from the new crop
    inner, outer = second.source_box_px, first.source_box_px
    assert outer[0] <= inner[0] < inner[2] <= outer[2] and outer[1] <= inner[1] < inner[3] <= outer[3]


def test_a_new_target_image_crops_the_original(parent):
    forked = fork_to_end(ReplayBackend(TURNS), parent, 1, Edit(target_image=1), task_of(parent))
    step = forked.steps[1]
    assert step.target_image == 1 and step.arguments["bbox_2d"] == [0.2, 0.2, 0.6, 0.6]
    assert step.source_box_px != parent.steps[1].source_box_px  # the original's region, not the crop's


def test_a_text_edit_can_answer_at_once(parent):
    forked = fork_to_end(ReplayBackend(TURNS), parent, 1, Edit(text="It reads \\boxed{WOOLSHOPS}."), task_of(parent))
    assert len(forked.steps) == 2 and forked.answer == "WOOLSHOPS" and forked.correct is True


def test_a_fork_of_a_fork_points_at_its_own_parent(parent):
    child = fork_to_end(ReplayBackend(TURNS), parent, 1, Edit(box=[0.5, 0.5, 0.9, 0.9]), task_of(parent))
    grandchild = fork_to_end(ReplayBackend(TURNS), child, 0, Edit(box=[0.0, 0.0, 0.5, 0.5]), task_of(child))
    assert grandchild.meta["fork_of"] == {"session": child.id, "step": 0}
    assert grandchild.meta["fork_edit"] == {"box": [0.0, 0.0, 0.5, 0.5]}


def test_video_fork_selects_the_edited_frames(video_path):
    turns = [frames_call([3, 5]), crop_call([0.1, 0.1, 0.5, 0.5], target=2), "\\boxed{5}"]
    task = Task(question="Which number?", video=Video.from_file(video_path, n=16), media_path=str(video_path))
    parent = run_to_end(ReplayBackend(turns), task)
    forked = fork_to_end(ReplayBackend(turns), parent, 0, Edit(frames=[9, 10, 11]), task_of(parent))
    fresh = run_to_end(ReplayBackend([frames_call([9, 10, 11]), *turns[1:]]), task_of(parent))
    assert forked.steps[0].frames == [9, 10, 11]
    assert forked.steps[0].observation == fresh.steps[0].observation
    assert [s.images for s in forked.steps] == [s.images for s in fresh.steps]  # image 2 is now frame 10


def test_video_steps_before_the_fork_are_kept(video_path):
    turns = [frames_call([3, 5]), crop_call([0.1, 0.1, 0.5, 0.5], target=2), "\\boxed{5}"]
    task = Task(question="Which number?", video=Video.from_file(video_path, n=16), media_path=str(video_path))
    parent = run_to_end(ReplayBackend(turns), task)
    forked = fork_to_end(ReplayBackend(turns), parent, 1, Edit(target_image=3), task_of(parent))
    assert steps_json(forked, 1) == steps_json(parent, 1)
    assert forked.steps[1].images[0] != parent.steps[1].images[0]  # image 3 is frame 5, image 2 frame 3


class Recording(Backend):
    """Answers at once and keeps the conversation it was given."""

    name, model_id = "recording", "recording"

    def stream(self, messages, params, cancel=None):
        self.messages = messages
        yield Generation(text="\\boxed{x}")


def test_the_model_sees_the_parents_stored_pictures_not_new_ones(parent):
    """A parent whose step 0 picture differs from what the crop gives today: the stored one is shown."""
    store = MemoryImageStore()
    old_picture = load_image(ROOT / "assets" / "examples" / "zoom_needed_101.png")
    sha = store.put(old_picture)
    parent.steps[0].images[0].sha = sha
    backend = Recording()
    episode, text = start_fork(backend, parent, 1, Edit(box=[0.5, 0.5, 0.9, 0.9]), task_of(parent), store)
    shown = episode.messages[3]["content"][1]["image"]
    assert shown is old_picture
    assert "fork_pictures_differ" not in episode.trajectory.meta
    episode2, _ = start_fork(backend, parent, 1, Edit(box=[0.5, 0.5, 0.9, 0.9]), task_of(parent), MemoryImageStore())
    assert episode2.trajectory.meta["fork_pictures_differ"] == [0]  # not stored: said so


def test_the_observation_text_fed_back_is_the_parents(parent):
    parent.steps[0].observation = "\nHere is the cropped image (as recorded):"
    episode, _ = start_fork(Recording(), parent, 1, Edit(box=[0.5, 0.5, 0.9, 0.9]), task_of(parent))
    assert episode.messages[3]["content"][0]["text"] == "\nHere is the cropped image (as recorded):"


@pytest.mark.parametrize("k, edit, message", [
    (5, Edit(box=[0.1, 0.1, 0.2, 0.2]), "no step 5"),
    (2, Edit(box=[0.1, 0.1, 0.2, 0.2]), "calls no operation"),
    (0, Edit(frames=[1, 2]), "calls crop_image_normalized"),
])
def test_edits_that_do_not_fit_are_refused(parent, k, edit, message):
    with pytest.raises(ForkError, match=message):
        start_fork(Recording(), parent, k, edit, task_of(parent))


@pytest.mark.parametrize("kwargs, message", [
    ({}, "nothing to edit"), ({"text": "x", "box": [0, 0, 1, 1]}, "alone"),
    ({"frames": [1], "target_image": 2}, "frames edit"), ({"box": [0.1, 0.2]}, "4 numbers"),
])
def test_bad_edits_are_refused(kwargs, message):
    with pytest.raises(ForkError, match=message):
        Edit(**kwargs)


def test_a_garbled_call_is_replaced_by_a_fresh_one():
    text = 'Zoom.\n\n<tool_call>\n{"name": "crop_image", "arguments": {bbox_2d: oops}\n</tool_call>'
    assert edit_text(text, Edit(box=[0.1, 0.1, 0.4, 0.4])) == "Zoom.\n\n" + format_tool_call(
        "crop_image_normalized", {"target_image": 1, "bbox_2d": [0.1, 0.1, 0.4, 0.4]})


def test_a_changed_image_file_is_refused(parent, tmp_path):
    other = tmp_path / "other.png"
    load_image(ROOT / "assets" / "examples" / "zoom_needed_101.png").save(other)
    parent.media.path = str(other)
    with pytest.raises(ForkError, match="not the one"):
        start_fork(Recording(), parent, 1, Edit(box=[0.5, 0.5, 0.9, 0.9]), task_of(parent))


def run_cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "core", *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_cli_fork_of_what_ask_prints(tmp_path, photo_path):
    turns = tmp_path / "turns.json"
    turns.write_text(json.dumps(TURNS))
    ask = run_cli("ask", "--image", str(photo_path), "--question", "What does the sign say?", "--backend", "replay",
                  "--replay", str(turns), "--json")
    assert ask.returncode == 0, ask.stderr
    (tmp_path / "run.json").write_text(ask.stdout)
    out = run_cli("fork", str(tmp_path / "run.json"), "--step", "1", "--box", "0.5,0.5,0.9,0.9",
                  "--backend", "replay", "--replay", str(turns), "--json")
    assert out.returncode == 0, out.stderr
    parent, forked = json.loads(ask.stdout), json.loads(out.stdout)
    assert json.dumps(forked["steps"][0]) == json.dumps(parent["steps"][0])
    assert forked["meta"]["fork_of"] == {"session": parent["id"], "step": 1}
    assert forked["steps"][1]["arguments"]["bbox_2d"] == [0.5, 0.5, 0.9, 0.9] and forked["answer"] == "WOOL"
    assert "--- step 2 ---" in out.stderr


def test_cli_fork_clear_errors(tmp_path, parent):
    (tmp_path / "run.json").write_text(parent.to_json())
    (tmp_path / "bad.json").write_text("[1, 2]")
    cases = [(("--step", "9", "--box", "0.1,0.1,0.2,0.2"), "no step 9"),
             (("--step", "0", "--box", "0.1,0.1"), "give 4 numbers"),
             (("--step", "0", "--frames", "2,x"), "comma-separated list of ints")]
    for args, message in cases:
        out = run_cli("fork", str(tmp_path / "run.json"), *args, "--backend", "replay", "--replay", "x")
        assert out.returncode == 2 and message in out.stderr, out.stderr
    out = run_cli("fork", str(tmp_path / "bad.json"), "--step", "0", "--text", "x")
    assert out.returncode == 2 and "is not a trajectory" in out.stderr


def test_embedded_model_goes_on_from_the_edited_crop():
    """The shipped model after a fork at its second crop: earlier step kept, the release's crop of the box."""
    image_path = ROOT / "assets" / "examples" / "zoom_needed_101.png"
    task = Task(question="What is written on the blue tag?", image=load_image(image_path),
                media_path=str(image_path), answer="3")
    parent = run_to_end(ReplayBackend([crop_call([0.0, 0.0, 0.2, 0.2]), crop_call([0.7, 0.7, 0.9, 0.9]),
                                       "\\boxed{7}"]), task, config=LoopConfig(pixels=PixelLimits.preset("tiny")))
    from core.backends import load_backend
    from core.backends.base import GenerationParams

    backend = load_backend("transformers", device="cpu")
    edit = Edit(box=[0.2, 0.2, 0.8, 0.8], target_image=1)
    forked = fork_to_end(backend, parent, 1, edit, task_of(parent), params=GenerationParams(max_new_tokens=96))
    assert steps_json(forked, 1) == steps_json(parent, 1)
    w, h = task.image.size
    assert tuple(forked.steps[1].box_px) == release_crop_px([0.2, 0.2, 0.8, 0.8], w, h)
    assert len(forked.steps) >= 3 and forked.steps[2].tokens_out > 0  # the model's own turn after the fork
    assert forked.backend == "transformers" and forked.status in ("done", "max_ops", "max_tokens")


# ---- forks in the session log ----------------------------------------------------------------------

def test_a_fork_is_a_session_linked_to_its_parent(tmp_path, parent):
    from core.recorder import Recorder
    from core.sessionlog import SessionLog
    from core.sessionquery import SessionFilter

    log = SessionLog(tmp_path / "studio.db")
    recorder = Recorder(log)
    recorder.write(parent)
    child = fork_to_end(ReplayBackend(TURNS), parent, 1, Edit(text="The sign says \\boxed{WOOLSHOPS}, zebra."),
                        task_of(parent), store=log.images)
    recorder.write(child)
    row = log.session(child.id)
    assert (row["fork_of"], row["fork_step"]) == (parent.id, 1)
    assert log.get_trajectory(child.id).meta["fork_of"] == {"session": parent.id, "step": 1}
    assert [r["id"] for r in log.forks([parent.id])[parent.id]] == [child.id]
    assert log.forks([parent.id])[parent.id][0]["correct"] == 1
    assert [r["id"] for r in log.list_sessions(SessionFilter(fork_of=parent.id))[0]] == [child.id]
    assert [r["id"] for r in log.list_sessions(SessionFilter(forks=False))[0]] == [parent.id]
    assert [r["id"] for r in log.list_sessions(SessionFilter(forks=True))[0]] == [child.id]
    assert [r["id"] for r in log.list_sessions(SessionFilter(text="zebra"))[0]] == [child.id]  # FTS sees it
    listed = log.list_sessions(SessionFilter(forks=True))[0][0]
    assert (listed["fork_of"], listed["fork_step"]) == (parent.id, 1)


def test_forks_logged_before_the_migration_gain_their_link(tmp_path, parent):
    """A file whose sessions table predates m005: the fork's meta fills the new columns."""
    import sqlite3

    from core.recorder import Recorder
    from core.sessionlog import SessionLog

    path = tmp_path / "old.db"
    log = SessionLog(path)
    child = fork_to_end(ReplayBackend(TURNS), parent, 1, Edit(box=[0.5, 0.5, 0.9, 0.9]), task_of(parent))
    Recorder(log).write(child)
    log.close()
    con = sqlite3.connect(path)
    con.execute("UPDATE sessions SET fork_of = NULL, fork_step = NULL")
    con.execute("DELETE FROM _sqlite_migrations WHERE name = 'm005_fork_of'")
    con.execute("DROP INDEX idx_sessions_fork")
    con.execute("ALTER TABLE sessions DROP COLUMN fork_step")
    con.execute("ALTER TABLE sessions DROP COLUMN fork_of")
    con.commit()
    con.close()
    row = SessionLog(path).session(child.id)
    assert (row["fork_of"], row["fork_step"]) == (parent.id, 1)
