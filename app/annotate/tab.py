"""The Annotate tab: label a step or a whole trajectory, give corrections, export SFT data.

A queue of sessions (unannotated first, filtered like Inspect) is walked with Prev/Next or the
keyboard (app/annotate/keys.py, loaded through `launch(head=...)`). For the chosen target (the whole
trajectory or one step): a label, a comment, and only the corrections that fit it (labeling.py):
a corrected box (two clicks on the image, or four numbers in [0, 1] of the original image) with a
live overlay and the IoU against the model's box, corrected frames, a corrected answer, corrected
text. The form is cleared whenever the target or the session changes, and says when it holds
unsaved values. Saved rows go to the `annotations` table; the Export accordion previews and writes
the SFT set (app/annotate/export.py).

Each section below lays out its part; the wire_* methods connect them.
"""
from __future__ import annotations

import time
from pathlib import Path

import gradio as gr

from app import UI_ONLY, Studio
from app.annotate import corrections as C
from app.annotate import export as E
from app.annotate.keys import SHORTCUTS
from app.annotate.labeling import (WHOLE, annotations_table, box_iou, open_view, overlay, parse_box,
                                   parse_frames, queue_ids, queue_rows, record_export, save, step_of, target_fields)
from app.shared.filters import ANY, OUTCOMES
from app.shared.session import clicked_point, source_image, step_picture, two_clicks
from core.paths import PathError, under

QUEUES = ("unannotated", "annotated", "all")
ANNOT_COLUMNS = ["id", "target", "label", "comment", "corrected", "annotator", "when"]
QUEUE_COLUMNS = ["#", "session", "question", "status"]
EXPORT_COLUMNS = ["session", "question", "labels", "turns", "trained", "plan", "exported"]


def default_export_dir(studio: Studio) -> str:
    """A fresh folder name under <data>/exports/ (a name, not a path: /gradio_api/info shows it)."""
    return time.strftime("annotations-%Y%m%d-%H%M%S")


def export_target(studio: Studio, folder: str | None) -> Path:
    """The export folder a form names: a name (or path) inside <data>/exports/, nothing else."""
    root = studio.data_dir / "exports"
    root.mkdir(parents=True, exist_ok=True)
    folder = (folder or "").strip() or default_export_dir(studio)
    try:
        return under(root, folder)
    except PathError:
        raise PathError(f"exports go to a folder inside data/exports/; {folder[:80]!r} is not one "
                        "(give a plain name like annotations-1)") from None


def build(studio: Studio, session_id=None, demo=None) -> None:
    """The tab's content (inside its gr.Tab); `session_id` is Inspect's field, for 'Take the one open'."""
    tab = AnnotateTab(studio)
    with gr.Column(elem_id="annot-root"):
        tab.queue_section()
        tab.labelling_section()
        tab.annotations_section()
        tab.export_section()
        name_store = gr.BrowserState("", storage_key="studio-annotator")
        tab.dirty = gr.State(False)  # the form holds values not saved yet
    tab.wire_queue(session_id)
    tab.wire_form()
    tab.wire_save()
    tab.annotator.change(lambda v: v, tab.annotator, name_store, **UI_ONLY)
    if demo is not None:
        demo.load(lambda v: v or "", name_store, tab.annotator, **UI_ONLY)


