"""The tool loop: generate -> parse -> execute -> observe -> repeat.

One loop serves the app (streaming `run`), evaluation and RL rollouts (`run_batch`). Both drive
the same `Episode`, whose `advance` holds the protocol's turn logic. The loop knows nothing of UI,
database or training; images go to an `ImageStore` and the result is a `Trajectory`.

Termination follows the release: the turn does not end with a tool call, or the operation cap,
the image cap or the context-token cap is reached.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Callable, Iterator

from PIL import Image

from core import operations as ops
from core import protocol as P
from core.backends.base import Backend, ContextFull, Generation, GenerationParams
from core.confidence import answer_confidence, step_uncertainty
from core.familiarity import mark_familiarity
from core.media import ImageStore, MemoryImageStore, Video
from core.runtime import parallel_map
from core.scoring import extract_answer
from core.trajectory import ImageRef, Media, Step, Trajectory


@dataclass
class LoopConfig:
    tools: bool = True
    guideline: str = "vcot"  # vcot | default | notool (notool is used whenever tools are off)
    prompt_variant: str = "rl"  # rl | legacy: wording of the bbox_2d description
    max_ops: int = 4  # the release stops once more than 3 calls were made, so at most 4 run
    max_images: int = 32
    max_context_tokens: int = 12 * 1024 - 200
    pixels: ops.PixelLimits = field(default_factory=ops.PixelLimits)


@dataclass
class Task:
    """A question about one image or one video."""

    question: str
    image: Image.Image | None = None
    video: Video | None = None
    choices: list[str] | None = None
    answer: str | None = None  # ground truth, when known
    media_path: str | None = None
    id: str | None = None
    meta: dict = field(default_factory=dict)


# ---- events, for streaming UIs ----------------------------------------------------------------

@dataclass
class StepStart:
    index: int


@dataclass
class TextDelta:
    index: int
    text: str


@dataclass
class StepDone:
    step: Step
    images: list[Image.Image]  # what the operation returned, as the model saw it
    source: Image.Image | None  # the image a crop was cut from (a view or full resolution: PixelLimits.from_view)


@dataclass
class Done:
    trajectory: Trajectory


Event = StepStart | TextDelta | StepDone | Done


def operation_error(e: Exception) -> str:
    """The model-facing message for a failed call: the protocol's own text, or a short description
    of what the operation refused (a legal but extreme crop, a frame the file cannot decode, ...)."""
    if isinstance(e, P.ToolCallError):
        return P.short_message(str(e))
    if isinstance(e, RecursionError):
        return "The operation failed: its arguments are nested too deeply."
    detail = (str(e).splitlines() or [""])[0] or type(e).__name__
    return P.short_message(f"The operation failed: {detail}")


UNCLOSED_CALL = ("The tool call is not complete (no closing </tool_call>), so it was not run; "
                 "the turn ended the episode.")


@dataclass
class RawCrop:
    """A crop not cut out yet: its source image and box in the source's pixels."""

    source: Image.Image
    box: tuple[int, int, int, int]


