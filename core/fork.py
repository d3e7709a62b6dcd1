"""Forks: a trajectory run on from step K with that step's call (or its whole text) edited.

    parent = Trajectory.from_json(open("run.json").read())
    for event in fork(backend, parent, 1, Edit(box=[0.1, 0.2, 0.4, 0.5]), task_of(parent)):
        ...                                   # the same events as core.loop.run, from step K on

Steps before K are the parent's records, copied as they are. The conversation the model continues
is rebuilt from them: each recorded turn runs through the loop again (so the images later calls can
target are the real ones, crops of crops numbered as before) and must execute as it was recorded;
the messages then hold the parent's observation texts and, where the store has them, the parent's
own pictures. Step K's text is edited and run through the real operations (`Episode.advance`), and
the backend continues from the new observation. The fork's `meta.fork_of = {"session": parent id,
"step": K}`; `meta.fork_edit` says what changed.
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable, Iterator

from PIL import Image

from core import protocol as P
from core.backends.base import Backend, Generation, GenerationParams
from core.loop import Done, Episode, Event, LoopConfig, StepDone, StepStart, Task, TextDelta, run
from core.media import DEFAULT_MAX_IMAGE_PIXELS, ImageStore, MediaError, MemoryImageStore, Video, load_image
from core.operations import PixelLimits
from core.paths import PathError
from core.scoring import judge_trajectory
from core.trajectory import ImageRef, Step, Trajectory

logger = logging.getLogger(__name__)

FRAME_SUFFIXES = (".jpg", ".jpeg", ".png")
FORK_KEYS = ("fork_of", "fork_edit", "fork_pictures_differ")  # what a fork adds to its meta


class ForkError(ValueError):
    """A fork that cannot be made, with a one-line reason (bad step, edit that does not fit the call)."""


@dataclass
class Edit:
    """What a fork changes in step K: the call's arguments, or the whole text of the turn."""

    box: list[float] | None = None  # new bbox_2d of a crop call (normalized when all < 1, else pixels)
    target_image: int | None = None  # new target_image of a crop call (1 = the original image)
    frames: list[int] | None = None  # new target_frames of a select_frames call (1-based)
    text: str | None = None  # the turn's whole new text (reasoning and call, or a final answer)

    def __post_init__(self) -> None:
        given = [f.name for f in fields(self) if getattr(self, f.name) is not None]
        if not given:
            raise ForkError("nothing to edit: give a box, a target image, frames or a text")
        if self.text is not None and len(given) > 1:
            raise ForkError("a text edit replaces the whole turn: give it alone")
        if self.frames is not None and (self.box is not None or self.target_image is not None):
            raise ForkError("frames edit a select_frames call; a box or target image edits a crop call")
        if self.box is not None and len(self.box) != 4:
            raise ForkError(f"a box has 4 numbers x1,y1,x2,y2, not {len(self.box)}")
        if self.frames is not None and not self.frames:
            raise ForkError("give at least one frame")

    def as_meta(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}


def edit_text(text: str, edit: Edit) -> str:
    """The turn's text with its tool call's arguments edited, the reasoning before the call kept. A call
    the model garbled is replaced by a fresh one of the edited kind (a crop targets image 1 unless told)."""
    if edit.text is not None:
        return edit.text
    if P.TOOL_CALL_START not in text:
        raise ForkError("this step calls no operation (it is an answer); edit its text instead")
    wanted = P.FRAMES_TOOL if edit.frames is not None else P.CROP_TOOL
    try:
        call = P.parse_tool_call(text) if P.has_tool_call(text) else None
    except P.ToolCallError:
        call = None
    name, args = (call.name, dict(call.arguments)) if call else (wanted, {} if edit.frames else {"target_image": 1})
    if (name == P.FRAMES_TOOL) != (wanted == P.FRAMES_TOOL):
        raise ForkError(f"this step calls {name}; edit its " + ("frames" if name == P.FRAMES_TOOL
                                                                 else "box or target image"))
    if edit.frames is not None:
        args["target_frames"] = list(edit.frames)
    if edit.box is not None:
        args["bbox_2d"] = list(edit.box)
    if edit.target_image is not None:
        args["target_image"] = edit.target_image
    if name != P.FRAMES_TOOL and "bbox_2d" not in args:
        raise ForkError("the step's call is not readable: give the box too")
    return text[:text.rfind(P.TOOL_CALL_START)] + P.format_tool_call(name, args)


