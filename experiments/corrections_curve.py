"""How much do corrections buy? The corrections experiment at several sizes and budgets, on one family.

    python experiments/corrections_curve.py --family DIR --out OUT [--ns 10,25,50,100] [--minutes-list 2.5,5]

Each point is one `experiments/corrections_teach.py` run (the Studio's annotate, export, fine-tune and
gain view) into `OUT/n<N>-m<M>`: first the number of corrections at `--minutes`, then the fine-tune
budget at `--n-for-minutes` corrections. The start model runs once (`OUT/start`): every point copies its
session log and evaluations, so all points share the same pool, the same held-out items and the same
baseline, and a point costs its fine-tune and the tuned model's evaluations. A finished point (its
`report.json`) is kept; a rerun does the missing ones. Writes `OUT/curve.json`, `OUT/curve.md` and
`OUT/curve.png`.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sqlite3
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))
sys.path.insert(0, str(ROOT))

import corrections_teach as T  # noqa: E402

SHARED = ("studio.db", "eval-start-family", "eval-start-own")
"""What every point copies from OUT/start: the start model's session log and evaluations."""


def start(cfg: T.TeachConfig) -> Path:
    """The start model on the family (into a session log) and on the own split, once."""
    base = Path(cfg.out) / "start"
    base.mkdir(parents=True, exist_ok=True)
    T.evaluate(cfg.model, Path(cfg.family), base / "eval-start-family", cfg.batch, db=base / "studio.db")
    T.evaluate(cfg.model, Path(cfg.own), base / "eval-start-own", cfg.batch, limit=cfg.own_limit)
    return base


def copy_db(src: Path, dst: Path) -> None:
    """A consistent copy of a session log, its write-ahead log included (a file copy would miss it)."""
    a, b = sqlite3.connect(src), sqlite3.connect(dst)
    try:
        a.backup(b)
    finally:
        a.close(), b.close()


def point(cfg: T.TeachConfig, base: Path, n: int, minutes: float) -> dict:
    """One corrections_teach run on a fresh copy of the start's log: (n corrections, minutes)."""
    out = Path(cfg.out) / f"n{n}-m{minutes:g}"
    if (out / "report.json").is_file():
        return json.loads((out / "report.json").read_text())
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    copy_db(base / "studio.db", out / "studio.db")
    for name in SHARED[1:]:
        shutil.copytree(base / name, out / name)
    result = {**T.run(dataclasses.replace(cfg, out=str(out), n=n, minutes=minutes)), "asked_n": n, "minutes": minutes}
    (out / "report.json").write_text(json.dumps(result, indent=2))
    print(T.summary(result), flush=True)
    return result


def table(points: list[dict]) -> str:
    lines = ["| corrections | fine-tune budget, min (used, s) | held-out before → after | gain (95% CI) | own split |",
             "| --- | --- | --- | --- | --- |"]
    for r in points:
        lo, hi = r["gain_ci95"]
        lines.append(f"| {r['n_corrections']} | {r['minutes']:g} ({r['finetune_seconds']:.0f}) | {r['before']:.1f} → "
                     f"{r['after']:.1f} | {r['gain']:+.1f} [{lo:.1f}, {hi:.1f}] | {r['own_before']:.1f} → "
                     f"{r['own_after']:.1f} |")
    return "\n".join(lines) + "\n"


def figure(by_n: list[dict], by_minutes: list[dict], title: str):
    """Gain with its interval against corrections (left) and against fine-tune minutes (right)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("gain against corrections", "gain against fine-tune minutes"))
    for col, pts, x in ((1, by_n, "n_corrections"), (2, by_minutes, "minutes")):
        fig.add_trace(go.Scatter(
            x=[p[x] for p in pts], y=[p["gain"] for p in pts], mode="lines+markers", showlegend=False,
            error_y={"type": "data", "array": [p["gain_ci95"][1] - p["gain"] for p in pts],
                     "arrayminus": [p["gain"] - p["gain_ci95"][0] for p in pts]}), row=1, col=col)
    fig.update_yaxes(title_text="held-out gain, points")
    fig.update_layout(title=title, height=420, template="plotly_white")
    return fig


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python experiments/corrections_curve.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--family", required=True, help="TinyZoom-format folder of one failure family")
    ap.add_argument("--out", required=True, help="run folder: start/, one folder per point, curve.*")
    ap.add_argument("--ns", default="10,25,50,100", help="numbers of corrections, at --minutes")
    ap.add_argument("--minutes", type=float, default=10.0, help="fine-tune budget of the corrections points")
    ap.add_argument("--minutes-list", default="2.5,5", help="further budgets, at --n-for-minutes corrections")
    ap.add_argument("--n-for-minutes", type=int, default=50, help="corrections of the budget points")
    ap.add_argument("--args", default="", help="further corrections_teach options, e.g. '--mix 100 --heldout 150'")
    args = ap.parse_args(argv)
    cfg = T.parse_args(["--family", args.family, "--out", args.out, *args.args.split()])
    try:
        base = start(cfg)
        by_n = sorted((point(cfg, base, int(n), args.minutes) for n in args.ns.split(",")), key=lambda p: p["asked_n"])
        by_m = [point(cfg, base, args.n_for_minutes, float(m)) for m in args.minutes_list.split(",")]
    except (ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    by_m = sorted(by_m + [p for p in by_n if p["asked_n"] == args.n_for_minutes], key=lambda p: p["minutes"])
    out = Path(args.out)
    (out / "curve.json").write_text(json.dumps({"by_corrections": by_n, "by_minutes": by_m}, indent=2))
    (out / "curve.md").write_text(table(by_n) + "\n" + table(by_m))
    from app.training.rl_curves import write_png

    write_png(figure(by_n, by_m, f"Corrections on {Path(args.family).name}"), out / "curve.png", width=1100, height=420)
    print(table(by_n) + "\n" + table(by_m))
    return 0


if __name__ == "__main__":
    sys.exit(main())
