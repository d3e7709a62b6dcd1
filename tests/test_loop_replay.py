"""The tool loop end to end with the replay backend: real operations, real images and videos."""
import json
import threading

import numpy as np
import pytest
from PIL import Image

from core import operations as ops
from core.backends.base import Backend, Generation, GenerationParams
from core.backends.replay import ReplayBackend
from core.loop import Done, Episode, LoopConfig, StepDone, StepStart, Task, TextDelta, run, run_batch, run_to_end
from core.media import MemoryImageStore, Video, load_image
from core.protocol import format_tool_call
from core.trajectory import Trajectory
from tests.test_protocol import RELEASED_OUTPUT


def crop_call(bbox, target=1, name="crop_image_normalized"):
    return "Let me look closer.\n\n" + format_tool_call(name, {"bbox_2d": bbox, "target_image": target})


def test_released_example_gives_the_release_crop(photo_path):
    image = load_image(photo_path)  # 800x600 photo-like JPEG; the train preset shows it at 812x588
    store = MemoryImageStore()
    traj = run_to_end(ReplayBackend([RELEASED_OUTPUT, "It is a sheep. \\boxed{B}"]),
                      Task(question="What animal?", image=image), store=store)
    step = traj.steps[0]
    shown = image.resize((812, 588), Image.Resampling.BICUBIC)
    assert store.get(traj.media.model_view.sha).tobytes() == shown.tobytes()
    # The release crops what it showed: pad 0.1, clamp, PIL's crop rounds (0.1*588 = 58.8 -> 59, ...)
    assert step.box_px == [0, 59, 325, 294] and step.source_box_px == [0, 60, 320, 300]
    expected_view = shown.crop((0, 59, 325, 294)).resize((336, 224), Image.Resampling.BICUBIC)  # smart_resize
    view = store.get(step.images[0].sha)
    assert view.tobytes() == expected_view.tobytes()  # the release's pixels: crop, then one bicubic resize
    assert step.observation == "\nHere is the cropped image (Image Size: 336x224):"
    assert traj.answer == "B" and traj.status == "done" and traj.n_ops == 1


def test_crop_of_a_crop_maps_back_to_the_source_image(photo_path):
    image = load_image(photo_path)
    turns = [crop_call([0.3, 0.3, 0.6, 0.6]), crop_call([0.5, 0.5, 0.9, 0.9], target=2), "\\boxed{x}"]
    traj = run_to_end(ReplayBackend(turns), Task(question="Q", image=image))
    first, second = traj.steps[0], traj.steps[1]
    assert first.box_px == [162, 118, 568, 412]  # on the 812x588 view: 0.2 * 812 = 162.4, 0.7 * 588 = 411.6
    assert first.source_box_px == [160, 120, 560, 420]  # back on the 800x600 picture
    assert second.target_image == 2
    # the second crop cut the first one's view: its box maps back through both resizes
    vw, vh = first.images[0].width, first.images[0].height
    sx, sy = (568 - 162) / vw * 800 / 812, (412 - 118) / vh * 600 / 588
    ox, oy = 162 * 800 / 812, 118 * 600 / 588
    x0, y0, x1, y1 = second.box_px
    assert second.source_box_px == [round(ox + x0 * sx), round(oy + y0 * sy), round(ox + x1 * sx), round(oy + y1 * sy)]
    assert Trajectory.from_json(traj.to_json()).to_dict() == traj.to_dict()


def test_tiny_preset_crops_the_full_resolution_picture(photo_path):
    image = load_image(photo_path)
    turns = [crop_call([0.3, 0.3, 0.6, 0.6]), crop_call([0.5, 0.5, 0.9, 0.9], target=2), "\\boxed{x}"]
    traj = run_to_end(ReplayBackend(turns), Task(question="Q", image=image),
                      config=LoopConfig(pixels=ops.PixelLimits.preset("tiny")))
    first, second = traj.steps[0], traj.steps[1]
    assert first.box_px == first.source_box_px == [160, 120, 560, 420]  # 0.2 * 600 = 119.99..: rounded
    ox, oy = first.box_px[:2]
    assert second.source_box_px == [ox + second.box_px[0], oy + second.box_px[1], ox + second.box_px[2], oy + second.box_px[3]]


