"""What an annotation may hold and the Annotate queue: pure logic over the session log, apart from
the tab's layout (app/annotate/tab.py).

An annotation targets the whole trajectory or one step, and holds only what fits its target: a
corrected box on a crop step of an image, corrected frames on a select_frames step of a video (or a
failed call on that media), a corrected answer on the final step or the whole trajectory, corrected
text on a step. The tab shows just those fields and `save` refuses the rest, so a value left over
from another target never reaches the export.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from PIL import Image

from app.annotate import corrections as C
from app.shared.filters import ANY, make_filter
from app.shared.session import CORRECTED_COLOR, MAX_SIDE, first_picture, header_markdown, iou, overlay  # noqa: F401
from app.shared.studio_log import StudioLog
from core import protocol as P
from core.operations import crop_box

WHOLE = "whole trajectory"
STATUSES = ("unlabelled", "labelled", "exported")


def queue_ids(log: StudioLog, kind: str = "unannotated", outcome: str = ANY, text: str = "",
              limit: int = 500) -> list[str]:
    """Session ids to annotate, oldest first, so the queue is stable while it is worked through."""
    f = make_filter(text, ANY, outcome, annotated={"unannotated": "no", "annotated": "yes"}.get(kind, ANY),
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
    return f"IoU with the model's box (both padded): **{iou(padded, model_box):.2f}** · corrected crop {padded} px"


def annotations_table(log: StudioLog, session_id: str) -> list[list]:
    rows = []
    for a in log.list_annotations(session_id):
        fixes = [k.replace("corrected_", "") for k in C.CORRECTION_FIELDS if a.get(k) not in (None, "", [])]
        rows.append([a["id"], WHOLE if a["step_idx"] is None else f"step {a['step_idx'] + 1}", a["label"] or "",
                     (a["comment"] or "")[:80], ", ".join(fixes), a["annotator"] or "",
                     time.strftime("%Y-%m-%d %H:%M", time.localtime(a["created_at"]))])
    return rows


def open_view(log: StudioLog, session_id: str) -> dict:
    """Everything the tab shows for one session; KeyError for an unknown id."""
    session_id = (session_id or "").strip()
    row = log.session(session_id)
    if row is None:
        raise KeyError(f"no session {session_id!r}")
    traj = log.get_trajectory(session_id)
    return {"traj": traj, "header": header_markdown(row, traj), "original": first_picture(log, traj),
            "choices": target_choices(traj), "table": annotations_table(log, traj.id)}


def target_fields(traj, idx: int | None) -> dict[str, bool]:
    """Which corrections fit a target: box (a crop step of an image), frames (a select_frames step of
    a video), answer (the final step, or the whole trajectory), text (any step)."""
    if idx is None:
        return {"box": False, "frames": False, "answer": True, "text": False}
    step = traj.steps[idx]
    video = traj.media.kind != "image"
    call = step.tool is not None or step.error is not None or P.has_tool_call(step.text)
    return {"box": call and not video and step.tool != P.FRAMES_TOOL,
            "frames": call and video and step.tool not in P.CROP_ALIASES,
            "answer": idx == len(traj.steps) - 1, "text": True}


def incomplete_correction(label: str | None, fits: dict[str, bool], given: dict) -> str | None:
    """Why a "wrong box" / "wrong frame" label on a step that can hold that correction is not complete
    (None when it is): without the corrected box or frames the export has nothing to teach. A corrected
    text holding its own tool call counts as the correction."""
    own_call = P.has_tool_call(given.get("text") or "")
    if label == "wrong box" and fits["box"] and not given.get("box") and not own_call:
        return ("a 'wrong box' label needs the corrected box: click both of its corners on the image "
                "(or type x0, y0, x1, y1), then Save")
    if label == "wrong frame" and fits["frames"] and not given.get("frames") and not own_call:
        return "a 'wrong frame' label needs the corrected frames (e.g. 3, 7, 9), then Save"
    return None


def save(log: StudioLog, session_id: str, target: str, label: str | None, comment: str, answer: str,
         box: list[float] | None, frames: list[int] | None, text: str, annotator: str) -> int:
    """One annotation row; ValueError names a value that does not fit the target (nothing written)."""
    session_id = (session_id or "").strip()
    if log.session(session_id) is None:
        raise KeyError(f"no session {session_id!r}: open one first")
    if label is not None and label not in C.LABELS:
        raise ValueError(f"label must be one of: {', '.join(C.LABELS)}")
    answer, text = (answer or "").strip(), (text or "").strip()
    if not (label or comment or answer or box or frames or text):
        raise ValueError("nothing to save: pick a label or give a comment or a correction")
    step = step_of(target)
    traj = log.get_trajectory(session_id)
    if step is not None and not 0 <= step < len(traj.steps):
        raise ValueError(f"the session has {len(traj.steps)} steps")
    fits = target_fields(traj, step)
    given = {"box": box, "frames": frames, "answer": answer, "text": text}
    wrong = [k for k, v in given.items() if v and not fits[k]]
    if wrong:
        raise ValueError(f"a corrected {' and '.join(wrong)} does not fit {target}; it fits: "
                         f"{', '.join(k for k, ok in fits.items() if ok)}")
    missing = incomplete_correction(label, fits, given)
    if missing:
        raise ValueError(missing)
    return log.add_annotation(session_id, step, label or None, comment or None, answer or None,
                              box, frames, text or None, (annotator or "").strip() or None)


def record_export(index: Path, folder: str, session_ids: list[str]) -> None:
    """Append one export (its folder and the sessions written as SFT records) to the index file."""
    index.parent.mkdir(parents=True, exist_ok=True)
    with index.open("a", encoding="utf-8") as f:
        f.write(json.dumps({"folder": folder, "sessions": session_ids, "at": time.time()}) + "\n")


def exported_sessions(index: Path) -> set[str]:
    """Session ids any export recorded in `index` wrote as SFT records."""
    done: set[str] = set()
    for line in index.read_text(encoding="utf-8").splitlines() if index.exists() else []:
        try:
            done.update(json.loads(line).get("sessions") or [])
        except ValueError:
            continue
    return done


def queue_rows(log: StudioLog, ids: list[str], index: Path) -> list[list]:
    """The queue as a table: position, session, question, status (unlabelled / labelled / exported)."""
    exported = exported_sessions(index)
    labelled = {a["session_id"] for a in log.list_annotations()}
    rows = []
    for n, sid in enumerate(ids, 1):
        s = log.session(sid) or {"question": ""}
        status = "exported" if sid in exported else "labelled" if sid in labelled else "unlabelled"
        rows.append([n, sid, (s["question"] or "")[:70], status])
    return rows
