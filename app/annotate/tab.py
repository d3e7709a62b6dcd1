"""The Annotate tab: label a step or a whole trajectory, give corrections, export SFT data.

A queue of sessions (unannotated first, filtered like Inspect) is walked with Prev/Next or the
keyboard (see SHORTCUTS_JS, loaded through `launch(head=...)`). For the chosen target (the whole
trajectory or one step): a label, a comment, and only the corrections that fit it (app/labeling.py):
a corrected box (two clicks on the image, or four numbers in [0, 1] of the original image) with a
live overlay and the IoU against the model's box, corrected frames, a corrected answer, corrected
text. The form is cleared whenever the target or the session changes, and says when it holds
unsaved values. Saved rows go to the `annotations` table; the Export accordion previews and writes
the SFT set (app/export.py).
"""
from __future__ import annotations

import time
from pathlib import Path

import gradio as gr

from app import UI_ONLY, Studio
from app.annotate import corrections as C
from app.annotate import export as E
from app.inspecting import sessions as I
from app.annotate.labeling import (CORRECTED_COLOR, MAX_SIDE, WHOLE, annotations_table, box_iou,  # noqa: F401
                          open_view, overlay, parse_box, parse_frames, queue_ids, queue_rows, record_export, save,
                          step_of, target_fields)
from core.paths import PathError, under

QUEUES = ("unannotated", "annotated", "all")
ANNOT_COLUMNS = ["id", "target", "label", "comment", "corrected", "annotator", "when"]
QUEUE_COLUMNS = ["#", "session", "question", "status"]

SHORTCUTS = [("j / →", "next session"), ("k / ←", "previous session"), ("1–6", "pick a label"),
             ("c", "comment"), ("s", "save"), ("Enter", "save and next (outside text fields)"),
             ("?", "show or hide this help")]

SHORTCUTS_JS = """
<script>
(() => {
  const visible = (id) => { const el = document.getElementById(id); return el && el.offsetParent !== null; };
  const click = (id) => { const el = document.querySelector('#' + id); if (el) el.click(); };
  document.addEventListener('keydown', (e) => {
    if (!visible('annot-root') || e.ctrlKey || e.metaKey || e.altKey) return;
    const t = e.target, tag = (t && t.tagName || '').toLowerCase();
    if (tag === 'textarea' || (tag === 'input' && !['radio', 'checkbox'].includes(t.type))) {
      if (e.key === 'Escape') t.blur();
      return;
    }
    const k = e.key;
    // arrows on a focused radio or checkbox move within its group, as the browser does
    if (tag === 'input' && k.startsWith('Arrow')) return;
    if (k === 'j' || k === 'ArrowRight') click('annot-next');
    else if (k === 'k' || k === 'ArrowLeft') click('annot-prev');
    else if (k >= '1' && k <= '6') {
      const radios = document.querySelectorAll('#annot-label input[type=radio]');
      if (radios[+k - 1]) radios[+k - 1].click();
    } else if (k === 'c') { const c = document.querySelector('#annot-comment textarea'); if (c) c.focus(); }
    else if (k === 's') click('annot-save');
    else if (k === 'Enter') click('annot-save-next');
    else if (k === '?') { const h = document.getElementById('annot-help'); if (h) h.classList.toggle('annot-hidden'); }
    else return;
    e.preventDefault();
  });
  // a form with unsaved values asks before the page goes away
  window.addEventListener('beforeunload', (e) => {
    const d = document.getElementById('annot-dirty');
    if (d && d.textContent.includes('unsaved changes')) { e.preventDefault(); e.returnValue = ''; }
  });
})();
</script>
<style>.annot-hidden {display: none !important}</style>
"""


def default_export_dir(studio: Studio) -> str:
    return str(studio.data_dir / "exports" / time.strftime("annotations-%Y%m%d-%H%M%S"))


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


# ---- layout ------------------------------------------------------------------------------------------

