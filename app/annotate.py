"""The Annotate tab: label a step or a whole trajectory, give corrections, export SFT data.

A queue of sessions (unannotated first, filtered like Inspect) is walked with Prev/Next or the
keyboard (see SHORTCUTS_JS, loaded through `launch(head=...)`). For the chosen target (the whole
trajectory or one step): a label, a comment, a corrected answer, a corrected box (two clicks on
the image, or four numbers in [0, 1] of the original image) with a live overlay and the IoU
against the model's box, corrected frames, corrected text. Saved rows go to the `annotations`
table; the Export accordion previews and writes the SFT set (app/export.py).
"""
from __future__ import annotations

import time
from pathlib import Path

import gradio as gr
from PIL import Image, ImageDraw

from app import UI_ONLY, Studio
from app import corrections as C
from app import export as E
from app import inspect as I
from app.render import draw_boxes
from core.operations import crop_box
from core.paths import PathError, under
from core.sessionlog import SessionLog

WHOLE = "whole trajectory"
QUEUES = ("unannotated", "annotated", "all")
ANNOT_COLUMNS = ["id", "target", "label", "comment", "corrected", "annotator", "when"]
CORRECTED_COLOR = (0, 200, 0)
MAX_SIDE = 1000

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
})();
</script>
<style>.annot-hidden {display: none !important}</style>
"""


# ---- logic (plain values; app/ui wires nothing here) ------------------------------------------------

def queue_ids(log: SessionLog, kind: str = "unannotated", outcome: str = I.ANY, text: str = "",
              limit: int = 500) -> list[str]:
    """Session ids to annotate, oldest first, so the queue is stable while it is worked through."""
    f = I.make_filter(text, I.ANY, outcome, annotated={"unannotated": "no", "annotated": "yes"}.get(kind, I.ANY),
                      page_size=limit)
    rows, _ = log.list_sessions(f)
    return [r["id"] for r in reversed(rows)]


def target_choices(traj) -> list[str]:
    out = [WHOLE]
    for s in traj.steps:
        what = "⚠️ error" if s.error else (s.tool or "answer")
        out.append(f"step {s.index + 1} · {what}")
    return out


def step_of(target: str | None) -> int | None:
    """'step 3 · crop…' -> 2; the whole trajectory -> None."""
    if not target or target == WHOLE:
        return None
    return int(target.split("·")[0].split()[1]) - 1


def parse_frames(text: str | None) -> list[int] | None:
    text = (text or "").replace(",", " ").split()
    if not text:
        return None
    try:
        return [int(t) for t in text]
    except ValueError:
        raise ValueError(f"frames are whole numbers like '3, 7, 9', not {' '.join(text)!r}") from None


def parse_box(x0, y0, x1, y1) -> list[float] | None:
    vals = [x0, y0, x1, y1]
    if all(v in (None, "") for v in vals):
        return None
    if any(v in (None, "") for v in vals):
        raise ValueError("a corrected box needs all four numbers x0, y0, x1, y1")
    box = [float(v) for v in vals]
    if not all(0 <= v <= 1 for v in box) or box[2] <= box[0] or box[3] <= box[1]:
        raise ValueError(f"a corrected box is [x0, y0, x1, y1] in [0, 1] with x0 < x1 and y0 < y1, got {box}")
    return [round(v, 4) for v in box]


def box_iou(traj, step_idx: int | None, box: list[float] | None, size: tuple[int, int] | None) -> str:
    """The corrected box (padded as the crop would pad it) against the model's box of that step."""
    if not box or size is None or step_idx is None or not 0 <= step_idx < len(traj.steps):
        return ""
    model_box = traj.steps[step_idx].source_box_px
    if not model_box:
        return "the model's step has no box on the original image"
    try:
        padded = list(crop_box([min(v, 0.999) for v in box], *size).px)
    except ValueError as e:
        return f"⚠️ {e}"
    return f"IoU with the model's box (both padded): **{I.iou(padded, model_box):.2f}** · corrected crop {padded} px"