# ---- the parent's conversation again ---------------------------------------------------------------

def parent_config(parent: Trajectory) -> LoopConfig:
    """The loop settings the parent ran with (its resolution above all: the same pictures again)."""
    cfg, pixels = parent.config, parent.config.get("pixels")
    return LoopConfig(tools=parent.tools_enabled, guideline=parent.guideline if parent.guideline != "notool" else "vcot",
                      prompt_variant=cfg.get("prompt_variant", "rl"), max_ops=cfg.get("max_ops", 4),
                      max_images=cfg.get("max_images", 32),
                      pixels=PixelLimits(**pixels) if isinstance(pixels, dict) else PixelLimits())


def task_of(parent: Trajectory, find_image: Callable[[str], Path | None] | None = None,
            max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> Task:
    """The parent's question on its media again: the stored original image (`find_image(sha)`, the
    Studio's store) or the file at `media.path`; a video file or a folder of frames."""
    media = parent.media
    path = Path(media.path) if media.path else None
    common = dict(question=parent.question, choices=parent.choices, answer=parent.ground_truth,
                  media_path=media.path, meta=dict(parent.meta))
    if media.kind == "image":
        stored = find_image(media.image.sha) if find_image and media.image else None
        source = stored or (path if path and path.is_file() else None)
        if source is None:
            raise MediaError(f"the image of this trajectory is not stored and not at {media.path!r}")
        return Task(image=load_image(source, max_pixels), **common)
    n = len(media.overview) or 16
    if media.kind == "frames" and path and path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in FRAME_SUFFIXES)
        return Task(video=Video.from_frame_files(files, n=n), **common)
    if path and path.is_file():
        return Task(video=Video.from_file(path, n=n), **common)
    raise MediaError(f"the video of this trajectory is not at {media.path!r}")


def _stored(store: ImageStore, sha: str) -> Image.Image | None:
    try:
        return store.get(sha)
    except (KeyError, MediaError, PathError, OSError):
        return None


def _parent_pictures(regenerated: list[ImageRef], recorded: list[ImageRef], store: ImageStore) -> tuple[dict, bool]:
    """Where a picture made again differs from the parent's: the parent's own from the store, by
    position, and whether one that differs is not stored (the model then sees the new one)."""
    swap, missing = {}, False
    for i, (new, old) in enumerate(zip(regenerated, recorded)):
        if new.sha != old.sha:
            image = _stored(store, old.sha)
            swap[i], missing = image, missing or image is None
    return {i: im for i, im in swap.items() if im is not None}, missing


def _outcome(step: Step) -> tuple:
    return step.tool, step.error is not None, step.target_image, step.box_px, step.frames, len(step.images)


