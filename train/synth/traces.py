"""Scripted assistant turns for synthetic items, run through the real tool loop.

The turns are short templated sentences (a tiny model can learn them). Observations are never
written by hand: `run_trace` replays the turns through `core.loop` with `ReplayBackend`, so every
crop and selected frame is what the real operations return, and the result is a `Trajectory`.

Trace kinds (mixed as the paper describes):
* pixel      - a sentence, a crop around the target (with noise), the observation, the answer;
* correction - a wrong box whose crop shows nothing, then the corrected box (the wrong turn is
               masked with train_turns), then the answer;
* textual    - a direct answer for items readable in the overview (tools offered or not);
* video      - select_frames on the overview frames where the sign shows, then the answer;
* varied items (`varied`) may instead get a `search_traces` kind (two-step zoom, colour correction,
  not found, counting and relation crops).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core import protocol as P
from core.backends.replay import ReplayBackend
from core.loop import LoopConfig, Task, run_to_end
from core.media import ImageStore, Video, overview_indices
from core.operations import PIXEL_PRESETS, crop
from core.trajectory import Trajectory
from train.synth.tasks import OVERVIEW, VIDEO_FPS, Item


@dataclass
class Trace:
    kind: str  # pixel | correction | textual | textual_notool | video
    turns: list[str]
    train_turns: list[bool]
    tools: bool = True


def boxed(answer: str) -> str:
    return f"\\boxed{{{answer}}}"


def noisy_box(rng: np.random.Generator, target, noise: float = 0.015) -> list[float]:
    """The target box with a little noise, rounded to 2 decimals and kept valid."""
    x1, y1, x2, y2 = (float(v) + float(rng.uniform(-noise, noise)) for v in target)
    x1, y1 = max(0.0, min(x1, 0.97)), max(0.0, min(y1, 0.97))
    x2, y2 = min(0.99, max(x2, x1 + 0.02)), min(0.99, max(y2, y1 + 0.02))
    return [round(x1, 2), round(y1, 2), round(x2, 2), round(y2, 2)]


def wrong_box(rng: np.random.Generator, target) -> list[float]:
    """A box of the target's size far enough away that its padded crop cannot contain the target."""
    w, h = target[2] - target[0], target[3] - target[1]
    cx, cy = (target[0] + target[2]) / 2, (target[1] + target[3]) / 2
    for _ in range(200):
        nx, ny = float(rng.uniform(w / 2 + 0.02, 0.98 - w / 2)), float(rng.uniform(h / 2 + 0.02, 0.98 - h / 2))
        if abs(nx - cx) > 0.15 + w or abs(ny - cy) > 0.15 + h:
            return noisy_box(rng, (nx - w / 2, ny - h / 2, nx + w / 2, ny + h / 2), 0.0)
    raise ValueError("no free spot for a wrong box")


def closeup_item(item: Item, rng: np.random.Generator) -> Item:
    """A training-only close-up: the picture a good zoom on a zoom_needed scene returns (the tool's
    own crop of a noisy box), asked about directly. In a full trace the glyph's answer token is one
    of ~60 trained tokens; these short records give the language model an undiluted signal to learn
    to read the tower's tokens (experiments/token_loss.py: answer 1.82 nats without them, 0.44 with)."""
    view, _ = crop(item.image, noisy_box(rng, item.target))
    return Item(item.id, "closeup", "What is written on the tag in this close-up?", item.answer, image=view,
                subject=item.subject)


def crop_call(box: list[float], target_image: int = 1) -> str:
    return P.format_tool_call(P.CROP_TOOL, {"bbox_2d": box, "target_image": target_image})


def textual_answer(item: Item) -> str:
    a = item.answer
    if item.category == "zoom_optional":
        if item.meta["kind"] == "colour":
            return f"The {item.subject} is {a}.\n\n{boxed(a)}"
        return f"The {item.subject} is on the {a} side.\n\n{boxed(a)}"
    if item.category == "closeup":
        return f"The tag reads {a}.\n\n{boxed(a)}"
    if item.category == "counting":
        return f"I count {a} {item.subject}.\n\n{boxed(a)}"
    if item.category == "relative":
        first, second = item.subject.split("|")
        return f"The {first} is to the {a} of the {second}.\n\n{boxed(a)}"
    raise ValueError(f"no textual template for {item.category}")


def make_trace(item: Item, rng: np.random.Generator, correction_rate: float = 0.2,
               notool_rate: float = 0.1) -> Trace:
    """Pick the trace kind for an item and write its assistant turns (varied items may get a
    `search_traces` kind; the original generator's items draw exactly as before)."""
    if item.category == "zoom_needed":
        intro = f"The {item.subject} is too small to read. I will zoom in on it."
        answer = f"The tag reads {item.answer}.\n\n{boxed(item.answer)}"
        good = crop_call(noisy_box(rng, item.target))
        if rng.random() < correction_rate:
            again = f"The {item.subject} is not in this region. I will zoom in on the {item.subject} again."
            return Trace("correction", [f"{intro}\n\n{crop_call(wrong_box(rng, item.target))}",
                                        f"{again}\n\n{good}", answer], [False, True, True])
        return Trace("pixel", [f"{intro}\n\n{good}", answer], [True, True])
    if item.category == "video":
        a, b = item.visible_frames[0], item.visible_frames[-1]
        call = P.format_tool_call(P.FRAMES_TOOL, {"target_frames": list(item.visible_frames)})
        where = f"frame {a}" if a == b else f"frames {a} to {b}"  # one frame only in varied videos
        return Trace("video", [f"The {item.subject} appears in {where}. I will look at these frames.\n\n{call}",
                               f"The sign reads {item.answer}.\n\n{boxed(item.answer)}"], [True, True])
    tools = not rng.random() < notool_rate
    return Trace("textual" if tools else "textual_notool", [textual_answer(item)], [True], tools=tools)


def item_task(item: Item, video_path: str | None = None, media_path: str | None = None) -> Task:
    """The loop's Task for an item; videos are read back from their mp4 when there is one, so frames are
    as evaluation sees them."""
    if item.category == "video":
        video = Video.from_file(video_path) if video_path else frames_video(item)
        return Task(item.question, video=video, answer=item.answer, id=item.id,
                    media_path=media_path or video_path, meta={"category": item.category})
    return Task(item.question, image=item.image, answer=item.answer, id=item.id, media_path=media_path,
                meta={"category": item.category})


def frames_video(item: Item, n: int = OVERVIEW) -> Video:
    """The video straight from its generated frames (no mp4 round trip): the same overview sampling
    as a decoded file, for training splits where writing and decoding mp4s only costs time."""
    idx = overview_indices(len(item.frames), n)
    fps = item.meta.get("fps", VIDEO_FPS)
    return Video(overview=[item.frames[i] for i in idx], times=[i / fps for i in idx],
                 source_indices=idx, fps=fps, n_source_frames=len(item.frames))


def loop_config(tools: bool = True, preset: str = "tiny") -> LoopConfig:
    return LoopConfig(tools=tools, pixels=PIXEL_PRESETS[preset])


def run_trace(task: Task, trace: Trace, store: ImageStore, preset: str = "tiny") -> Trajectory:
    """Replay the scripted turns through the real loop; the observations come from real operations."""
    traj = run_to_end(ReplayBackend(list(trace.turns)), task, config=loop_config(trace.tools, preset), store=store)
    if traj.status != "done" or len(traj.steps) != len(trace.turns):
        raise RuntimeError(f"trace for {task.id} ended {traj.status} after {len(traj.steps)} steps: {traj.error}")
    return traj