class Episode:
    """The state of one conversation: messages for the model, images for the operations."""

    def __init__(self, task: Task, config: LoopConfig, store: ImageStore | None = None,
                 backend: str = "", model: str = "") -> None:
        if (task.image is None) == (task.video is None):
            raise ValueError("a task needs exactly one of image or video")
        self.task, self.config = task, config
        self.store = store if store is not None else MemoryImageStore()
        px = config.pixels
        guideline = config.guideline if config.tools else "notool"
        is_video = task.video is not None
        media = Media(kind="image" if not is_video else ("video" if task.video.path else "frames"),
                      path=task.media_path or (task.video.path if is_video else None))
        if is_video:
            view = [ops.resize_for_model(f, px.frame_min, px.video_frame_max) for f in task.video.overview]
            media.overview = [self._ref(f) for f in view]
            media.frame_times, media.fps = list(task.video.times), task.video.fps
            first: dict = {"type": "video", "video": view}
            self.overview_view = view
            self.raw: list[Image.Image | RawCrop] = []  # the images operations added, as crops see them
        else:
            view_img = ops.resize_for_model(task.image, px.first_min, px.first_max)
            media.image, media.model_view = self._ref(task.image), self._ref(view_img)
            first = {"type": "image", "image": view_img}
            self.raw = [view_img if px.from_view else task.image]
        # where each raw image lies in the original input: its left, top and pixel scale (x, y);
        # None for video frames
        self.origins: list[tuple[float, float, float, float] | None] = [] if is_video else \
            [(0.0, 0.0, task.image.width / self.raw[0].width, task.image.height / self.raw[0].height)]
        tools = P.tools_for(is_video, config.prompt_variant, task.video.n_frames if is_video else 16) \
            if config.tools else None
        self.messages: list[dict] = [
            {"role": "system", "content": P.system_prompt(tools)},
            {"role": "user", "content": [first, {"type": "text", "text": P.question_text(
                task.question, task.choices, guideline)}]},
        ]
        self.trajectory = Trajectory(
            question=P.clean_text(task.question), choices=task.choices, media=media, ground_truth=task.answer,
            tools_enabled=config.tools, guideline=guideline, backend=backend, model=model,
            config={"max_ops": config.max_ops, "max_images": config.max_images,
                    "prompt_variant": config.prompt_variant, "pixels": vars(px)},
            meta=dict(task.meta))
        if task.id:
            self.trajectory.id = task.id
        self.n_images = 1
        self.last_images: list[Image.Image] = []
        self.last_source: Image.Image | None = None
        self.last_probs: tuple[list[str], list[float]] | None = None  # the latest turn's tokens, log-probs
        self.done = False

    def _ref(self, image: Image.Image) -> ImageRef:
        return ImageRef(self.store.put(image), image.width, image.height)

    def advance(self, gen: Generation) -> Step:
        """Take one assistant turn: record it, run its tool call, feed back the observation."""
        traj, cfg = self.trajectory, self.config
        gen.text = P.clean_text(gen.text)
        step = Step(index=len(traj.steps), text=gen.text, tokens_in=gen.tokens_in, tokens_out=gen.tokens_out,
                    gen_seconds=gen.seconds, finish_reason=gen.finish_reason,
                    started_at=time.time() - gen.seconds)
        traj.steps.append(step)
        self.last_probs = self._uncertainty(gen, step)
        self.messages.append({"role": "assistant", "content": [{"type": "text", "text": gen.text}]})
        self.last_images, self.last_source = [], None
        if gen.finish_reason == "cancelled":
            return self._finish("cancelled")
        if not (cfg.tools and P.has_tool_call(gen.text)):
            if cfg.tools and P.TOOL_CALL_START in gen.text:  # a call that never closed: an error, never hidden
                step.error = UNCLOSED_CALL
            return self._finish("max_tokens" if gen.finish_reason == "length" else "done")
        if traj.n_ops >= cfg.max_ops:
            return self._finish("max_ops")
        t0 = time.perf_counter()
        try:
            call = P.parse_tool_call(gen.text)
            step.tool, step.arguments = P.CROP_TOOL if call.name in P.CROP_ALIASES else call.name, call.arguments
            images, observation = self._execute(call, step)
        except Exception as e:  # noqa: BLE001 - model output is untrusted: any failure is fed back
            message = operation_error(e)
            step.error, images, observation = message, [], P.error_observation(message)
        step.tool_seconds = time.perf_counter() - t0
        step.observation = observation
        step.images = [self._ref(im) for im in images]
        self.last_images = images
        self.messages.append({"role": "user", "content": [{"type": "text", "text": observation}]
                              + [{"type": "image", "image": im} for im in images]})
        self.n_images += len(images)
        if self.n_images > cfg.max_images:
            return self._finish("max_images")
        if gen.tokens_in + gen.tokens_out > cfg.max_context_tokens:
            return self._finish("max_tokens")
        return step

    @staticmethod
    def _uncertainty(gen: Generation, step: Step) -> tuple[list[str], list[float]] | None:
        """Record the turn's mean log-probability and least sure tokens; its tokens and their
        log-probabilities, for the answer's confidence (None where the backend gave none)."""
        if not gen.logprobs or not gen.tokens:
            return None
        step.mean_logprob, unsure = step_uncertainty(gen.tokens, gen.logprobs, step.text)
        step.unsure = [u.to_dict() for u in unsure]
        return gen.tokens, gen.logprobs

    def _execute(self, call: P.ToolCall, step: Step) -> tuple[list[Image.Image], str]:
        if call.name == P.FRAMES_TOOL:
            return self._select_frames(call, step)
        return self._crop(call, step)

    def _crop(self, call: P.ToolCall, step: Step) -> tuple[list[Image.Image], str]:
        args, video = call.arguments, self.task.video
        for name in ("bbox_2d", "target_image"):
            if name not in args:
                raise P.ToolCallError(f"Missing argument `{name}` in `{call.name}` operation.")
        target = P.require_number(args["target_image"], "target_image")
        # On a video with nothing added yet, target_image picks an overview frame; after that the added
        # images count from 2, the video being image 1 (the release's rules).
        frame_mode = video is not None and not self.raw
        first = 2 if video is not None and not frame_mode else 1
        n = video.n_frames if frame_mode else len(self.raw) + first - 1
        if target != int(target) or not first <= target <= n:
            raise ops.target_index_error(n, args["target_image"], "frame" if frame_mode else
                                         "added" if first == 2 else "image")
        k, px = int(target), self.config.pixels
        if frame_mode:
            source = self.overview_view[k - 1] if px.from_view else video.frames([k])[0]
        else:
            source = self._raw_image(k - first)
        box = ops.crop_box(args["bbox_2d"], source.width, source.height, call.name)
        view = ops.crop_view(source, box, px.crop_min, px.crop_max)  # may refuse: before any state changes
        step.target_image, step.box_norm, step.box_px = k, list(box.norm), list(box.px)
        # the model's view is what a later crop cuts (the release); else the crop, cut out when targeted
        added = view if px.from_view else RawCrop(source, box.px)
        origin = None if frame_mode else self.origins[k - first]
        if origin is not None:
            ox, oy, sx, sy = origin
            x0, y0, x1, y1 = box.px
            step.source_box_px = [round(ox + x0 * sx), round(oy + y0 * sy), round(ox + x1 * sx), round(oy + y1 * sy)]
            width, height = (added.size if isinstance(added, Image.Image) else (x1 - x0, y1 - y0))
            origin = (ox + x0 * sx, oy + y0 * sy, sx * (x1 - x0) / width, sy * (y1 - y0) / height)
        self.raw.append(added)
        self.origins.append(origin)
        self.last_source = source
        return [view], P.crop_observation(view.width, view.height)

    def _raw_image(self, i: int) -> Image.Image:
        """Image i (0-based) of those the operations can target; a full-resolution crop is cut out
        when first targeted."""
        raw = self.raw[i]
        if isinstance(raw, RawCrop):
            raw = self.raw[i] = raw.source.crop(raw.box)
        return raw

    def _select_frames(self, call: P.ToolCall, step: Step) -> tuple[list[Image.Image], str]:
        video = self.task.video
        if video is None:
            raise P.ToolCallError(ops.SELECT_ON_IMAGE_ERROR)
        if "target_frames" not in call.arguments:
            raise P.ToolCallError(f"Missing argument `target_frames` in `{P.FRAMES_TOOL}` operation.")
        frames = ops.parse_frames(call.arguments["target_frames"], video.n_frames)
        px = self.config.pixels
        full = [self.overview_view[k - 1] for k in frames] if px.from_view else video.frames(frames)
        views = [ops.resize_for_model(f, px.frame_min, px.frame_max) for f in full]
        first = 1 + len(self.raw)  # the release numbers from len([video] + added images)
        step.frames = frames
        self.raw.extend(views if px.from_view else full)
        self.origins.extend([None] * len(full))
        w, h = views[0].size
        return views, P.frames_observation(w, h, first, first + len(views) - 1)

    def _finish(self, status: str) -> Step:
        traj = self.trajectory
        traj.status = status
        traj.answer = extract_answer(traj.steps[-1].text) if traj.steps else None
        if self.last_probs is not None and traj.answer is not None:
            traj.answer_confidence = answer_confidence(*self.last_probs, traj.steps[-1].text, traj.answer)
        self.done = True
        return traj.steps[-1]

    def context_full(self, message: str) -> None:
        """End the episode because the prompt alone fills the context (found before any prefill)."""
        self.trajectory.status, self.trajectory.error, self.done = "max_tokens", message, True

    def fail(self, message: str) -> None:
        """End the episode on an error outside the protocol (a backend crash), keeping all steps."""
        self.trajectory.status, self.trajectory.error, self.done = "error", message, True