def overlay(original: Image.Image | None, traj, step_idx: int | None, box: list[float] | None,
            corner: list[float] | None = None) -> Image.Image | None:
    """The original with the model's boxes (the chosen step's thick) and the corrected box in green."""
    if original is None:
        return None
    scale = min(1.0, MAX_SIDE / max(original.size))
    shown = original.convert("RGB").resize((round(original.width * scale), round(original.height * scale)))
    steps = [s for s in traj.steps if s.source_box_px and not s.error]
    out = draw_boxes(shown, [[v * scale for v in s.source_box_px] for s in steps],
                     [f"step {s.index + 1}" for s in steps]) if steps else shown
    draw = ImageDraw.Draw(out)
    for s in steps:
        if s.index == step_idx:
            x0, y0, x1, y1 = (v * scale for v in s.source_box_px)
            draw.rectangle([x0 - 3, y0 - 3, x1 + 3, y1 + 3], outline=(255, 255, 255), width=2)
    w, h = out.size
    if box:
        draw.rectangle([box[0] * w, box[1] * h, box[2] * w, box[3] * h], outline=CORRECTED_COLOR, width=4)
        draw.text((box[0] * w + 4, box[3] * h + 3), "corrected", fill=CORRECTED_COLOR)
    if corner:
        x, y = corner[0] * w, corner[1] * h
        draw.ellipse([x - 6, y - 6, x + 6, y + 6], outline=CORRECTED_COLOR, width=3)
    return out


def annotations_table(log: SessionLog, session_id: str) -> list[list]:
    rows = []
    for a in log.list_annotations(session_id):
        fixes = [k.replace("corrected_", "") for k in C.CORRECTION_FIELDS if a.get(k) not in (None, "", [])]
        rows.append([a["id"], WHOLE if a["step_idx"] is None else f"step {a['step_idx'] + 1}", a["label"] or "",
                     (a["comment"] or "")[:80], ", ".join(fixes), a["annotator"] or "",
                     time.strftime("%Y-%m-%d %H:%M", time.localtime(a["created_at"]))])
    return rows


def open_view(log: SessionLog, session_id: str) -> dict:
    """Everything the tab shows for one session; KeyError for an unknown id."""
    v = I.session_view(log, session_id, 1)
    traj = v["trajectory"]
    original = I.source_image(log, traj)
    if original is None and traj.media.overview:
        original = I._image(log, traj.media.overview[0].sha)
    return {"traj": traj, "header": v["header"], "original": original, "choices": target_choices(traj),
            "table": annotations_table(log, traj.id)}


