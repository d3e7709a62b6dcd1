"""Inspect's "Fork from this step" panel: the edit (a box drawn with two clicks on the original, typed
frames or text), the fork streaming beside it, and "Keep as correction". The logic is in
app/inspecting/forks.py; the tab (app/inspecting/tab.py) builds this panel under the session panel."""
from __future__ import annotations

from typing import Callable

import gradio as gr

from app import UI_ONLY, Studio
from app.public.limits import MODEL_RUNS, fork_validator, visitor_key
from app.public.quotas import QuotaError, make_room
from app.inspecting.forks import fork_edit, keep_as_correction, stream_fork
from app.shared.session import clicked_point, overlay, source_image, two_clicks
from core.backends.base import Backend, BackendError
from core.fork import ForkError
from core.media import MediaError

KINDS = ["box", "frames", "text"]


class ForkPanel:
    """Laid out by `build`; `wire(session_id, step_no, refresh)` connects it to the open session."""

    def __init__(self, studio: Studio, backend: Callable[[], Backend] | None, scope: Callable) -> None:
        self.studio, self.log, self.backend, self.scope = studio, studio.log, backend, scope

    def build(self) -> None:
        with gr.Accordion("Fork from this step: what if this call had been different?", open=True,
                          elem_id="fork-panel"):
            gr.Markdown("The step shown above is run again with your edit (a new box: two clicks on the "
                        "picture; other frames; or a new text), then the model goes on from there. The fork is a "
                        "session of its own, listed under this one.")
            with gr.Row():
                with gr.Column():
                    self.kind = gr.Radio(KINDS, value="box", label="Edit", elem_id="fork-kind")
                    self.image = gr.Image(label="Original with the model's boxes: click two corners", type="pil",
                                          interactive=False, height=380, elem_id="fork-image")
                    self.frames = gr.Textbox(label="Frames (e.g. 3, 5, 7)", visible=False, elem_id="fork-frames")
                    self.text = gr.Textbox(label="The step's new text", lines=4, visible=False, elem_id="fork-text")
                    self.box_md = gr.Markdown(elem_id="fork-box")
                    self.run_btn = gr.Button("Fork from this step", variant="primary", elem_id="fork-btn")
                with gr.Column():
                    self.picture = gr.Image(label="The edited step", type="pil", height=240, elem_id="fork-picture")
                    self.stream = gr.Markdown(elem_id="fork-stream")
                    self.fork_id = gr.Textbox(label="Fork session (open it above, or ?session=<id>)",
                                              interactive=False, elem_id="fork-id")
                    self.keep_btn = gr.Button("Keep as correction", elem_id="fork-keep",
                                              visible=self.studio.admin)
                    self.keep_md = gr.Markdown(elem_id="fork-kept")
        self.corner, self.box = gr.State(None), gr.State(None)

    # ---- handlers ------------------------------------------------------------------------------------

    def own(self, sid, request: gr.Request | None) -> str:
        """The session id when this visitor may see it (their own, in public mode); KeyError otherwise,
        as for an unknown id. Every handler checks: the page calls them by index, and so can anyone."""
        sid, owner = sid_of(sid), self.scope(request)
        if owner is not None and (self.log.session(sid) or {}).get("owner") != owner:
            raise KeyError(sid)
        return sid

    def trajectory(self, sid, request: gr.Request | None):
        return self.log.get_trajectory(self.own(sid, request))

    def show(self, sid, step, request: gr.Request = None):
        """A newly opened session or step: its original with the boxes, the form cleared."""
        try:
            traj = self.trajectory(sid, request)
        except KeyError:
            return None, None, None, ""
        original = source_image(self.log, traj)
        idx = int(step or 1) - 1
        return overlay(original, traj, idx, None), None, None, ""

    def click(self, sid, step, corner, evt: gr.SelectData, request: gr.Request = None):
        try:
            traj = self.trajectory(sid, request)
        except KeyError:
            return gr.update(), corner, gr.update(), gr.update()
        original = source_image(self.log, traj)
        if original is None:
            return gr.update(), corner, gr.update(), "⚠️ no picture to draw on (a video: fork with frames or text)"
        corner, box = two_clicks(corner, clicked_point(original, evt.index))
        idx = int(step or 1) - 1
        if box is None:
            return overlay(original, traj, idx, None, corner), corner, None, "second corner…"
        return overlay(original, traj, idx, box), None, box, f"new box (normalized, on the original): {box}"

    def run(self, sid, step, kind, box, frames, text, request: gr.Request = None):
        """Stream the fork: (its steps, the edited step's picture, the fork id, status of keeping)."""
        try:
            sid = sid_of(sid)
            owner = self.scope(request)
            self.own(sid, request)
            edit = fork_edit(kind, box, frames or "", text or "")
            if self.backend is None:
                raise BackendError("no model to run a fork with")
            key = visitor_key(request) if owner is not None else None
            make_room(self.studio, key)  # public mode: the store's per-visitor and total quotas
            events = stream_fork(self.log, self.backend(), sid, int(step or 1) - 1, edit,
                                 self.studio.max_image_pixels, owner=owner, quota_key=key)
            markdown, picture, traj = next(events)
        except KeyError:
            yield f"⚠️ no session {sid[:80]!r} (open one first)", None, "", ""
            return
        except (ForkError, MediaError, BackendError, QuotaError) as e:
            yield f"⚠️ {e}", None, "", ""
            return
        yield markdown, picture, traj.id, ""
        for markdown, picture, traj in events:
            yield markdown, picture, traj.id, ""

    def keep(self, fork_id):
        try:
            ann_id, new = keep_as_correction(self.log, sid_of(fork_id))
        except KeyError:
            return "⚠️ run a fork first"
        except ValueError as e:
            return f"⚠️ {e}"
        return (f"kept as correction (annotation {ann_id}): Annotate → Export takes it" if new
                else f"already kept (annotation {ann_id})")

    def wire(self, session_id: gr.Textbox, step_no: gr.Slider, header: gr.Markdown, refresh: dict) -> None:
        """Opening a session or moving the step redraws the picture; Fork streams, then the table redraws."""
        drawn = [self.image, self.corner, self.box, self.box_md]
        header.change(self.show, [session_id, step_no], drawn, **UI_ONLY)
        step_no.change(self.show, [session_id, step_no], drawn, **UI_ONLY)
        self.kind.change(lambda k: (gr.update(visible=k == "frames"), gr.update(visible=k == "text")), self.kind,
                         [self.frames, self.text], **UI_ONLY)
        self.image.select(self.click, [session_id, step_no, self.corner], drawn, **UI_ONLY)
        self.run_btn.click(self.run, [session_id, step_no, self.kind, self.box, self.frames, self.text],
                           [self.stream, self.picture, self.fork_id, self.keep_md], api_name="fork",
                           concurrency_limit=self.studio.max_concurrent_runs, concurrency_id=MODEL_RUNS,
                           validator=fork_validator(self.studio)) \
            .then(**refresh)
        if self.studio.admin:  # annotations are an operator's, as in Annotate (off in public mode)
            self.keep_btn.click(self.keep, self.fork_id, self.keep_md, api_name="fork_keep").then(**refresh)


def sid_of(value) -> str:
    return (value or "").strip() if isinstance(value, str) else ""
