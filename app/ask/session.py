"""The Ask tab's logic: run one question through the tool loop, streaming chat messages and logging.

`ask_stream` is a generator Gradio calls; it yields the growing message lists. Each step becomes a
parent "thought" (pending -> done, with duration) whose children show the parsed tool call or the
error; the picture an operation produced (the crop beside its source with the box drawn, or the
frame strip) follows as a message of its own, so it is always in view. (A nested picture also
stayed empty after a video question: the chatbot loads the image renderer only for top-level
messages.) Every step is written to
the session log as it finishes; a Stop (or a closed browser) reaches the model through a
threading.Event passed to core.loop.run, and the session is closed as cancelled or unfinished.
"""
from __future__ import annotations

import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from PIL import Image

from app import Studio
from app.ask.examples import VIDEO_SUFFIXES
from app.public.limits import question_problem, quote
from app.public.names import public_model_name, scrub
from app.public.quotas import QuotaError, make_room
from app.shared.confidence import honesty_line, plural
from app.shared.render import crop_beside_source, frame_label, frame_strip
from core import protocol as P
from core.backends import Backend, BackendError, GenerationParams, load_backend
from core.backends.base import Generation
from core.backends.replay import ReplayBackend
from core.loop import Done, Episode, LoopConfig, StepDone, StepStart, Task, TextDelta, run
from core.media import DiskImageStore, MediaError, Video, load_image
from core.operations import PixelLimits, resolve_pixel_preset
from core.recorder import Recorder
from core.scoring import judge_trajectory
from core.sessionlog import storage_problem
from core.trajectory import Step, Trajectory

logger = logging.getLogger(__name__)

STATUS_TEXT = {"done": "done", "max_ops": "stopped: operation cap reached", "max_images": "stopped: image cap",
               "max_tokens": "stopped: context full", "cancelled": "cancelled", "error": "error",
               "unfinished": "unfinished"}


@dataclass
class AskSettings:
    backend: str = "transformers"
    model: str = ""  # hub id, local path, OpenAI URL, or (replay) a JSON file of turns
    tools: bool = True
    temperature: float = 0.0
    max_ops: int = 4
    guideline: str = "vcot"
    max_new_tokens: int = 512
    compare: bool = False


# ---- backends ------------------------------------------------------------------------------------

class PacedReplay(ReplayBackend):
    """Replay that waits before each turn and streams in pieces, like a model (demos and crash tests)."""

    def __init__(self, turns, delay: float) -> None:
        super().__init__(turns, chunk_chars=12)
        self.delay = delay

    def stream(self, messages, params, cancel=None):
        cancel = cancel or threading.Event()
        if cancel.wait(self.delay):
            yield Generation(text="", finish_reason="cancelled")
            return
        for chunk in super().stream(messages, params, cancel):
            if cancel.is_set():
                yield Generation(text="", finish_reason="cancelled")
                return
            yield chunk
            if isinstance(chunk, str):
                time.sleep(self.delay / 20)


_BACKENDS: dict[tuple, Backend] = {}
_BACKENDS_LOCK = threading.Lock()


def get_backend(studio: Studio, settings: AskSettings) -> Backend:
    """Build (once) and return the backend the settings name; models stay loaded between questions."""
    name, model = settings.backend, (settings.model or "").strip() or None
    if name == "replay":
        replay = model or studio.replay
        if not replay:
            raise BackendError("the replay backend needs a replay file (a JSON list of assistant turns) "
                               "in the model field")
        return PacedReplay(replay, studio.step_delay) if studio.step_delay else ReplayBackend(replay)
    key = (name, model)
    with _BACKENDS_LOCK:
        if key not in _BACKENDS:
            options = studio.backend_options if name == studio.backend else {}
            _BACKENDS[key] = load_backend(name, model=model, **options)
        return _BACKENDS[key]


def default_backend(studio: Studio) -> Backend:
    """The Studio's own model (the one given on the command line), as Ask loads it."""
    return get_backend(studio, AskSettings(backend=studio.backend, model=studio.model or ""))


def loading_note(settings: AskSettings) -> str | None:
    """The status line while a model not yet loaded loads (a hub id downloads first), None when it is."""
    name, model = settings.backend, (settings.model or "").strip() or None
    if name == "replay" or (name, model) in _BACKENDS:
        return None
    what = f"`{model}`" if model else "the embedded model"
    return f"loading {what} ({name}); a hub id downloads first, which can take minutes…"