BAD_TURNS = {
    "malformed json": "<tool_call>\n{\"name\": \"crop_image_normalized\", \"arguments\": {bbox_2d: 1}\n</tool_call>",
    "missing argument": "<tool_call>\n{\"name\": \"crop_image_normalized\", \"arguments\": {\"bbox_2d\": [0.1, 0.1, 0.5, 0.5]}}\n</tool_call>",
    "unknown tool": "<tool_call>\n{\"name\": \"rotate_image\", \"arguments\": {}}\n</tool_call>",
    "nan box": "<tool_call>\n{\"name\": \"crop_image\", \"arguments\": {\"bbox_2d\": [0.1, NaN, 0.5, 0.5], \"target_image\": 1}}\n</tool_call>",
    "string box": crop_call(["a", "b", "c", "d"]),
    "inverted box": crop_call([0.6, 0.6, 0.2, 0.2]),
    "box inverted beyond its padding": crop_call([0.4, 0.7, 0.6, 0.4]),
    "out of range box": crop_call([1500, 1200, 1700, 1400]),
    "target out of range": crop_call([0.1, 0.1, 0.5, 0.5], target=3),
    "target zero": crop_call([0.1, 0.1, 0.5, 0.5], target=0),
    "select frames on image": format_tool_call("select_frames", {"target_frames": [1, 2]}),
}


@pytest.mark.parametrize("name", list(BAD_TURNS))
def test_bad_tool_calls_become_error_turns_and_the_loop_continues(name, photo_path):
    image = load_image(photo_path)
    traj = run_to_end(ReplayBackend([BAD_TURNS[name], crop_call([0.1, 0.1, 0.5, 0.5]), "\\boxed{ok}"]),
                      Task(question="Q", image=image))
    bad, good = traj.steps[0], traj.steps[1]
    assert bad.error and bad.observation == f"\nExecution error:\n{bad.error}\n" and not bad.images
    assert good.error is None and good.box_px is not None  # the loop went on and executed the next call
    assert traj.answer == "ok" and traj.status == "done" and traj.n_errors == 1
    assert traj.final_op_failed is False


def test_ending_on_a_failed_operation_is_flagged(photo_path):
    traj = run_to_end(ReplayBackend([crop_call([0.1, 0.1, 0.5, 0.5]), crop_call([0.6, 0.6, 0.2, 0.2]), "\\boxed{1}"]),
                      Task(question="Q", image=load_image(photo_path)))
    assert traj.final_op_failed is True


def test_select_frames_on_a_real_video(video_path):
    video = Video.from_file(video_path)
    store = MemoryImageStore()
    turns = [format_tool_call("select_frames", {"target_frames": [2, 9, 16]}),
             crop_call([0.0, 0.0, 0.5, 0.5], target=2), "\\boxed{7}"]
    traj = run_to_end(ReplayBackend(turns), Task(question="Which number?", video=video), store=store)
    s0, s1 = traj.steps[0], traj.steps[1]
    assert s0.frames == [2, 9, 16] and len(s0.images) == 3
    assert "Numbered 1 to 3" in s0.observation
    # selected frames are the overview frames as shown (308x252), resized to the frame limits
    assert (s0.images[0].width, s0.images[0].height) == ops.smart_resize(240, 320, ops.PixelLimits().frame_min,
                                                                          ops.PixelLimits().frame_max)[::-1]
    # after frames were added, they count from 2: target_image 2 is the first selected frame (the release)
    assert s1.error is None and s1.target_image == 2 and s1.source_box_px is None
    assert traj.media.kind == "video" and len(traj.media.overview) == 16 and traj.n_ops == 2


def test_crop_on_a_video_before_any_selection_picks_an_overview_frame(video_path):
    video = Video.from_file(video_path)
    traj = run_to_end(ReplayBackend([crop_call([0.2, 0.2, 0.6, 0.6], target=16), "\\boxed{1}"]),
                      Task(question="Q", video=video))
    assert traj.steps[0].error is None and traj.steps[0].box_px == [31, 25, 216, 176]  # on the 308x252 view
    bad = run_to_end(ReplayBackend([crop_call([0.2, 0.2, 0.6, 0.6], target=17), "\\boxed{1}"]),
                     Task(question="Q", video=video))
    assert "within [1,16]" in bad.steps[0].error


