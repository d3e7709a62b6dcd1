"""The Inspect tab's logic: filtered session pages, one session's replay, side by side.

Functions of the SessionLog returning plain values (rows, figures, markdown, PIL images); the tab
(app/inspecting/tab.py) wires them to components.
"""
from __future__ import annotations

import difflib
import html
import json
import time
from dataclasses import replace
from datetime import datetime

from app.inspecting.forks import fork_label, nest_forks
from app.shared import charts
from app.shared.confidence import unsure_segments
from app.shared.session import header_markdown, iou, source_image, step_picture, stored_image
from core.sessionlog import SessionLog
from core.sessionquery import SessionFilter

TABLE_COLUMNS = ["id", "when", "question", "model", "status", "answer", "correct", "ops", "errors", "notes"]


def short_model(model: str | None) -> str:
    """A model column cell: the last path part (two for .../<run>/final), the full path on hover."""
    full = (model or "").rstrip("/")
    short = charts.short_name(full)
    return f'<span title="{html.escape(full)}">{html.escape(short)}</span>'


SELECTED = "▶ "  # marks the open session's id in the table


def row_id(cell: str) -> str:
    return (cell or "").removeprefix(SELECTED).strip()


def table_rows(rows: list[dict] | list[tuple[dict, int]], selected: str | None = None) -> list[list]:
    """Table cells; the open session's id is marked, a compare run (tools off) says so, a fork says
    where it branched (rows given as (row, depth) pairs sit indented under their parent)."""
    out = []
    for item in rows:
        r, depth = item if isinstance(item, tuple) else (item, 0)
        correct = {1: "✅", 0: "❌"}.get(r["correct"], "")
        question = (f"[compare of {r['compare_of'][:8]}, tools off] " if r.get("compare_of") else "") + \
            fork_label(r, depth) + r["question"]
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
    return table_rows(nest_forks(log, rows, f.owner), selected), info


# ---- one session ------------------------------------------------------------------------------------

def steps_table(steps: list[dict]) -> list[list]:
    out = []
    for s in steps:
        what = s["tool"] or ("—" if not s["error"] else "")
        detail = s["error"] or (s["box_px"] and f"box {s['box_px']} of image {s['target_image']}") or \
            (s["frames"] and f"frames {s['frames']}") or ""
        mean = s.get("mean_logprob")
        out.append([s["idx"] + 1, what, detail, s["tokens_in"], s["tokens_out"],
                    "" if mean is None else round(mean, 3), len(json.loads(s.get("unsure") or "[]")),
                    round(s["gen_seconds"] or 0, 3), round((s["tool_seconds"] or 0) * 1000, 1)])
    return out


STEP_COLUMNS = ["step", "operation", "detail", "tokens in", "tokens out", "mean log-prob", "unsure tokens", "gen s",
                "op ms"]


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
        frame = stored_image(log, traj.media.overview[0].sha)
        replay = charts.replay_figure(frame, [], None) if frame else charts.empty("no source image stored")
    else:
        replay = charts.empty("no source image stored (imported without pictures)")
    idx = max(0, min(int(step or 1), max(1, len(traj.steps))) - 1)
    raw = traj.steps[idx].text if traj.steps else ""
    obs = traj.steps[idx].observation if traj.steps else ""
    unsure = traj.steps[idx].unsure if traj.steps else None
    return {
        "header": header_markdown(row, traj),
        "replay": replay,
        "timeline": charts.frames_timeline(traj.media.frame_times, traj.steps),
        "timings": charts.step_timings(traj.steps),
        "steps": steps_table(steps),
        "n_steps": len(traj.steps),
        "picture": step_picture(log, traj, idx, original),
        "raw": raw + (f"\n\n--- observation fed back ---\n{obs}" if obs else ""),
        "unsure": unsure_segments(raw, unsure) if unsure is not None else [],
        "trajectory": traj,
    }


# ---- side by side --------------------------------------------------------------------------------------

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