def preload_backend(studio: Studio) -> threading.Thread | None:
    """Load the default model in a background thread at start (importing torch and transformers
    takes seconds), so the first Ask is as fast as later ones; an Ask made meanwhile waits for it.
    A failure is logged here and reported again by the first Ask."""
    if studio.backend == "replay":
        return None

    def work() -> None:
        t0 = time.perf_counter()
        try:
            backend = default_backend(studio)
            logger.info("%s model loaded in the background in %.1f s", studio.backend, time.perf_counter() - t0)
            if backend.name == "transformers":
                warm_up(backend)
        except Exception as e:  # the first Ask retries and shows the error to the user
            logger.warning("loading the %s model in the background failed: %s", studio.backend, e)

    thread = threading.Thread(target=work, name="preload-model", daemon=True)
    thread.start()
    return thread


def warm_up(backend: Backend) -> None:
    """One short streamed turn on a small picture: the first forward pass pays one-off costs
    (allocator, kernels, the vision tower's first run) that would otherwise land on the first Ask."""
    t0 = time.perf_counter()
    task = Task(question="What is shown?", image=Image.new("RGB", (224, 224), (128, 128, 128)))
    config = LoopConfig(pixels=PixelLimits.preset(resolve_pixel_preset(model=backend.pixel_preset)))
    for _ in backend.stream(Episode(task, config).messages, GenerationParams(max_new_tokens=4)):
        pass
    logger.info("model warmed up in %.1f s", time.perf_counter() - t0)


# ---- media and examples ------------------------------------------------------------------------------

def load_task(studio: Studio, media_path: str | None, question: str) -> Task:
    """A Task from an uploaded file, or a MediaError saying what is wrong with it."""
    if not media_path:
        raise MediaError("upload an image or a video first (or pick an example)")
    problem = question_problem(question, studio.limits)  # before any file is opened
    if problem:
        raise MediaError(problem)
    path = Path(media_path)
    if not path.exists():
        raise MediaError(f"{path.name}: the upload is gone; upload it again")
    size_mb = path.stat().st_size / 1e6
    if size_mb > studio.max_upload_mb:
        raise MediaError(f"{path.name} is {size_mb:.0f} MB; the limit is {studio.max_upload_mb:.0f} MB")
    if path.suffix.lower() in VIDEO_SUFFIXES:
        return Task(question=question.strip(), video=Video.from_file(path, limits=studio.limits.video),
                    media_path=str(path))
    return Task(question=question.strip(), image=load_image(path, studio.max_image_pixels), media_path=str(path))


# ---- chat messages -------------------------------------------------------------------------------------

def call_markdown(step: Step) -> str:
    """The parsed tool call, shown as a readable call (never the raw <tool_call> text)."""
    if step.tool == P.FRAMES_TOOL:
        return f"`select_frames(target_frames={step.frames or step.arguments.get('target_frames')})`"
    args = step.arguments or {}
    line = f"`{step.tool}(bbox_2d={args.get('bbox_2d')}, target_image={args.get('target_image')})`"
    if step.box_px:
        norm = ", ".join(f"{v:.3f}" for v in step.box_norm or [])
        line += f"\n\npadded box: [{norm}] = pixels {step.box_px} of image {step.target_image}"
        if step.source_box_px and step.source_box_px != step.box_px:  # a crop, or image 1 shown resized
            line += f" = {step.source_box_px} of the original"
    return line


def visible_text(text: str) -> str:
    """Reasoning text without the tool-call block (it is rendered from the parsed call instead)."""
    cut = text.find(P.TOOL_CALL_START)
    return (text[:cut] if cut >= 0 else text).strip()