class AnnotateTab:
    """The tab's sections and its event handlers (methods, so the sections share the components)."""

    def __init__(self, studio: Studio):
        self.studio = studio
        self.log = studio.log
        self.exports_dir = studio.data_dir / "exports.jsonl"  # which sessions each export wrote

    # ---- the queue ---------------------------------------------------------------------------------------

    def queue_section(self) -> None:
        gr.Markdown("Keys: " + " · ".join(f"**{k}** {v}" for k, v in SHORTCUTS), elem_id="annot-help")
        with gr.Row():
            self.q_kind = gr.Dropdown(list(QUEUES), value="unannotated", label="Queue", scale=1)
            self.q_outcome = gr.Dropdown(OUTCOMES, value=ANY, label="Outcome", scale=1)
            self.q_text = gr.Textbox(label="Search question and reasoning", scale=2)
            self.q_btn = gr.Button("Load queue", scale=1)
        self.q_info = gr.Markdown()
        self.q_table = gr.Dataframe(headers=QUEUE_COLUMNS, interactive=False, max_height=200, elem_id="annot-queue",
                                    column_widths=["6%", "30%", "50%", "14%"])
        self.queue, self.pos = gr.State([]), gr.State(0)
        with gr.Row():
            self.prev_btn = gr.Button("◀ Prev (k)", elem_id="annot-prev", scale=1)
            self.sid = gr.Textbox(label="Session id", elem_id="annot-session", scale=4)
            self.open_btn = gr.Button("Open", scale=1)
            self.from_inspect = gr.Button("Take the one open in Inspect", scale=1)
            self.next_btn = gr.Button("Next (j) ▶", elem_id="annot-next", scale=1)
        self.header = gr.Markdown(elem_id="annot-header")
        self.corner = gr.State(None)
        self.size = gr.State(None)  # the original image's (width, height)

    def wire_queue(self, session_id) -> None:
        """Load queue, Prev/Next, a row of the queue, Open, Enter and 'Take the one open in Inspect'."""
        nav = [self.pos, self.sid, self.q_info]
        shown = self.shown()
        self.q_btn.click(self.load_queue, [self.q_kind, self.q_outcome, self.q_text],
                         [self.queue, self.pos, self.sid, self.q_info, self.q_table],
                         api_name="annotate_queue").then(**shown)
        self.prev_btn.click(lambda q, p: go(q, p, -1), [self.queue, self.pos], nav, **UI_ONLY).then(**shown)
        self.next_btn.click(lambda q, p: go(q, p, 1), [self.queue, self.pos], nav, **UI_ONLY).then(**shown)
        self.q_table.select(pick_queued, self.queue, nav, **UI_ONLY).then(**shown)
        self.open_btn.click(self.show, self.sid, self.outputs, api_name="annotate_open")
        self.sid.submit(**shown)
        if session_id is not None:
            self.from_inspect.click(lambda s: s, session_id, self.sid, **UI_ONLY).then(**shown)

    def shown(self) -> dict:
        """The event that redraws the tab for the session in the Session id field."""
        return dict(fn=self.show, inputs=[self.sid, self.dirty], outputs=self.outputs, **UI_ONLY)

    def load_queue(self, kind, outcome, txt):
        try:
            ids = queue_ids(self.log, kind, outcome, txt)
        except ValueError as e:
            return [], 0, gr.update(), f"⚠️ {e}", gr.update()
        if not ids:
            return [], 0, gr.update(), f"no {kind} sessions match", []
        return (ids, 0, ids[0], f"session 1 of {len(ids)} in the queue ({kind})",
                queue_rows(self.log, ids, self.exports_dir))

    def show(self, session: str, was_dirty=False):
        session = (session or "").strip()
        try:
            v = open_view(self.log, session)
        except KeyError as e:
            return [f"⚠️ {e}", gr.update(), gr.update(), gr.update(), "", gr.update(), None] + self.form(None, None)
        traj, original = v["traj"], v["original"]
        return ([v["header"], overlay(original, traj, None, None), gr.update(choices=v["choices"], value=WHOLE),
                 None, step_text(traj, None), v["table"], original.size if original else None]
                + self.form(traj, None, was_dirty))

    # ---- the picture and the form ------------------------------------------------------------------------

    def labelling_section(self) -> None:
        with gr.Row():
            with gr.Column(scale=3):
                self.image = gr.Image(label="Original with the model's boxes; click two corners to draw the "
                                            "corrected box", type="pil", interactive=False, height=520,
                                      elem_id="annot-image")
                self.step_pic = gr.Image(label="What the chosen step did", type="pil", interactive=False, height=260)
            with gr.Column(scale=2):
                self.form_section()

    def form_section(self) -> None:
        self.target = gr.Radio([WHOLE], value=WHOLE, label="Annotate", elem_id="annot-target")
        self.step_text = gr.Code(label="The step's text", language="markdown", lines=5)
        self.label = gr.Radio(list(C.LABELS), label="Label (keys 1–6)", elem_id="annot-label")
        self.comment = gr.Textbox(label="Comment (c)", lines=2, elem_id="annot-comment")
        self.answer = gr.Textbox(label="Correct answer", elem_id="annot-answer")
        with gr.Row():
            self.bx = [gr.Number(label=n, minimum=0, maximum=1, step=0.01, elem_id=f"annot-{n}")
                       for n in ("x0", "y0", "x1", "y1")]
        self.iou_md = gr.Markdown(elem_id="annot-iou")
        self.frames = gr.Textbox(label="Corrected frames (video, e.g. 3, 7, 9)")
        self.text = gr.Textbox(label="Corrected text of this step (the whole assistant turn)", lines=3)
        self.annotator = gr.Textbox(label="Annotator", elem_id="annot-annotator")
        with gr.Row():
            self.save_btn = gr.Button("Save (s)", elem_id="annot-save")
            self.save_next_btn = gr.Button("Save and next (Enter)", variant="primary", elem_id="annot-save-next")
            self.clear_btn = gr.Button("Clear box")
        self.dirty_md = gr.Markdown(elem_id="annot-dirty")
        self.saved = gr.Markdown(elem_id="annot-saved")

    @property
    def fields(self) -> list:
        return [self.label, self.comment, self.answer, *self.bx, self.frames, self.text]

    @property
    def form_outputs(self) -> list:
        return self.fields + [self.clear_btn, self.iou_md, self.corner, self.dirty, self.dirty_md]

    @property
    def outputs(self) -> list:
        return [self.header, self.image, self.target, self.step_pic, self.step_text, self.existing,
                self.size] + self.form_outputs

    def form(self, traj, idx, was_dirty=False):
        """A cleared form showing only the fields that fit the target (+ the unsaved-changes notice)."""
        fit = target_fields(traj, idx) if traj is not None else {"box": False, "frames": False, "answer": True,
                                                                 "text": False}
        note = "⚠️ the previous target's unsaved values were cleared" if was_dirty else ""
        return ([gr.update(value=None), "", gr.update(value="", visible=fit["answer"])]
                + [gr.update(value=None, visible=fit["box"]) for _ in self.bx]
                + [gr.update(value="", visible=fit["frames"]), gr.update(value="", visible=fit["text"]),
                   gr.update(visible=fit["box"]), "", None, False, note])

    def wire_form(self) -> None:
        """A new target clears the form; typing marks it unsaved; clicks and numbers draw the box."""
        sid, target, corner, bx = self.sid, self.target, self.corner, self.bx
        target.change(self.pick_target, [sid, target, self.dirty],
                      [self.image, self.step_pic, self.step_text] + self.form_outputs, **UI_ONLY)
        for n in bx:
            n.input(self.redraw, [sid, target, corner, *bx], [self.image, self.iou_md], **UI_ONLY)
        for f in self.fields:
            f.input(touched, None, [self.dirty, self.dirty_md], **UI_ONLY)
        self.image.select(self.click, [sid, target, corner], [self.image, corner, *bx, self.iou_md], **UI_ONLY) \
            .then(touched, None, [self.dirty, self.dirty_md], **UI_ONLY)
        self.clear_btn.click(lambda: (None, None, None, None, None, ""), None, [corner, *bx, self.iou_md],
                             **UI_ONLY) \
            .then(self.redraw, [sid, target, corner, *bx], [self.image, self.iou_md], **UI_ONLY)

    def pick_target(self, session, tgt, was_dirty):
        """A new target starts from a cleared form: nothing carries over from the previous one."""
        try:
            traj = self.log.get_trajectory((session or "").strip())
        except KeyError:
            return [gr.update()] * 3 + [gr.update()] * len(self.form_outputs)
        idx = step_of(tgt)
        if idx is not None and not 0 <= idx < len(traj.steps):
            return [gr.update()] * 3 + [gr.update()] * len(self.form_outputs)
        original = source_image(self.log, traj)
        pic = step_picture(self.log, traj, idx, original) if idx is not None else None
        return [overlay(original, traj, idx, None), pic, step_text(traj, idx)] + self.form(traj, idx, was_dirty)

    def redraw(self, session, tgt, c, *box):
        try:
            traj = self.log.get_trajectory((session or "").strip())
            b = parse_box(*box)
        except (KeyError, ValueError) as e:
            return gr.update(), f"⚠️ {e}" if isinstance(e, ValueError) else ""
        original = source_image(self.log, traj)
        idx = step_of(tgt)
        return overlay(original, traj, idx, b, c), box_iou(traj, idx, b, original.size if original else None)

    def click(self, session, tgt, c, evt: gr.SelectData):
        """First click: a corner; second click: the box (normalized to the shown image)."""
        try:
            traj = self.log.get_trajectory((session or "").strip())
        except KeyError:
            return (gr.update(),) * 7
        original = source_image(self.log, traj)
        if original is None:
            return (gr.update(),) * 7
        point = clicked_point(original, evt.index)
        idx = step_of(tgt)
        corner, box = two_clicks(c, point)
        if box is None:
            return (overlay(original, traj, idx, None, corner), corner) + (gr.update(),) * 4 + ("second corner…",)
        return (overlay(original, traj, idx, box), None, *box, box_iou(traj, idx, box, original.size))

    # ---- saving, this session's annotations, export ---------------------------------------------------------

    def wire_save(self) -> None:
        """Save (the /annotate_save endpoint) and Save and next; both mark the form saved and the queue row."""
        save_inputs = [self.sid, self.target, self.label, self.comment, self.answer, *self.bx, self.frames,
                       self.text, self.annotator]
        marked = dict(fn=self.after_save, inputs=[self.queue, self.saved],
                      outputs=[self.dirty, self.dirty_md, self.q_table], **UI_ONLY)
        self.save_btn.click(self.do_save, save_inputs, [self.saved, self.existing], api_name="annotate_save") \
            .then(**marked)
        self.save_next_btn.click(self.do_save, save_inputs, [self.saved, self.existing], **UI_ONLY).then(**marked) \
            .then(lambda q, p: go(q, p, 1), [self.queue, self.pos], [self.pos, self.sid, self.q_info], **UI_ONLY) \
            .then(**self.shown())

    def do_save(self, session, tgt, lab, com, ans, x0, y0, x1, y1, fr, txt, who):
        try:
            aid = save(self.log, session, tgt, lab, com, ans, parse_box(x0, y0, x1, y1), parse_frames(fr), txt, who)
        except (KeyError, ValueError) as e:
            return f"⚠️ {e}", gr.update()
        return f"saved annotation {aid} ({lab or 'no label'} on {tgt})", annotations_table(self.log, session.strip())

    def after_save(self, q, msg):
        if not (msg or "").startswith("saved"):
            return gr.update(), gr.update(), gr.update()
        return False, "", queue_rows(self.log, q, self.exports_dir) if q else gr.update()

    def annotations_section(self) -> None:
        with gr.Accordion("Annotations of this session (hidden while you label, to limit bias)", open=False):
            self.existing = gr.Dataframe(headers=ANNOT_COLUMNS, interactive=False)
            with gr.Row():
                del_id = gr.Number(label="Annotation id", precision=0)
                del_btn = gr.Button("Delete")

        def delete(session, aid):
            if aid:
                self.log.delete_annotation(int(aid))
            return annotations_table(self.log, (session or "").strip())

        del_btn.click(delete, [self.sid, del_id], self.existing, api_name="annotate_delete")

    def export_section(self) -> None:
        studio = self.studio
        with gr.Accordion("Export the annotated set (SFT records + labels JSONL)", open=False):
            with gr.Row():
                out_dir = gr.Textbox(label="Export folder", value=lambda: default_export_dir(studio), scale=4)
                prev_exp = gr.Button("Preview", scale=1)
                exp_btn = gr.Button("Export", variant="primary", scale=1)
            exp_md = gr.Markdown(elem_id="annot-exported")
            exp_table = gr.Dataframe(headers=EXPORT_COLUMNS, interactive=False, wrap=True)
        prev_exp.click(self.export_preview, out_dir, [exp_md, exp_table], api_name="export_preview")
        exp_btn.click(self.export, out_dir, [exp_md, exp_table, out_dir], api_name="export") \
            .then(lambda q: queue_rows(self.log, q, self.exports_dir) if q else gr.update(), self.queue,
                  self.q_table, **UI_ONLY)

    def export_preview(self, folder):
        rows = E.preview(self.log)
        n_ok = sum(r["skip"] is None for r in rows)
        table = [[r["session_id"][:12], r["question"][:60], ", ".join(r["labels"]), r["turns"], r["trained"],
                  " → ".join(r["notes"]), "yes" if r["skip"] is None else f"no: {r['skip']}"] for r in rows]
        return (f"{len(rows)} annotated sessions: **{n_ok}** would become SFT records, {len(rows) - n_ok} not "
                f"(their labels are still written to labels.jsonl). Folder: `{folder}`"), table

    def export(self, folder):
        try:
            target = export_target(self.studio, folder)
        except PathError as e:
            return f"⚠️ {e}", gr.update(), gr.update()
        if target.exists() and any(target.iterdir()):
            return f"⚠️ `{target.name}` is not empty; choose a new folder", gr.update(), gr.update()
        try:
            report = E.export_annotated(self.log, target)
        except OSError as e:
            return f"⚠️ the export stopped: {e.strerror or type(e).__name__} (free some disk space?)", \
                gr.update(), gr.update()
        record_export(self.exports_dir, str(target), report.exported_sessions)
        return report.markdown(), self.export_preview(folder)[1], default_export_dir(self.studio)


def step_text(traj, idx):
    if idx is None:
        return f"final answer: {traj.answer} (truth: {traj.ground_truth or '—'}) · status {traj.status}"
    s = traj.steps[idx]
    return s.text + (f"\n\n--- fed back ---\n{s.observation}" if s.observation else "")


def touched():
    return True, "✎ unsaved changes: **Save (s)** keeps them; another target or session clears the form"


def go(q, p, delta):
    if not q:
        return p, gr.update(), "load a queue first (or type a session id)"
    p = min(max(0, p + delta), len(q) - 1)
    return p, q[p], f"session {p + 1} of {len(q)} in the queue"


def pick_queued(q, evt: gr.SelectData):
    if evt.index is None or not q or not 0 <= evt.index[0] < len(q):
        return gr.update(), gr.update(), gr.update()
    p = evt.index[0]
    return p, q[p], f"session {p + 1} of {len(q)} in the queue"