def save(log: SessionLog, session_id: str, target: str, label: str | None, comment: str, answer: str,
         box: list[float] | None, frames: list[int] | None, text: str, annotator: str) -> int:
    session_id = (session_id or "").strip()
    if log.session(session_id) is None:
        raise KeyError(f"no session {session_id!r}: open one first")
    if label is not None and label not in C.LABELS:
        raise ValueError(f"label must be one of: {', '.join(C.LABELS)}")
    if not (label or comment or answer or box or frames or text):
        raise ValueError("nothing to save: pick a label or give a comment or a correction")
    step = step_of(target)
    n = log.session(session_id)["n_steps"]
    if step is not None and not 0 <= step < n:
        raise ValueError(f"the session has {n} steps")
    return log.add_annotation(session_id, step, label or None, comment or None, (answer or "").strip() or None,
                              box, frames, text or None, (annotator or "").strip() or None)


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
                iou_md = gr.Markdown()
                frames = gr.Textbox(label="Corrected frames (video, e.g. 3, 7, 9)")
                text = gr.Textbox(label="Corrected text of this step (the whole assistant turn)", lines=3)
                annotator = gr.Textbox(label="Annotator", elem_id="annot-annotator")
                with gr.Row():
                    save_btn = gr.Button("Save (s)", elem_id="annot-save")
                    save_next_btn = gr.Button("Save and next (Enter)", variant="primary", elem_id="annot-save-next")
                    clear_btn = gr.Button("Clear box")
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
            exp_md = gr.Markdown()
            exp_table = gr.Dataframe(headers=["session", "question", "labels", "turns", "trained", "plan", "exported"],
                                     interactive=False, wrap=True)
        name_store = gr.BrowserState("", storage_key="studio-annotator")

    fields = [label, comment, answer, *bx, frames, text]

    def blank():
        return [None, "", "", None, None, None, None, "", ""]

    def show(session: str):
        session = (session or "").strip()
        try:
            v = open_view(log, session)
        except KeyError as e:
            return [f"⚠️ {e}", gr.update(), gr.update(), gr.update(), "", gr.update(), None, None, ""] + blank()
        traj, original = v["traj"], v["original"]
        return ([v["header"], overlay(original, traj, None, None), gr.update(choices=v["choices"], value=WHOLE),
                 None, _step_text(traj, None), v["table"], None, original.size if original else None, ""] + blank())

    outputs = [header, image, target, step_pic, step_text, existing, corner, size, iou_md] + fields

    def _step_text(traj, idx):
        if idx is None:
            return f"final answer: {traj.answer} (truth: {traj.ground_truth or '—'}) · status {traj.status}"
        s = traj.steps[idx]
        return s.text + (f"\n\n--- fed back ---\n{s.observation}" if s.observation else "")

    def pick_target(session, tgt, *box):
        try:
            traj = log.get_trajectory((session or "").strip())
        except KeyError:
            return gr.update(), gr.update(), gr.update(), gr.update()
        idx = step_of(tgt)
        original = I.source_image(log, traj)
        pic = I.step_picture(log, traj, idx, original) if idx is not None else None
        try:
            b = parse_box(*box)
        except ValueError:
            b = None
        return (overlay(original, traj, idx, b), pic, _step_text(traj, idx),
                box_iou(traj, idx, b, original.size if original else None))

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

    def load_queue(kind, outcome, txt):
        try:
            ids = queue_ids(log, kind, outcome, txt)
        except ValueError as e:
            return [], 0, gr.update(), f"⚠️ {e}"
        if not ids:
            return [], 0, gr.update(), f"no {kind} sessions match"
        return ids, 0, ids[0], f"session 1 of {len(ids)} in the queue ({kind})"

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
        return report.markdown(), export_preview(folder)[1], default_export_dir(studio)

    def delete(session, aid):
        if aid:
            log.delete_annotation(int(aid))
        return annotations_table(log, (session or "").strip())

    q_btn.click(load_queue, [q_kind, q_outcome, q_text], [queue, pos, sid, q_info], api_name="annotate_queue") \
        .then(show, sid, outputs, **UI_ONLY)
    prev_btn.click(lambda q, p: go(q, p, -1), [queue, pos], [pos, sid, q_info], **UI_ONLY) \
        .then(show, sid, outputs, **UI_ONLY)
    next_btn.click(lambda q, p: go(q, p, 1), [queue, pos], [pos, sid, q_info], **UI_ONLY) \
        .then(show, sid, outputs, **UI_ONLY)
    open_btn.click(show, sid, outputs, api_name="annotate_open")
    sid.submit(show, sid, outputs, **UI_ONLY)
    if session_id is not None:
        from_inspect.click(lambda s: s, session_id, sid, **UI_ONLY).then(show, sid, outputs, **UI_ONLY)
    target.change(pick_target, [sid, target, *bx], [image, step_pic, step_text, iou_md], **UI_ONLY)
    for n in bx:
        n.input(redraw, [sid, target, corner, *bx], [image, iou_md], **UI_ONLY)
    image.select(click, [sid, target, corner], [image, corner, *bx, iou_md], **UI_ONLY)
    clear_btn.click(lambda: (None, None, None, None, None, ""), None, [corner, *bx, iou_md], **UI_ONLY) \
        .then(redraw, [sid, target, corner, *bx], [image, iou_md], **UI_ONLY)
    save_inputs = [sid, target, label, comment, answer, *bx, frames, text, annotator]
    save_btn.click(do_save, save_inputs, [saved, existing], api_name="annotate_save")
    save_next_btn.click(do_save, save_inputs, [saved, existing], **UI_ONLY) \
        .then(lambda q, p: go(q, p, 1), [queue, pos], [pos, sid, q_info], **UI_ONLY).then(show, sid, outputs, **UI_ONLY)
    del_btn.click(delete, [sid, del_id], existing, api_name="annotate_delete")
    prev_exp.click(export_preview, out_dir, [exp_md, exp_table], api_name="export_preview")
    exp_btn.click(export, out_dir, [exp_md, exp_table, out_dir], api_name="export")
    annotator.change(lambda v: v, annotator, name_store, **UI_ONLY)
    if demo is not None:
        demo.load(lambda v: v or "", name_store, annotator, **UI_ONLY)
