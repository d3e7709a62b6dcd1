"""The Inspect tab's logic: filtered session pages, one session's replay, side-by-side, imports.

Functions of the SessionLog returning plain values (rows, figures, markdown, PIL images); app/ui.py
wires them to components.
"""
from __future__ import annotations

import difflib
import hashlib
import html
import json
import logging
import sqlite3
import time
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

from PIL import Image

from app.shared import charts
from app.shared.render import crop_beside_source, frame_label, frame_strip
from core.media import MediaError, load_image
from core.recorder import Recorder
from core.sessionlog import SessionLog
from core.sessionquery import SessionFilter
from core.trajectory import Trajectory

logger = logging.getLogger(__name__)

TABLE_COLUMNS = ["id", "when", "question", "model", "status", "answer", "correct", "ops", "errors", "notes"]
PAGE_SIZE = 25
ANY = "any"


def parse_date(text: str | None, end: bool = False) -> float | None:
    """'2025-01-31' or '2025-01-31 14:00' to epoch seconds; a clear error otherwise. With `end`, the
    end of that day or minute, so "until 2025-01-31" includes the 31st."""
    text = (text or "").strip()
    if not text:
        return None
    for fmt, span in (("%Y-%m-%d", timedelta(days=1)), ("%Y-%m-%d %H:%M", timedelta(minutes=1))):
        try:
            return (datetime.strptime(text, fmt) + (span if end else timedelta(0))).timestamp()
        except ValueError:
            continue
    raise ValueError(f"dates look like 2025-01-31 or 2025-01-31 14:00, not {text!r}")


def make_filter(text: str = "", model: str = ANY, outcome: str = ANY, min_ops=None, max_ops=None,
                has_errors: str = ANY, annotated: str = ANY, since: str = "", until: str = "", page: int = 1,
                page_size: int = PAGE_SIZE) -> SessionFilter:
    yes_no = {"yes": True, "no": False}

    def count(v):  # SQLite integers stop at 2**63: clamp what a form or an API call sends
        return None if v in (None, "") else min(max(int(v), 0), 10 ** 9)

    min_ops, max_ops, page = count(min_ops), count(max_ops), count(page) or 1
    return SessionFilter(
        text=text or None, model=None if model in (None, "", ANY) else model,
        outcome=None if outcome in (None, "", ANY) else outcome,
        min_ops=min_ops, max_ops=max_ops,
        has_errors=yes_no.get(has_errors), annotated=yes_no.get(annotated), since=parse_date(since),
        until=parse_date(until, end=True), limit=page_size, offset=max(0, int(page or 1) - 1) * page_size)


def short_model(model: str | None) -> str:
    """A model column cell: the last path part (two for .../<run>/final), the full path on hover."""
    full = (model or "").rstrip("/")
    short = charts.short_name(full)
    return f'<span title="{html.escape(full)}">{html.escape(short)}</span>'


SELECTED = "▶ "  # marks the open session's id in the table


def row_id(cell: str) -> str:
    return (cell or "").removeprefix(SELECTED).strip()


def table_rows(rows: list[dict], selected: str | None = None) -> list[list]:
    """Table cells; the open session's id is marked, a compare run (tools off) says so."""
    out = []
    for r in rows:
        correct = {1: "✅", 0: "❌"}.get(r["correct"], "")
        question = (f"[compare of {r['compare_of'][:8]}, tools off] " if r.get("compare_of") else "") + r["question"]
        out.append([(SELECTED if selected and r["id"] == selected else "") + r["id"],
                    datetime.fromtimestamp(r["created_at"]).strftime("%Y-%m-%d %H:%M:%S"),
                    question[:120], short_model(r["model"]), r["status"], (r["answer"] or "")[:40], correct,
                    r["n_ops"], r["n_errors"], r["n_annotations"]])
    return out


