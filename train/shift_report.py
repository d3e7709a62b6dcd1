"""The robustness report: evaluate a model on every folder of the shift suite and tabulate it.

    python -m train shift-report --suite data/shifts [--model runs/x/final] [--out runs/shifts/<model>] [--batch 16]

Each shift runs as `python -m core eval --bench tinyzoom --data <suite>/<shift>` would (same settings from
the checkpoint, resumable run folder `<out>/<shift>`), in one process so the model loads once. The table
(markdown; `report.md` and `shifts.json` in `<out>`) gives per shift: accuracy with the bootstrap 95%
interval that `core.evaluation.report` computes, the zoom-needed and video items apart, the clean-call
rate, and how the crops went on zoom-needed items (the first and the last crop hold the asked tag's glyph;
a missed first crop recovered; two-step zooms). The table functions are pure, of the run folders'
items.jsonl records.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from core.evaluation.calibration import reliability, reliability_markdown
from core.evaluation.report import bootstrap_ci, group_stats

FOCUS = ("zoom_needed", "video")
"""The categories that need an operation: the second column."""

TWO_STEP_SHIFTS = ("canvas_3000x2000_same_glyph", "canvas_4200x1800")
"""Shifts whose glyph keeps its original pixel size on a huge canvas: one crop of the view is too coarse."""


@dataclass(frozen=True)
class Bars:
    """The retrain's bars on the shift suite (issue 29): what a robust embedded model must hold."""

    pooled_zoom_needed: float = field(default=0.75, metadata={"help": "zoom-needed accuracy over every shift's items"})
    lowest_shift: float = field(default=0.50, metadata={"help": "each shift's zoom-needed / video accuracy"})
    clean_calls: float = field(default=0.95, metadata={"help": "each shift's share of clean tool calls"})
    two_step: float = field(default=0.50, metadata={"help": "two-step zooms on TWO_STEP_SHIFTS' zoom-needed items"})


def contains(outer, inner) -> bool:
    return outer[0] <= inner[0] and outer[1] <= inner[1] and outer[2] >= inner[2] and outer[3] >= inner[3]


def crop_outcomes(record: dict, glyph_box) -> dict | None:
    """For a zoom-needed item: did the first crop hold the glyph, did a later one, was it a two-step zoom.
    None where the item has no crop or no known glyph box."""
    steps = [s for s in (record.get("trajectory") or {}).get("steps", []) if s.get("source_box_px")]
    if not steps or not glyph_box:
        return None
    held = [contains(s["source_box_px"], glyph_box) for s in steps]
    return {"first_hit": held[0], "last_hit": held[-1],
            "recovered": (not held[0]) and any(held[1:]) and bool(record["correct"]),
            "two_step": any((s.get("target_image") or 1) >= 2 for s in steps)}


def _rate(flags) -> float | None:
    flags = list(flags)
    return round(sum(flags) / len(flags), 4) if flags else None


def shift_row(name: str, records: list[dict], glyph_boxes: dict[str, list] | None = None, n_boot: int = 2000) -> dict:
    """One row of the table from a shift's finished item records (one sample per question)."""
    focus = [r for r in records if r.get("category") in FOCUS]
    outcomes = [o for r in records if r.get("category") == "zoom_needed"
                for o in [crop_outcomes(r, (glyph_boxes or {}).get(r["id"]))] if o is not None]
    missed = [o for o in outcomes if not o["first_hit"]]
    return {"shift": name, "n": len(records), "accuracy": group_stats(records)["accuracy"] if records else None,
            "ci95": bootstrap_ci([r["score"] for r in records], n_boot=n_boot),
            "n_focus": len(focus), "focus_accuracy": group_stats(focus)["accuracy"] if focus else None,
            "focus_ci95": bootstrap_ci([r["score"] for r in focus], n_boot=n_boot),
            "clean_calls": group_stats(records)["clean_tool_call_share"] if records else None,
            "first_crop_hit": _rate(o["first_hit"] for o in outcomes),
            "last_crop_hit": _rate(o["last_hit"] for o in outcomes),
            "missed_recovered": _rate(o["recovered"] for o in missed), "n_missed": len(missed),
            "two_step": _rate(o["two_step"] for o in outcomes),
            "unfamiliar": _rate(not r["familiar"] for r in records if r.get("familiar") is not None),
            "confidence": _rate(r["answer_confidence"] for r in records if r.get("answer_confidence") is not None)}


