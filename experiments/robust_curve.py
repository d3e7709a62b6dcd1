"""The CPU retrain's learning curve: its kept checkpoints, each on the own split and the shift suite.

    python experiments/robust_curve.py --evals runs/robust/curve-eval --out runs/robust/curve-eval/curve.md

Reads what `python -m core eval` (own-<step>/report.json) and `python -m train shift-report --limit N`
(shifts-<step>/report.md) wrote for each checkpoint `runs/robust/curve/step-<step>` (batch 8: a step is
8 conversation passes), plus `shifts-start` / `shifts-final` when present, and tabulates them: does a
larger budget move toward the bars (docs/robustness.md)?
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

BATCH = 8
"""Conversations per step of the CPU recipe (scripts/train_robust.sh: batch_size=8)."""


def bar_figures(report_md: Path) -> tuple[str, str]:
    """(pooled zoom-needed '52% (48–56)', lowest shift 'canvas_4200x1800 4%') of a shift report, '–' where missing."""
    text = report_md.read_text() if report_md.is_file() else ""
    pooled = re.search(r"^pooled zoom-needed (\S+ \(\S+\))", text, re.M)
    lowest = re.search(r"^lowest shift (\S+ \S+),", text, re.M)
    return pooled.group(1) if pooled else "–", lowest.group(1) if lowest else "–"


def own(report_json: Path) -> tuple[str, str, str]:
    """(own-split accuracy, zoom-needed, counting) of an eval report, '–' when missing."""
    if not report_json.is_file():
        return "–", "–", "–"
    r = json.loads(report_json.read_text())
    cats = r.get("by_category", {})

    def cat(name: str) -> str:
        c = cats.get(name)
        return f"{100 * c['accuracy']:.1f}" if c else "–"
    return f"{100 * r['accuracy']:.1f}", cat("zoom_needed"), cat("counting")


def rows(evals: Path) -> list[tuple]:
    steps = sorted(int(p.name.split("-")[1]) for p in evals.glob("own-*") if p.name.split("-")[1].isdigit())
    named = [(label, label) for label in ("start", "final") if (evals / f"shifts-{label}").is_dir()]
    out = []
    for key, label in [(str(s), f"{s} ({s * BATCH:,} passes)") for s in steps] + named:
        out.append((label, *own(evals / f"own-{key}" / "report.json"), *bar_figures(evals / f"shifts-{key}" / "report.md")))
    return out


def table(evals: Path) -> str:
    lines = ["| checkpoint | own split % | own zoom-needed % | own counting % | shift suite pooled zoom-needed | "
             "lowest shift |", "| --- | --- | --- | --- | --- | --- |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows(evals)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python experiments/robust_curve.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--evals", required=True, help="folder of own-<step>/ and shifts-<step>/ evaluations")
    ap.add_argument("--out", help="also write the table here (markdown)")
    args = ap.parse_args(argv)
    text = table(Path(args.evals))
    if args.out:
        Path(args.out).write_text(text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