@pytest.mark.parametrize("frames,fragment", [([1, 2, 3, 4, 5, 6, 7, 8, 9], "no more than 8"),
                                             ([0], "out of range"), ([17], "out of range")])
def test_bad_frame_selection_in_the_loop(frames, fragment, video_path):
    traj = run_to_end(ReplayBackend([format_tool_call("select_frames", {"target_frames": frames}), "\\boxed{1}"]),
                      Task(question="Q", video=Video.from_file(video_path)))
    assert fragment in traj.steps[0].error and traj.status == "done"


def test_max_ops_stops_the_loop(photo_path):
    turns = [crop_call([0.1, 0.1, 0.6, 0.6])] * 6
    traj = run_to_end(ReplayBackend(turns), Task(question="Q", image=load_image(photo_path)),
                      config=LoopConfig(max_ops=2))
    assert traj.status == "max_ops" and traj.n_ops == 2 and len(traj.steps) == 3


def test_tools_off_never_executes_a_call(photo_path):
    traj = run_to_end(ReplayBackend([crop_call([0.1, 0.1, 0.6, 0.6])]), Task(question="Q", image=load_image(photo_path)),
                      config=LoopConfig(tools=False))
    assert traj.status == "done" and traj.n_ops == 0 and traj.guideline == "notool"


def test_streaming_events_come_in_order(photo_path):
    events = list(run(ReplayBackend([crop_call([0.1, 0.1, 0.6, 0.6]), "\\boxed{2}"], chunk_chars=7),
                      Task(question="Q", image=load_image(photo_path))))
    kinds = [type(e).__name__ for e in events]
    assert kinds[0] == "StepStart" and kinds[-1] == "Done"
    assert kinds.count("StepStart") == 2 and kinds.count("StepDone") == 2
    first_done = next(e for e in events if isinstance(e, StepDone))
    streamed = "".join(e.text for e in events[:kinds.index("StepDone")] if isinstance(e, TextDelta))
    assert streamed == first_done.step.text
    assert first_done.source is not None and len(first_done.images) == 1


class CrashingBackend(Backend):
    name = "crashing"

    def __init__(self, good_turns):
        self.good = good_turns

    def generate(self, messages, params, cancel=None):
        i = sum(m["role"] == "assistant" for m in messages)
        if i >= len(self.good):
            raise RuntimeError("CUDA out of memory (simulated by a backend that really raises)")
        return ReplayBackend(self.good).generate(messages, params)


def test_a_backend_crash_keeps_finished_steps(photo_path):
    traj = run_to_end(CrashingBackend([crop_call([0.1, 0.1, 0.6, 0.6])]), Task(question="Q", image=load_image(photo_path)))
    assert traj.status == "error" and "out of memory" in traj.error
    assert len(traj.steps) == 1 and traj.steps[0].box_px is not None


def test_cancel_before_a_step_marks_the_trajectory_cancelled(photo_path):
    cancel = threading.Event()
    events = run(ReplayBackend([crop_call([0.1, 0.1, 0.6, 0.6]), "\\boxed{1}"]),
                 Task(question="Q", image=load_image(photo_path)), cancel=cancel)
    for e in events:
        if isinstance(e, StepDone):
            cancel.set()
        if isinstance(e, Done):
            traj = e.trajectory
    assert traj.status == "cancelled" and traj.n_ops == 1


def test_run_batch_advances_many_episodes(photo_path, video_path):
    image = load_image(photo_path)
    tasks = [Task(question=f"Q{i}", image=image) for i in range(3)]
    trajs = run_batch(ReplayBackend([crop_call([0.1, 0.1, 0.6, 0.6]), "\\boxed{3}"]), tasks)
    assert [t.answer for t in trajs] == ["3", "3", "3"] and all(t.n_ops == 1 for t in trajs)
    assert len({t.id for t in trajs}) == 3