def _pct(v) -> str:
    return "–" if v is None else f"{100 * v:.0f}"


def _ci(acc, ci) -> str:
    return "–" if acc is None else f"{_pct(acc)} ({_pct(ci[0])}–{_pct(ci[1])})"


def to_markdown(rows: list[dict], title: str = "") -> str:
    """The per-shift table: percentages, 95% intervals in brackets."""
    lines = ([f"### {title}", ""] if title else []) + [
        "| shift | n | all % (95% CI) | zoom-needed / video % (95% CI) | clean calls % | first / last crop on the "
        "tag % | missed first crop recovered % | two-step zooms % | mean confidence % | unfamiliar pictures % |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['shift']} | {r['n']} | {_ci(r['accuracy'], r['ci95'])} | "
                     f"{_ci(r['focus_accuracy'], r['focus_ci95'])} (n={r['n_focus']}) | {_pct(r['clean_calls'])} | "
                     f"{_pct(r['first_crop_hit'])} / {_pct(r['last_crop_hit'])} | "
                     f"{_pct(r['missed_recovered'])} (of {r['n_missed']}) | "
                     f"{_pct(r['two_step'])} | {_pct(r.get('confidence'))} | {_pct(r.get('unfamiliar'))} |")
    return "\n".join(lines) + "\n"


def check_bars(rows: list[dict], zoom_scores: list[float], bars: Bars = Bars()) -> list[str]:
    """One line per bar, with the figure, the shift that sets it and met / NOT met: the retrain's verdict."""
    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    pooled = sum(zoom_scores) / len(zoom_scores) if zoom_scores else 0.0
    lo, hi = bootstrap_ci(zoom_scores)
    lines = [f"pooled zoom-needed {_pct(pooled)}% ({_pct(lo)}–{_pct(hi)}) of {len(zoom_scores)}, bar "
             f"{_pct(bars.pooled_zoom_needed)}%: {verdict(pooled >= bars.pooled_zoom_needed)}"]
    for key, label, bar in (("focus_accuracy", "lowest shift", bars.lowest_shift),
                            ("clean_calls", "lowest clean calls", bars.clean_calls)):
        known = [r for r in rows if r[key] is not None]
        if known:
            low = min(known, key=lambda r: r[key])
            lines.append(f"{label} {low['shift']} {_pct(low[key])}%, bar {_pct(bar)}%: {verdict(low[key] >= bar)}")
    two = [r for r in rows if r["shift"] in TWO_STEP_SHIFTS and r["two_step"] is not None]
    if two:
        shares = ", ".join(f"{r['shift']} {_pct(r['two_step'])}%" for r in two)
        lines.append(f"two-step zooms {shares}, bar {_pct(bars.two_step)}%: "
                     f"{verdict(all(r['two_step'] >= bars.two_step for r in two))}")
    return lines


def compare_markdown(before: list[dict], after: list[dict]) -> str:
    """Before / after per shift: zoom-needed / video accuracy and clean calls (the README's table)."""
    old = {r["shift"]: r for r in before}
    lines = ["| shift | zoom-needed / video %, before → after | clean calls %, before → after |", "| --- | --- | --- |"]
    for r in after:
        b = old.get(r["shift"], {})
        lines.append(f"| {r['shift']} | {_pct(b.get('focus_accuracy'))} → {_pct(r['focus_accuracy'])} | "
                     f"{_pct(b.get('clean_calls'))} → {_pct(r['clean_calls'])} |")
    return "\n".join(lines) + "\n"