def build(studio: Studio, session_id=None, demo=None) -> None:
    log = studio.log
    with gr.Column(elem_id="annot-root"):
        gr.Markdown("Keys: " + " · ".join(f"**{k}** {v}" for k, v in SHORTCUTS), elem_id="annot-help")
        with gr.Row():
            q_kind = gr.Dropdown(list(QUEUES), value="unannotated", label="Queue", scale=1)
            q_outcome = gr.Dropdown([I.ANY, "correct", "incorrect", "unknown"], value=I.ANY, label="Outcome", scale=1)
            q_text = gr.Textbox(label="Search question and reasoning", scale=2)
            q_btn = gr.Button("Load queue", scale=1)
        q_info = gr.Markdown()
        q_table = gr.Dataframe(headers=QUEUE_COLUMNS, interactive=False, max_height=200, elem_id="annot-queue",
                               column_widths=["6%", "30%", "50%", "14%"])
        queue, pos = gr.State([]), gr.State(0)
        with gr.Row():
            prev_btn = gr.Button("◀ Prev (k)", elem_id="annot-prev", scale=1)
            sid = gr.Textbox(label="Session id", elem_id="annot-session", scale=4)
            open_btn = gr.Button("Open", scale=1)
            from_inspect = gr.Button("Take the one open in Inspect", scale=1)
            next_btn = gr.Button("Next (j) ▶", elem_id="annot-next", scale=1)
        header = gr.Markdown(elem_id="annot-header")
        corner = gr.State(None)
        size = gr.State(None)  # the original image's (width, height)
        with gr.Row():
            with gr.Column(scale=3):
                image = gr.Image(label="Original with the model's boxes; click two corners to draw the corrected box",
                                 type="pil", interactive=False, height=520, elem_id="annot-image")
                step_pic = gr.Image(label="What the chosen step did", type="pil", interactive=False, height=260)
            with gr.Column(scale=2):
                target = gr.Radio([WHOLE], value=WHOLE, label="Annotate", elem_id="annot-target")
                step_text = gr.Code(label="The step's text", language="markdown", lines=5)
                label = gr.Radio(list(C.LABELS), label="Label (keys 1–6)", elem_id="annot-label")
                comment = gr.Textbox(label="Comment (c)", lines=2, elem_id="annot-comment")
                answer = gr.Textbox(label="Correct answer", elem_id="annot-answer")
                with gr.Row():
                    bx = [gr.Number(label=n, minimum=0, maximum=1, step=0.01, elem_id=f"annot-{n}")
                          for n in ("x0", "y0", "x1", "y1")]
                iou_md = gr.Markdown(elem_id="annot-iou")
                frames = gr.Textbox(label="Corrected frames (video, e.g. 3, 7, 9)")
                text = gr.Textbox(label="Corrected text of this step (the whole assistant turn)", lines=3)
                annotator = gr.Textbox(label="Annotator", elem_id="annot-annotator")
                with gr.Row():
                    save_btn = gr.Button("Save (s)", elem_id="annot-save")
                    save_next_btn = gr.Button("Save and next (Enter)", variant="primary", elem_id="annot-save-next")
                    clear_btn = gr.Button("Clear box")
                dirty_md = gr.Markdown(elem_id="annot-dirty")
                saved = gr.Markdown(elem_id="annot-saved")
        with gr.Accordion("Annotations of this session (hidden while you label, to limit bias)", open=False):
            existing = gr.Dataframe(headers=ANNOT_COLUMNS, interactive=False)
            with gr.Row():
                del_id = gr.Number(label="Annotation id", precision=0)
                del_btn = gr.Button("Delete")
        with gr.Accordion("Export the annotated set (SFT records + labels JSONL)", open=False):
            with gr.Row():
                out_dir = gr.Textbox(label="Export folder", value=lambda: default_export_dir(studio), scale=4)
                prev_exp = gr.Button("Preview", scale=1)
                exp_btn = gr.Button("Export", variant="primary", scale=1)
            exp_md = gr.Markdown(elem_id="annot-exported")
            exp_table = gr.Dataframe(headers=["session", "question", "labels", "turns", "trained", "plan", "exported"],
                                     interactive=False, wrap=True)
        name_store = gr.BrowserState("", storage_key="studio-annotator")
        dirty = gr.State(False)  # the form holds values not saved yet

    fields = [label, comment, answer, *bx, frames, text]
    form_outputs = fields + [clear_btn, iou_md, corner, dirty, dirty_md]

    def form(traj, idx, was_dirty=False):
        """A cleared form showing only the fields that fit the target (+ the unsaved-changes notice)."""
        fit = target_fields(traj, idx) if traj is not None else {"box": False, "frames": False, "answer": True,
                                                                 "text": False}
        note = "⚠️ the previous target's unsaved values were cleared" if was_dirty else ""
        return ([gr.update(value=None), "", gr.update(value="", visible=fit["answer"])]
                + [gr.update(value=None, visible=fit["box"]) for _ in bx]
                + [gr.update(value="", visible=fit["frames"]), gr.update(value="", visible=fit["text"]),
                   gr.update(visible=fit["box"]), "", None, False, note])

    def touched():
        return True, "✎ unsaved changes: **Save (s)** keeps them; another target or session clears the form"

    def show(session: str, was_dirty=False):
        session = (session or "").strip()
        try:
            v = open_view(log, session)
        except KeyError as e:
            return [f"⚠️ {e}", gr.update(), gr.update(), gr.update(), "", gr.update(), None] + form(None, None)
        traj, original = v["traj"], v["original"]
        return ([v["header"], overlay(original, traj, None, None), gr.update(choices=v["choices"], value=WHOLE),
                 None, _step_text(traj, None), v["table"], original.size if original else None]
                + form(traj, None, was_dirty))

    outputs = [header, image, target, step_pic, step_text, existing, size] + form_outputs

    def _step_text(traj, idx):
        if idx is None:
            return f"final answer: {traj.answer} (truth: {traj.ground_truth or '—'}) · status {traj.status}"
        s = traj.steps[idx]
        return s.text + (f"\n\n--- fed back ---\n{s.observation}" if s.observation else "")

    def pick_target(session, tgt, was_dirty):
        """A new target starts from a cleared form: nothing carries over from the previous one."""
        try:
            traj = log.get_trajectory((session or "").strip())
        except KeyError:
            return [gr.update()] * 3 + [gr.update()] * len(form_outputs)
        idx = step_of(tgt)
        if idx is not None and not 0 <= idx < len(traj.steps):
            return [gr.update()] * 3 + [gr.update()] * len(form_outputs)
        original = I.source_image(log, traj)
        pic = I.step_picture(log, traj, idx, original) if idx is not None else None
        return [overlay(original, traj, idx, None), pic, _step_text(traj, idx)] + form(traj, idx, was_dirty)

    def redraw(session, tgt, c, *box):
        try:
            traj = log.get_trajectory((session or "").strip())
            b = parse_box(*box)
        except (KeyError, ValueError) as e:
            return gr.update(), f"⚠️ {e}" if isinstance(e, ValueError) else ""
        original = I.source_image(log, traj)
        idx = step_of(tgt)
        return overlay(original, traj, idx, b, c), box_iou(traj, idx, b, original.size if original else None)

    def click(session, tgt, c, evt: gr.SelectData):
        """First click: a corner; second click: the box (normalized to the shown image)."""
        try:
            traj = log.get_trajectory((session or "").strip())
        except KeyError:
            return (gr.update(),) * 7
        original = I.source_image(log, traj)
        if original is None:
            return (gr.update(),) * 7
        scale = min(1.0, MAX_SIDE / max(original.size))
        w, h = round(original.width * scale), round(original.height * scale)
        x, y = min(max(evt.index[0] / w, 0.0), 1.0), min(max(evt.index[1] / h, 0.0), 1.0)
        idx = step_of(tgt)
        if c is None:
            return (overlay(original, traj, idx, None, [x, y]), [x, y]) + (gr.update(),) * 4 + ("second corner…",)
        box = [round(min(c[0], x), 4), round(min(c[1], y), 4), round(max(c[0], x), 4), round(max(c[1], y), 4)]
        return (overlay(original, traj, idx, box), None, *box, box_iou(traj, idx, box, original.size))

    def do_save(session, tgt, lab, com, ans, x0, y0, x1, y1, fr, txt, who):
        try:
            aid = save(log, session, tgt, lab, com, ans, parse_box(x0, y0, x1, y1), parse_frames(fr), txt, who)
        except (KeyError, ValueError) as e:
            return f"⚠️ {e}", gr.update()
        return f"saved annotation {aid} ({lab or 'no label'} on {tgt})", annotations_table(log, session.strip())

    def go(q, p, delta):
        if not q:
            return p, gr.update(), "load a queue first (or type a session id)"
        p = min(max(0, p + delta), len(q) - 1)
        return p, q[p], f"session {p + 1} of {len(q)} in the queue"

    exports_dir = studio.data_dir / "exports.jsonl"  # which sessions each export wrote

    def load_queue(kind, outcome, txt):
        try:
            ids = queue_ids(log, kind, outcome, txt)
        except ValueError as e:
            return [], 0, gr.update(), f"⚠️ {e}", gr.update()
        if not ids:
            return [], 0, gr.update(), f"no {kind} sessions match", []
        return ids, 0, ids[0], f"session 1 of {len(ids)} in the queue ({kind})", queue_rows(log, ids, exports_dir)

    def pick_queued(q, evt: gr.SelectData):
        if evt.index is None or not q or not 0 <= evt.index[0] < len(q):
            return gr.update(), gr.update(), gr.update()
        p = evt.index[0]
        return p, q[p], f"session {p + 1} of {len(q)} in the queue"

    def export_preview(folder):
        rows = E.preview(log)
        n_ok = sum(r["skip"] is None for r in rows)
        table = [[r["session_id"][:12], r["question"][:60], ", ".join(r["labels"]), r["turns"], r["trained"],
                  " → ".join(r["notes"]), "yes" if r["skip"] is None else f"no: {r['skip']}"] for r in rows]
        return (f"{len(rows)} annotated sessions: **{n_ok}** would become SFT records, {len(rows) - n_ok} not "
                f"(their labels are still written to labels.jsonl). Folder: `{folder}`"), table

    def export(folder):
        try:
            target = export_target(studio, folder)
        except PathError as e:
            return f"⚠️ {e}", gr.update(), gr.update()
        if target.exists() and any(target.iterdir()):
            return f"⚠️ `{target.name}` is not empty; choose a new folder", gr.update(), gr.update()
        try:
            report = E.export_annotated(log, target)
        except OSError as e:
            return f"⚠️ the export stopped: {e.strerror or type(e).__name__} (free some disk space?)", \
                gr.update(), gr.update()
        record_export(exports_dir, str(target), report.exported_sessions)
        return report.markdown(), export_preview(folder)[1], default_export_dir(studio)



    def delete(session, aid):
        if aid:
            log.delete_annotation(int(aid))
        return annotations_table(log, (session or "").strip())

    nav = [pos, sid, q_info]
    shown = dict(fn=show, inputs=[sid, dirty], outputs=outputs, **UI_ONLY)
    q_btn.click(load_queue, [q_kind, q_outcome, q_text], [queue, pos, sid, q_info, q_table],
                api_name="annotate_queue").then(**shown)
    prev_btn.click(lambda q, p: go(q, p, -1), [queue, pos], nav, **UI_ONLY).then(**shown)
    next_btn.click(lambda q, p: go(q, p, 1), [queue, pos], nav, **UI_ONLY).then(**shown)
    q_table.select(pick_queued, queue, nav, **UI_ONLY).then(**shown)
    open_btn.click(show, sid, outputs, api_name="annotate_open")
    sid.submit(**shown)
    if session_id is not None:
        from_inspect.click(lambda s: s, session_id, sid, **UI_ONLY).then(**shown)
    target.change(pick_target, [sid, target, dirty], [image, step_pic, step_text] + form_outputs, **UI_ONLY)
    for n in bx:
        n.input(redraw, [sid, target, corner, *bx], [image, iou_md], **UI_ONLY)
    for f in fields:
        f.input(touched, None, [dirty, dirty_md], **UI_ONLY)
    image.select(click, [sid, target, corner], [image, corner, *bx, iou_md], **UI_ONLY) \
        .then(touched, None, [dirty, dirty_md], **UI_ONLY)
    clear_btn.click(lambda: (None, None, None, None, None, ""), None, [corner, *bx, iou_md], **UI_ONLY) \
        .then(redraw, [sid, target, corner, *bx], [image, iou_md], **UI_ONLY)
    save_inputs = [sid, target, label, comment, answer, *bx, frames, text, annotator]

    def after_save(q, msg):
        if not (msg or "").startswith("saved"):
            return gr.update(), gr.update(), gr.update()
        return False, "", queue_rows(log, q, exports_dir) if q else gr.update()

    marked = dict(fn=after_save, inputs=[queue, saved], outputs=[dirty, dirty_md, q_table], **UI_ONLY)
    save_btn.click(do_save, save_inputs, [saved, existing], api_name="annotate_save").then(**marked)
    save_next_btn.click(do_save, save_inputs, [saved, existing], **UI_ONLY).then(**marked) \
        .then(lambda q, p: go(q, p, 1), [queue, pos], nav, **UI_ONLY).then(**shown)
    del_btn.click(delete, [sid, del_id], existing, api_name="annotate_delete")
    prev_exp.click(export_preview, out_dir, [exp_md, exp_table], api_name="export_preview")
    exp_btn.click(export, out_dir, [exp_md, exp_table, out_dir], api_name="export") \
        .then(lambda q: queue_rows(log, q, exports_dir) if q else gr.update(), queue, q_table, **UI_ONLY)
    annotator.change(lambda v: v, annotator, name_store, **UI_ONLY)
    if demo is not None:
        demo.load(lambda v: v or "", name_store, annotator, **UI_ONLY)