class ChatView:
    """The message list for one run, updated from loop events."""

    def __init__(self, studio: Studio, traj: Trajectory, prefix: str = "") -> None:
        self.studio, self.traj, self.prefix = studio, traj, prefix
        self.views = DiskImageStore(studio.static_dir())
        self.messages: list[dict] = []
        self.parent: dict | None = None
        self.pictures: list[str] = []  # every crop-beside-source and frame strip, in step order
        self.raw = ""
        self.t0 = time.perf_counter()

    def user(self, question: str, media_path: str | None) -> None:
        content: list = [{"type": "text", "text": quote(question, self.studio.limits)}]
        if media_path:
            content.insert(0, {"path": media_path})
        self.messages.append({"role": "user", "content": content})

    def start(self, index: int) -> None:
        self.raw, self.t0 = "", time.perf_counter()
        self.parent = {"role": "assistant", "content": "",
                       "metadata": {"title": f"{self.prefix}Step {index + 1} · thinking", "id": f"{self.prefix}s{index}",
                                    "status": "pending"}}
        self.messages.append(self.parent)

    def delta(self, text: str) -> None:
        self.raw += text
        shown = visible_text(self.raw)
        if P.TOOL_CALL_START in self.raw:
            shown += "\n\n*calling a visual operation…*"
        self.parent["content"] = shown

    def _image_path(self, image: Image.Image) -> str:
        return str(self.views.path(self.views.put(image)))

    def done(self, event: StepDone) -> None:
        step, parent = event.step, self.parent
        meta = parent["metadata"]
        meta["status"] = "done"
        meta["duration"] = round(step.gen_seconds + step.tool_seconds, 2)
        parent["content"] = visible_text(step.text) or "(no text)"
        foot = f"{step.tokens_in} → {step.tokens_out} tok · gen {step.gen_seconds:.2f} s"
        pid = meta["id"]
        n = step.index + 1
        if step.finish_reason == "cancelled":
            meta["title"] = f"{self.prefix}Step {n} · stopped"
            meta["log"] = foot
        elif step.error:
            meta["title"] = f"{self.prefix}Step {n} · ⚠️ error in the model's call"
            short = step.error if len(step.error) <= 70 else step.error[:67] + "…"
            meta["log"] = f"{short} · {foot}"  # in view even while the step is folded
            call = step.text[step.text.find(P.TOOL_CALL_START):] if P.TOOL_CALL_START in step.text else ""
            self._child(pid, f"**⚠️ Operation failed:** {step.error}\n\nThe model wrote a call that cannot run as "
                        "written (its mistake, not the app's); it is told so and may retry."
                        + (f"\n\nThe call as written:\n```\n{call.strip()}\n```" if call else ""))
        elif step.tool == P.FRAMES_TOOL and step.frames:
            times = self.traj.media.frame_times
            labels = [frame_label(k, times[k - 1] if k - 1 < len(times) else None) for k in step.frames]
            meta["title"] = f"{self.prefix}Step {n} · select_frames"
            meta["log"] = f"frames {', '.join(map(str, step.frames))} · {foot}"
            self._child(pid, call_markdown(step))
            self._picture(frame_strip(event.images, labels))
        elif step.tool:
            w, h = (step.images[0].width, step.images[0].height) if step.images else (0, 0)
            meta["title"] = f"{self.prefix}Step {n} · {step.tool}"
            meta["log"] = f"{w}×{h} px · {foot} · op {step.tool_seconds * 1000:.0f} ms"
            self._child(pid, call_markdown(step))
            if event.source is not None and event.images and step.box_px:
                self._picture(crop_beside_source(event.source, step.box_px, event.images[0], step_color=step.index))
        else:
            meta["title"] = f"{self.prefix}Step {n} · answer"
            meta["log"] = foot

    def _child(self, parent_id: str, content) -> None:
        self.messages.append({"role": "assistant", "content": content, "metadata": {"parent_id": parent_id}})

    def _picture(self, image: Image.Image) -> None:
        self.pictures.append(self._image_path(image))
        self.messages.append({"role": "assistant", "content": {"path": self.pictures[-1]}})

    def drop_pending(self) -> None:
        """Remove the open thought of a step that was stopped before it wrote anything."""
        if self.parent is not None and self.parent in self.messages:
            self.messages.remove(self.parent)
        self.parent = None

    def finish(self, traj: Trajectory) -> None:
        if self.parent is not None and self.parent["metadata"].get("status") == "pending":
            self.parent["metadata"]["status"] = "done"
            self.parent["metadata"]["title"] += " (stopped)"
        status = STATUS_TEXT.get(traj.status, traj.status)
        if traj.error:
            error = scrub(traj.error) if self.studio.isolate else traj.error
            self.messages.append({"role": "assistant", "content": f"**⚠️ Error:** {error}"})
        answer = traj.answer if traj.answer is not None else "(no answer)"
        mark = ""
        if traj.correct is not None:
            mark = " ✅" if traj.correct else " ❌"
        sure = honesty_line(traj)
        self.messages.append({"role": "assistant", "content":
                              f"### {self.prefix}Answer: {answer}{mark}\n\n" + (f"{sure}\n\n" if sure else "")
                              + f"{plural(traj.n_ops, 'operation')} · {status} · session `{traj.id}`"})


# ---- the run ---------------------------------------------------------------------------------------------

class CancelEvent(threading.Event):
    """A cancel flag that remembers why: "stop" (the Stop button) or "closed" (the browser went away)."""

    reason = "stop"


def _register_cancel(studio: Studio, key: str, event: threading.Event) -> None:
    with studio.lock:
        studio.cancels.setdefault(key, []).append(event)


def _release_cancel(studio: Studio, key: str, event: threading.Event) -> None:
    with studio.lock:
        events = studio.cancels.get(key, [])
        if event in events:
            events.remove(event)
        if not events:
            studio.cancels.pop(key, None)


def stop(studio: Studio, key: str, reason: str = "stop") -> int:
    """Set the cancel events of a browser tab's running generations; returns how many."""
    with studio.lock:
        events = list(studio.cancels.get(key, []))
    for e in events:
        e.reason = reason
        e.set()
    return len(events)