class QuestionScripts(ReplayBackend):
    """Each conversation replays the turns its question names; records each batched call."""

    def __init__(self, scripts: dict[str, list[str]]) -> None:
        super().__init__([])
        self.scripts, self.calls = scripts, []

    def stream(self, messages, params, cancel=None):
        question = messages[1]["content"][-1]["text"].split("\n")[0]
        turn = sum(1 for m in messages if m["role"] == "assistant")
        yield Generation(text=self.scripts[question][turn], tokens_out=1)

    def generate_batch(self, batch, params):
        self.calls.append([(m[1]["content"][-1]["text"].split("\n")[0], sum(x["role"] == "assistant" for x in m))
                           for m in batch])
        return super().generate_batch(batch, params)


def test_run_batch_refills_the_batch_with_waiting_conversations(photo_path):
    image = load_image(photo_path)
    crop, answer = crop_call([0.1, 0.1, 0.6, 0.6]), "\\boxed{3}"
    scripts = {"A": [answer], "B": [crop, crop, answer], "C": [crop, answer], "D": [answer]}
    backend = QuestionScripts(scripts)
    done = []
    trajs = run_batch(backend, [Task(question=q, image=image) for q in scripts], batch_size=2,
                      on_done=lambda ep: done.append(ep.trajectory.question))
    assert [len(t.steps) for t in trajs] == [1, 3, 2, 1] and all(t.answer == "3" for t in trajs)
    # A ends after one turn and C takes its place beside B's second turn; D joins when C ends
    assert backend.calls == [[("A", 0), ("B", 0)], [("B", 1), ("C", 0)], [("B", 2), ("C", 1)], [("D", 0)]]
    assert done == ["A", "B", "C", "D"]
    with pytest.raises(ValueError, match="batch_size"):
        run_batch(backend, [Task(question="A", image=image)], batch_size=0)


def test_replay_file_errors_are_clear(tmp_path, photo_path):
    from core.backends.base import BackendError
    bad = tmp_path / "bad.json"
    bad.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(BackendError, match="cannot read replay file"):
        ReplayBackend(bad)
    (tmp_path / "obj.json").write_text(json.dumps({"a": 1}))
    with pytest.raises(BackendError, match="JSON list of strings"):
        ReplayBackend(tmp_path / "obj.json")
    traj = run_to_end(ReplayBackend([crop_call([0.1, 0.1, 0.6, 0.6])]), Task(question="Q", image=load_image(photo_path)))
    assert traj.status == "error" and "only 1 turns" in traj.error and len(traj.steps) == 1


def test_run_takes_a_task_or_an_episode_not_both():
    task = Task(question="Which number?", image=Image.new("RGB", (64, 64)))
    episode = Episode(task, LoopConfig(), None, "replay", "m")
    with pytest.raises(ValueError, match="a task or an episode, not both"):
        list(run(ReplayBackend(["\\boxed{1}"]), task, episode=episode))
    with pytest.raises(ValueError, match="the episode's own config and store"):
        list(run(ReplayBackend(["\\boxed{1}"]), config=LoopConfig(), episode=episode))
    assert [type(e).__name__ for e in run(ReplayBackend(["\\boxed{1}"]), episode=episode)][-1] == "Done"


def test_large_crop_records_the_box_the_model_saw():
    """At the eval preset a crop of a 4000x3000 photo cuts the 2296x1708 first view, as the release
    does: box_px is on that view, source_box_px on the photo, the view one resize of the box."""
    rng = np.random.default_rng(5)
    image = Image.fromarray(rng.integers(0, 256, (3000, 4000, 3), dtype=np.uint8))
    store = MemoryImageStore()
    config = LoopConfig(pixels=ops.PixelLimits.preset("eval"))
    traj = run_to_end(ReplayBackend([crop_call([0.12, 0.22, 0.28, 0.38]), "\\boxed{x}"]),
                      Task(question="Q", image=image), config=config, store=store)
    step = traj.steps[0]
    shown = store.get(traj.media.model_view.sha)
    assert shown.size == (2296, 1708)
    assert step.box_px == [46, 205, 872, 820]
    assert step.source_box_px == [80, 360, 1519, 1440]
    view = store.get(step.images[0].sha)
    assert view.tobytes() == shown.crop((46, 205, 872, 820)).resize((840, 616), Image.Resampling.BICUBIC).tobytes()
    assert step.observation.endswith("(Image Size: 840x616):")