def run(backend: Backend, task: Task | None = None, config: LoopConfig | None = None,
        params: GenerationParams | None = None, store: ImageStore | None = None,
        cancel: threading.Event | None = None, episode: Episode | None = None) -> Iterator[Event]:
    """Drive one episode, yielding an event as each step starts, streams, and finishes.

    Give a `task` (with its config and store), or an `episode` built beforehand from them, to see
    its trajectory before the first step (the app logs the session row before generating).
    """
    if (episode is None) == (task is None):
        raise ValueError("run() takes a task or an episode, not both" if episode else "run() needs a task or an episode")
    if episode is not None and (config is not None or store is not None):
        raise ValueError("run(episode=...) uses the episode's own config and store; give them to Episode")
    if episode is None:
        episode = Episode(task, config or LoopConfig(), store, backend.name, backend.model_id)
    params = replace(params or GenerationParams(), max_context_tokens=episode.config.max_context_tokens)
    if not episode.trajectory.steps:
        mark_familiarity(backend, [episode])
    while not episode.done:
        index = len(episode.trajectory.steps)
        yield StepStart(index)
        if cancel is not None and cancel.is_set():
            episode.advance(Generation(text="", finish_reason="cancelled"))
            break
        generation = None
        try:
            for chunk in backend.stream(episode.messages, params, cancel):
                if isinstance(chunk, str):
                    yield TextDelta(index, chunk)
                else:
                    generation = chunk
        except ContextFull as e:  # refused from the prompt's token count: nothing was prefilled
            episode.context_full(str(e))
            break
        except Exception as e:  # the model failed: keep the finished steps, say why
            episode.fail(P.short_message(f"{type(e).__name__}: {e}"))
            break
        try:
            step = episode.advance(generation)
        except Exception as e:  # a bug or a malformed generation: this conversation ends, with its cause
            episode.fail(P.short_message(f"{type(e).__name__}: {e}"))
            break
        yield StepDone(step, episode.last_images, episode.last_source)
    yield Done(episode.trajectory)