def run_session(studio: Studio, backend: Backend, task: Task, settings: AskSettings, cancel: threading.Event,
                view_prefix: str = "", compare_of: str | None = None, client: str = "app",
                owner: str | None = None, quota_key: str | None = None) -> Iterator[tuple[ChatView, Trajectory]]:
    """Run one episode, logging each step as it finishes; yields the view after every event."""
    config = LoopConfig(tools=settings.tools, guideline=settings.guideline, max_ops=int(settings.max_ops),
                        pixels=PixelLimits.preset(resolve_pixel_preset(model=backend.pixel_preset)))
    params = GenerationParams(max_new_tokens=int(settings.max_new_tokens), temperature=float(settings.temperature))
    log = studio.log
    model = public_model_name(backend.model_id) if studio.isolate else backend.model_id  # no server paths
    episode = Episode(task, config, log.images, backend.name, model)
    traj = episode.trajectory
    if compare_of:
        traj.meta["compare_of"] = compare_of
    recorder = Recorder(log, client)
    recorder.start(traj, compare_of=compare_of, owner=owner, quota_key=quota_key)
    view = ChatView(studio, traj, view_prefix)
    view.user(task.question, task.media_path)
    yield view, traj
    finished = False
    try:
        for event in run(backend, params=params, cancel=cancel, episode=episode):
            if isinstance(event, StepStart):
                view.start(event.index)
            elif isinstance(event, TextDelta):
                view.delta(event.text)
            elif isinstance(event, StepDone):
                if event.step.finish_reason == "cancelled" and not event.step.text.strip():
                    traj.steps.remove(event.step)  # stopped before a word: no step, not an empty "answer"
                    view.drop_pending()
                else:
                    recorder.step(traj.id, event.step)
                    view.done(event)
            elif isinstance(event, Done):
                if traj.status == "cancelled" and getattr(cancel, "reason", "stop") == "closed":
                    traj.status = "unfinished"
                if task.answer is not None and traj.answer is not None:
                    judge_trajectory(traj)
                recorder.finish(traj)
                finished = True
                view.finish(traj)
            yield view, traj
    finally:
        if not finished:
            # Stop pressed, or the browser went away mid-generation: close the model's loop too.
            status = "cancelled" if cancel.is_set() and getattr(cancel, "reason", "stop") == "stop" else "unfinished"
            cancel.set()
            log.set_status(traj.id, status)


def running_status(backend: Backend, session_id: str) -> str:
    """The status line while a session runs; says so when the backend shows whole turns only."""
    note = "" if getattr(backend, "streams", True) else f" · {backend.name} shows whole turns (no token streaming)"
    return f"running · session `{session_id}`{note}"


def ask_stream(studio: Studio, media_path: str | None, question: str, settings: AskSettings,
               session_key: str, expected: str | None = None, owner: str | None = None,
               quota_key: str | None = None) -> Iterator[tuple[list[dict], list[dict], str]]:
    """The Ask button: (main chat, compare chat, status line) after every event. With `expected` (an
    example's known answer) the answer is marked ✅ or ❌; `owner` sees the session, `quota_key`
    pays for its stored pictures (public mode)."""
    try:
        task = load_task(studio, media_path, question)
        task.answer = expected
        note = loading_note(settings)
        if note:
            yield [], [], note
        backend = get_backend(studio, settings)
        make_room(studio, quota_key)  # public mode: the store's per-visitor and total quotas
    except (MediaError, BackendError, QuotaError) as e:
        yield [], [], f"⚠️ {scrub(str(e)) if studio.isolate else e}"  # no internal URL or server folder
        return
    cancel = CancelEvent()
    _register_cancel(studio, session_key, cancel)
    try:
        main: list[dict] = []
        compare: list[dict] = []
        first_id = None
        for view, traj in run_session(studio, backend, task, settings, cancel, owner=owner, quota_key=quota_key):
            main, first_id = view.messages, traj.id
            yield main, [], running_status(backend, traj.id)
        if settings.compare and settings.tools and not cancel.is_set():
            off = AskSettings(**{**vars(settings), "tools": False})
            for view, traj in run_session(studio, backend, task, off, cancel, "tools off · ", compare_of=first_id,
                                          owner=owner, quota_key=quota_key):
                compare = view.messages
                yield main, compare, f"comparing · session `{traj.id}`"
        final = studio.log.session(first_id)
        yield main, compare, f"{STATUS_TEXT.get(final['status'], final['status'])} · session `{first_id}`"
    except (OSError, sqlite3.Error) as e:  # the disk or the DB failed: say so, without server paths
        logger.error("session not saved: %s", e)
        yield main, compare, f"⚠️ the session could not be saved: {storage_problem(e)}"
    except ValueError as e:  # media the loop cannot use (e.g. a video frame shape the model refuses)
        yield main, compare, f"⚠️ {str(e)[:300]}"
    finally:
        _release_cancel(studio, session_key, cancel)