def sessions_page(log: SessionLog, f: SessionFilter, selected: str | None = None) -> tuple[list[list], str]:
    """One page of the table; a page past the last shows the last page (and says so)."""
    t0 = time.perf_counter()
    rows, total = log.list_sessions(f)
    pages = max(1, -(-total // f.limit))
    asked = f.offset // f.limit + 1
    if asked > pages:
        f = replace(f, offset=(pages - 1) * f.limit)
        rows, total = log.list_sessions(f)
    page = f.offset // f.limit + 1
    info = (f"{total} sessions · page {page} of {pages}" + (f" (there is no page {asked})" if asked > pages else "")
            + f" · {(time.perf_counter() - t0) * 1000:.0f} ms")
    return table_rows(rows, selected), info


# ---- one session ------------------------------------------------------------------------------------

def _image(log: SessionLog, sha: str | None) -> Image.Image | None:
    if not sha:
        return None
    path = log.image_path(sha)
    if path is None:
        return None
    try:
        return load_image(path)
    except MediaError as e:
        logger.warning("image %s unreadable: %s", sha, e)
        return None


def source_image(log: SessionLog, traj: Trajectory) -> Image.Image | None:
    """The original image (from the store, else from the media path when it still exists)."""
    ref = traj.media.image
    img = _image(log, ref.sha if ref else None)
    if img is None and traj.media.kind == "image" and traj.media.path and Path(traj.media.path).exists():
        try:
            img = load_image(traj.media.path)
        except MediaError:
            img = None
    return img


def header_markdown(row: dict, traj: Trajectory) -> str:
    when = datetime.fromtimestamp(row["created_at"]).strftime("%Y-%m-%d %H:%M:%S")
    correct = {1: " ✅ correct", 0: " ❌ incorrect"}.get(row["correct"], "")
    link = f" · compared with `{row['compare_of']}`" if row.get("compare_of") else ""
    return (f"**{traj.question}**\n\n"
            f"answer **{traj.answer}**{correct} (truth: {traj.ground_truth or '—'}) · status **{traj.status}** · "
            f"{traj.n_ops} operations, {traj.n_errors} errors · {row['tokens_in']} → {row['tokens_out']} tokens · "
            f"{row['seconds']:.2f} s\n\n"
            f"`{traj.id}` · {when} · {traj.backend} · `{traj.model}` · client {row['client']} · tools "
            f"{'on' if traj.tools_enabled else 'off'}{link}")


def steps_table(steps: list[dict]) -> list[list]:
    out = []
    for s in steps:
        what = s["tool"] or ("—" if not s["error"] else "")
        detail = s["error"] or (s["box_px"] and f"box {s['box_px']} of image {s['target_image']}") or \
            (s["frames"] and f"frames {s['frames']}") or ""
        out.append([s["idx"] + 1, what, detail, s["tokens_in"], s["tokens_out"], round(s["gen_seconds"] or 0, 3),
                    round((s["tool_seconds"] or 0) * 1000, 1)])
    return out


STEP_COLUMNS = ["step", "operation", "detail", "tokens in", "tokens out", "gen s", "op ms"]


def step_picture(log: SessionLog, traj: Trajectory, idx: int, original: Image.Image | None) -> Image.Image | None:
    """What step idx did, drawn: crop beside its source box, or the selected frames strip."""
    if not 0 <= idx < len(traj.steps):
        return None
    step = traj.steps[idx]
    results = [im for im in (_image(log, r.sha) for r in step.images) if im is not None]
    if step.frames and results:
        times = traj.media.frame_times
        return frame_strip(results, [frame_label(k, times[k - 1] if k <= len(times) else None) for k in step.frames])
    if step.box_px and results:
        if step.source_box_px and original is not None:
            return crop_beside_source(original, step.source_box_px, results[0], step_color=idx)
        frame = _image(log, traj.media.overview[step.target_image - 1].sha) \
            if traj.media.overview and step.target_image and step.target_image <= len(traj.media.overview) else None
        if frame is not None and step.box_norm:
            x0, y0, x1, y1 = step.box_norm
            box = [x0 * frame.width, y0 * frame.height, x1 * frame.width, y1 * frame.height]
            return crop_beside_source(frame, box, results[0], step_color=idx)
        return results[0]
    return None


def session_view(log: SessionLog, session_id: str, step: int = 1) -> dict:
    """Everything the session panel shows; raises KeyError for an unknown id."""
    session_id = (session_id or "").strip()
    row = log.session(session_id)
    if row is None:
        raise KeyError(f"no session {session_id!r}")
    traj = log.get_trajectory(session_id)
    steps = log.steps(session_id)
    original = source_image(log, traj)
    if original is not None:
        replay = charts.replay_figure(original, traj.steps, current=step - 1)
    elif traj.media.overview:
        frame = _image(log, traj.media.overview[0].sha)
        replay = charts.replay_figure(frame, [], None) if frame else charts._empty("no source image stored")
    else:
        replay = charts._empty("no source image stored (imported without pictures)")
    idx = max(0, min(int(step or 1), max(1, len(traj.steps))) - 1)
    raw = traj.steps[idx].text if traj.steps else ""
    obs = traj.steps[idx].observation if traj.steps else ""
    return {
        "header": header_markdown(row, traj),
        "replay": replay,
        "timeline": charts.frames_timeline(traj.media.frame_times, traj.steps),
        "timings": charts.step_timings(traj.steps),
        "steps": steps_table(steps),
        "n_steps": len(traj.steps),
        "picture": step_picture(log, traj, idx, original),
        "raw": raw + (f"\n\n--- observation fed back ---\n{obs}" if obs else ""),
        "trajectory": traj,
    }


# ---- side by side --------------------------------------------------------------------------------------

def iou(a, b) -> float | None:
    if not a or not b:
        return None
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def same_question(log: SessionLog, session_id: str) -> list[str]:
    """Other sessions about the same question (newest first), the compare partner first."""
    row = log.session(session_id)
    if row is None:
        return []
    rows, _ = log.list_sessions(SessionFilter(question=row["question"], limit=50))
    ids = [r["id"] for r in rows if r["id"] != session_id]
    partners = [r["id"] for r in rows if r.get("compare_of") == session_id]
    if row.get("compare_of"):
        partners.insert(0, row["compare_of"])
    return list(dict.fromkeys(partners + ids))


def _describe(step) -> str:
    if step is None:
        return ""
    if step.error:
        return f"⚠️ {step.error[:80]}"
    if step.frames:
        return f"select_frames {step.frames}"
    if step.box_norm:
        return f"crop img {step.target_image} [{', '.join(f'{v:.2f}' for v in step.box_norm)}]"
    return "answer: " + (step.text.strip().splitlines() or [""])[-1][:80]


def compare_markdown(log: SessionLog, a: str, b: str) -> str:
    """Two trajectories aligned by step index: operation, boxes' IoU, and a line diff of the text."""
    ta, tb = log.get_trajectory(a.strip()), log.get_trajectory(b.strip())
    lines = [f"| | **A** `{ta.id[:8]}` ({ta.model[-30:]}, tools {'on' if ta.tools_enabled else 'off'}) | "
             f"**B** `{tb.id[:8]}` ({tb.model[-30:]}, tools {'on' if tb.tools_enabled else 'off'}) | box IoU |",
             "|---|---|---|---|"]
    for i in range(max(len(ta.steps), len(tb.steps))):
        sa = ta.steps[i] if i < len(ta.steps) else None
        sb = tb.steps[i] if i < len(tb.steps) else None
        overlap = iou(sa.source_box_px if sa else None, sb.source_box_px if sb else None)
        lines.append(f"| step {i + 1} | {_describe(sa)} | {_describe(sb)} | "
                     f"{'' if overlap is None else f'{overlap:.2f}'} |")
    lines.append(f"| **answer** | **{ta.answer}** ({ta.status}) | **{tb.answer}** ({tb.status}) | |")
    diff = difflib.unified_diff("\n".join(s.text for s in ta.steps).splitlines(),
                                "\n".join(s.text for s in tb.steps).splitlines(), "A", "B", lineterm="", n=1)
    body = "\n".join(diff)
    return (f"**Question:** {ta.question}" + ("" if ta.question == tb.question else f" / **B:** {tb.question}")
            + "\n\n" + "\n".join(lines) + "\n\n**Text diff**\n```diff\n" + (body or "(same text)") + "\n```")


# ---- import ---------------------------------------------------------------------------------------------

class ImportProblem(ValueError):
    """A file that cannot be imported, with a one-line reason."""


def _parse_json(text: str):
    """The file's records; every failure (syntax, 4,300-digit ints, deep nesting) an ImportProblem."""
    text = text.strip()
    try:
        try:
            data = json.loads(text)
            return data if isinstance(data, list) else [data]
        except json.JSONDecodeError as whole:
            lines = [ln for ln in text.splitlines() if ln.strip()]
            if len(lines) < 2:
                raise ImportProblem(f"not JSON: {whole.msg} (line {whole.lineno} column {whole.colno})") from None
            out = []
            for n, line in enumerate(lines, 1):
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ImportProblem(f"line {n} is not JSON: {e.msg} (column {e.colno})") from None
            return out
    except RecursionError:
        raise ImportProblem("the JSON is nested too deeply") from None
    except ImportProblem:
        raise
    except ValueError as e:  # e.g. an integer of more than 4,300 digits
        raise ImportProblem(f"unreadable JSON: {str(e)[:120]}") from None


def trajectories_in(text: str, root: Path | None = None, store=None, access=None,
                    id_prefix: str | None = None) -> list[Trajectory]:
    """Trajectories in a file's text: our trajectory JSON (`python -m core ask --json`), eval items
    ({"trajectory": ...}), message-list records or rendered rollout dumps (app/importers.py), as one
    object, a JSON list, or JSON lines. Pictures are read only where `access` allows (default: the
    file's own folder). With `id_prefix`, records without an id get `<prefix>-<n>`, so importing the
    same file again replaces them instead of adding copies."""
    from app.shared import importers

    access = access or importers.MediaAccess(roots=[root or Path(".")])
    out = []
    for i, it in enumerate(_parse_json(text)):
        if isinstance(it, dict) and importers.is_trajectory(it.get("trajectory")):
            it = it["trajectory"]
        try:
            if importers.is_trajectory(it):
                out.append(importers.confine(Trajectory.from_dict(it), access))
            elif importers.is_foreign(it):
                if store is None:
                    raise ValueError("importing message-list records needs an image store")
                traj = importers.foreign_to_trajectory(it, root or Path("."), store, f"record {i + 1}", access)
                if id_prefix:
                    traj.id = f"{id_prefix}-{i + 1}"
                out.append(traj)
            else:
                raise ImportProblem("not a trajectory: expected `python -m core ask --json` output, a message-list "
                                    "record (messages/message_list/conversations) or a rollout dump (prompt/response)")
        except ImportProblem:
            raise
        except RecursionError:
            raise ImportProblem(f"record {i + 1}: nested too deeply") from None
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError, MediaError) as e:
            raise ImportProblem(f"record {i + 1}: {type(e).__name__}: {str(e)[:160]}") from None
    return out


def import_files(log: SessionLog, paths: list[str], media_roots: list[Path] | tuple = ()) -> str:
    """Import each file; bad files are reported (one line each, file name only) and skipped, good
    ones are kept. Pictures come only from the uploaded files themselves (by name), the file's own
    folder, or `media_roots` the operator named. A file imported again replaces its earlier records."""
    from app.shared import importers

    uploads = [Path(p) for p in paths or []]
    done, problems = 0, []
    for path in uploads:
        if path.suffix.lower() not in (".json", ".jsonl"):
            continue  # a picture uploaded beside the records
        try:
            raw = path.read_bytes()
            digest = hashlib.sha256(raw).hexdigest()[:16]
            access = importers.MediaAccess(roots=[path.parent, *map(Path, media_roots)], uploads=uploads)
            trajs = trajectories_in(raw.decode("utf-8"), path.parent, log.images, access, id_prefix=digest)
            for traj in trajs:
                Recorder(log, "import").write(traj)
                done += 1
        except UnicodeDecodeError:
            problems.append(f"{path.name}: not UTF-8 text")
        except OSError as e:
            problems.append(f"{path.name}: cannot read or store it ({e.strerror or type(e).__name__})")
        except (ImportProblem, OverflowError, sqlite3.Error) as e:
            problems.append(f"{path.name}: {str(e)[:200]}")
    msg = f"imported {done} trajectories"
    return msg + ("" if not problems else "\n\n⚠️ skipped:\n- " + "\n- ".join(problems))