def rebuild(parent: Trajectory, k: int, task: Task, store: ImageStore, backend: str = "", model: str = "") -> Episode:
    """An episode holding the parent's conversation up to step K, ready for step K. Raises ForkError
    when the media is not what the parent saw or a recorded step no longer runs as it did."""
    episode = Episode(task, parent_config(parent), store, backend, model)
    for key in FORK_KEYS:  # a fork of a fork: the parent's own marks go
        episode.trajectory.meta.pop(key, None)
    new, old = episode.trajectory.media, parent.media
    if old.image and new.image and new.image.sha != old.image.sha:
        raise ForkError(f"the image at {old.path!r} is not the one this trajectory was made on")
    first = episode.messages[1]["content"][0]
    pictures = first["video"] if "video" in first else [first["image"]]
    swap, missing = _parent_pictures(new.overview or [new.model_view], old.overview or [old.model_view], store)
    for i, image in swap.items():
        pictures[i] = image
    if "image" in first:
        first["image"] = pictures[0]
    differ = [-1] if missing else []
    for step in parent.steps[:k]:
        episode.advance(Generation(text=step.text, tokens_in=step.tokens_in, tokens_out=step.tokens_out,
                                   seconds=step.gen_seconds, finish_reason=step.finish_reason))
        again = episode.trajectory.steps[-1]
        if episode.done or _outcome(again) != _outcome(step):
            raise ForkError(f"step {step.index} does not run as recorded (was {_outcome(step)[:5]}, now "
                            f"{_outcome(again)[:5]}{', and it ended the episode' if episode.done else ''})")
        content = episode.messages[-1]["content"]
        content[0]["text"] = step.observation if step.observation is not None else content[0]["text"]
        swap, missing = _parent_pictures(again.images, step.images, store)
        for i, image in swap.items():
            content[1 + i]["image"] = image
        differ += [step.index] if missing else []
    if differ:
        logger.warning("pictures of steps %s differ from the parent's and are not stored: the model sees them "
                       "as made now", differ)
        episode.trajectory.meta["fork_pictures_differ"] = differ
    episode.trajectory.steps = [copy.deepcopy(s) for s in parent.steps[:k]]
    episode.trajectory.media = copy.deepcopy(parent.media)
    return episode


# ---- the fork ----------------------------------------------------------------------------------------

def edited_step(parent: Trajectory, k: int, edit: Edit) -> str:
    """Step K's new text; raises ForkError for a step that does not exist or an edit that does not fit."""
    if not 0 <= k < len(parent.steps):
        raise ForkError(f"no step {k}: the trajectory has steps 0 to {len(parent.steps) - 1}")
    return edit_text(parent.steps[k].text, edit)


def start_fork(backend: Backend, parent: Trajectory, k: int, edit: Edit, task: Task,
               store: ImageStore | None = None) -> tuple[Episode, str]:
    """The rebuilt episode (its trajectory already marked as a fork, so it can be logged before the
    first token) and step K's edited text. Raises ForkError, MediaError."""
    text = edited_step(parent, k, edit)
    episode = rebuild(parent, k, task, store if store is not None else MemoryImageStore(), backend.name,
                      backend.model_id)
    meta = episode.trajectory.meta
    meta["fork_of"], meta["fork_edit"] = {"session": parent.id, "step": k}, edit.as_meta()
    return episode, text


def run_fork(backend: Backend, episode: Episode, text: str, params: GenerationParams | None = None,
             cancel=None, scorer: str = "text") -> Iterator[Event]:
    """Step K (the edited text, run through the real operations), then the backend from the new
    observation on: the events of core.loop.run. The answer is judged when the truth is known."""
    k = len(episode.trajectory.steps)
    yield StepStart(k)
    yield TextDelta(k, text)
    step = episode.advance(Generation(text=text))
    yield StepDone(step, episode.last_images, episode.last_source)
    events = iter([Done(episode.trajectory)]) if episode.done else run(backend, episode=episode, params=params,
                                                                       cancel=cancel)
    for event in events:
        if isinstance(event, Done):
            judge_trajectory(event.trajectory, scorer, event.trajectory.choices)
        yield event


def fork(backend: Backend, parent: Trajectory, k: int, edit: Edit, task: Task, params: GenerationParams | None = None,
         store: ImageStore | None = None, cancel=None) -> Iterator[Event]:
    """Fork `parent` at step K with `edit` and stream the fork (see the module docstring)."""
    episode, text = start_fork(backend, parent, k, edit, task, store)
    yield from run_fork(backend, episode, text, params, cancel, parent.scorer or "text")


def fork_to_end(backend: Backend, parent: Trajectory, k: int, edit: Edit, task: Task, **kw) -> Trajectory:
    for event in fork(backend, parent, k, edit, task, **kw):
        if isinstance(event, Done):
            return event.trajectory
    raise AssertionError("fork() ended without Done")