def suite_calibration(records: list[dict]) -> str:
    """The reliability table over every item of the suite (markdown; empty without confidences)."""
    lines = reliability_markdown(reliability(records))
    return ("\n" + "\n".join(lines) + "\n") if lines else ""


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def glyph_boxes(folder: Path) -> dict[str, list]:
    """Each zoom-needed item's glyph box (original pixels), from the shift folder's test.jsonl."""
    return {r["id"]: r["meta"]["glyph_box"] for r in read_jsonl(folder / "test.jsonl") if r["meta"].get("glyph_box")}


def shift_folders(suite: Path, names: list[str] | None = None) -> list[Path]:
    folders = sorted(p for p in suite.iterdir() if (p / "test.jsonl").is_file()) if suite.is_dir() else []
    if names:
        folders = [p for p in folders if p.name in names]
    if not folders:
        raise FileNotFoundError(f"{suite}: no shift folders with a test.jsonl (write them with "
                                f"`python -m train synth --shift-suite {suite}`)")
    return folders


def main(argv: list[str] | None = None) -> int:
    from core.backends import BackendError, GenerationParams
    from core.cli import add_model_args, backend_from_args
    from core.evaluation import evaluate, load_items, resolve_settings
    from core.loop import LoopConfig

    ap = argparse.ArgumentParser(prog="python -m train shift-report", description=__doc__.split("\n\n")[0])
    ap.add_argument("--suite", default="data/shifts", help="the suite (python -m train synth --shift-suite)")
    ap.add_argument("--out", help="run folders go to <out>/<shift> (default runs/shifts/<model name>)")
    ap.add_argument("--shifts", help="comma-separated shift names (default: every folder)")
    ap.add_argument("--limit", type=int, default=None, help="only the first N items of each shift")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--title", default="", help="a heading over the table")
    ap.add_argument("--before", help="another model's report folder (its shifts.json): adds a before/after table")
    add_model_args(ap)
    ap.set_defaults(temperature=None, max_new_tokens=None)
    args = ap.parse_args(argv)
    try:
        folders = shift_folders(Path(args.suite), args.shifts.split(",") if args.shifts else None)
        if args.before and not (Path(args.before) / "shifts.json").is_file():
            raise FileNotFoundError(f"{args.before}: no shifts.json (a shift-report --out folder)")
        backend = backend_from_args(args)
        settings = resolve_settings(backend.pixel_preset, args.pixels, args.temperature,
                                    args.max_new_tokens)
    except (FileNotFoundError, BackendError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out or Path("runs") / "shifts" / Path(backend.model_id.rstrip("/")).name)
    config = LoopConfig(tools=not args.no_tools, guideline=args.guideline, max_ops=args.max_ops, pixels=settings.pixels)
    params = GenerationParams(max_new_tokens=settings.max_new_tokens, temperature=settings.temperature)
    rows, every = [], []
    for folder in folders:
        items = load_items("tinyzoom", folder, limit=args.limit)
        result = evaluate(backend, items, "tinyzoom", out / folder.name, config, params, batch=args.batch,
                          progress=False, data=str(folder.resolve()), details={"pixel_preset": settings.pixel_preset})
        records = read_jsonl(out / folder.name / "items.jsonl")
        keep = {i.id for i in items}
        rows.append(shift_row(folder.name, [r for r in records if r["id"] in keep], glyph_boxes(folder)))
        every += [r for r in records if r["id"] in keep]
        print(f"{folder.name}: {rows[-1]['accuracy']} ({result.n_new} new items)", file=sys.stderr)
    zoom = [r["score"] for r in every if r.get("category") == "zoom_needed"]
    table = to_markdown(rows, args.title) + suite_calibration(every) + "\n" + "\n".join(check_bars(rows, zoom)) + "\n"
    if args.before:
        table += "\n" + compare_markdown(json.loads((Path(args.before) / "shifts.json").read_text())["rows"], rows)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text(table, encoding="utf-8")
    (out / "shifts.json").write_text(json.dumps({"model": backend.model_id, "suite": str(args.suite), "rows": rows},
                                                indent=2), encoding="utf-8")
    print(table)
    return 0