def run_to_end(backend: Backend, task: Task, **kw) -> Trajectory:
    """Run one episode without streaming and return its trajectory."""
    for event in run(backend, task, **kw):
        if isinstance(event, Done):
            return event.trajectory
    raise AssertionError("run() ended without Done")


def run_batch(backend: Backend, tasks: list[Task], config: LoopConfig | None = None,
              params: GenerationParams | None = None, store: ImageStore | None = None,
              episodes: list[Episode] | None = None,
              on_done: Callable[[Episode], None] | None = None,
              batch_size: int | None = None) -> list[Trajectory]:
    """Advance many episodes turn by turn together through the backend's batched call.

    `on_done(episode)` is called as each episode ends, before its batch-mates finish (evaluation
    writes every finished item at once). With `batch_size`, at most that many conversations share
    a call: as one ends, a waiting one takes its place at the next turn, so the batch stays full.
    """
    config = config or LoopConfig()
    if episodes is None:
        # first views' resizing and the pictures' hashing release the GIL: a few threads build them
        episodes = parallel_map(lambda t: Episode(t, config, store, backend.name, backend.model_id), tasks)
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, not {batch_size}")
    budget = episodes[0].config.max_context_tokens if episodes else config.max_context_tokens
    params = replace(params or GenerationParams(), max_context_tokens=budget)
    mark_familiarity(backend, [e for e in episodes if not e.trajectory.steps])
    waiting = deque(e for e in episodes if not e.done)
    active: list[Episode] = []
    while True:
        active = [e for e in active if not e.done]
        while waiting and (batch_size is None or len(active) < batch_size):
            active.append(waiting.popleft())
        if not active:
            break
        for episode, generation in zip(active, _generate_isolated(backend, active, params)):
            if isinstance(generation, ContextFull):  # refused from its token count: nothing was prefilled
                episode.context_full(str(generation))
            elif isinstance(generation, Exception):
                episode.fail(P.short_message(f"{type(generation).__name__}: {generation}"))
            else:
                try:
                    episode.advance(generation)
                except Exception as e:  # one conversation's failure never aborts its batch-mates
                    episode.fail(P.short_message(f"{type(e).__name__}: {e}"))
            if on_done is not None and episode.done:
                on_done(episode)
    backend.forget()
    return [e.trajectory for e in episodes]


def _generate_isolated(backend: Backend, active: list[Episode], params: GenerationParams) -> list:
    """One generation per episode; when the batched call raises, each conversation is retried alone
    so that only the one(s) that fail get the exception (returned in its place)."""
    try:
        generations = backend.generate_batch([e.messages for e in active], params)
    except ContextFull as e:
        if len(active) == 1:
            return [e]
        if e.rows:  # the rows over the context are refused before any prefill; the others go on together
            kept = [ep for i, ep in enumerate(active) if i not in e.rows]
            rest = _generate_isolated(backend, kept, params) if kept else []
            return [ContextFull(e.rows[i]) if i in e.rows else rest.pop(0) for i in range(len(active))]
    except Exception as e:  # noqa: BLE001 - retried one by one below to find which conversation fails
        if len(active) == 1:
            return [e]
    else:
        if len(generations) == len(active):
            return list(generations)
    out: list = []
    for ep in active:
        try:
            out.append(backend.generate_batch([ep.messages], params)[0])
        except Exception as e:  # noqa: BLE001 - recorded as this episode's error
            out.append(e)
    return out
