"""A plotly chart of an evaluation report: per category accuracy, RaPR and tool-call health.

`report_figure(report)` takes the report.json object (the app calls it on a loaded report);
`write_chart` saves it as `<out>/report.html` (plotly.js from its CDN, so the file stays small).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # plotly is imported where a chart is drawn: `core ask` and `core eval` run without it
    import plotly.graph_objects as go

SERIES = (("accuracy", "accuracy", "#1f77b4"), ("rapr", "RaPR", "#ff7f0e"),
          ("no_tool_share", "no tool call", "#7f7f7f"), ("clean_tool_call_share", "clean tool calls", "#2ca02c"))


def report_figure(report: dict, height: int = 420) -> go.Figure:
    """Grouped bars (percent) for all items and each category; the overall accuracy carries its 95% CI."""
    import plotly.graph_objects as go

    cats = ["all"] + [c for c in report.get("by_category", {}) if c != "all"]
    rows = {"all": {k: report.get(k) for k, _, _ in SERIES} | {"n": report.get("n")}}
    rows.update({c: report["by_category"][c] for c in cats[1:]})
    labels = [f"{c} (n={rows[c].get('n')})" for c in cats]
    fig = go.Figure()
    for key, name, color in SERIES:
        ys = [None if rows[c].get(key) is None else 100 * rows[c][key] for c in cats]
        error = None
        if key == "accuracy" and report.get("accuracy_ci95") and report.get("accuracy") is not None:
            lo, hi = report["accuracy_ci95"]
            acc = report["accuracy"]
            error = {"type": "data", "symmetric": False, "array": [100 * (hi - acc)] + [0] * (len(cats) - 1),
                     "arrayminus": [100 * (acc - lo)] + [0] * (len(cats) - 1)}
        fig.add_trace(go.Bar(x=labels, y=ys, name=name, marker_color=color, error_y=error,
                             hovertemplate=f"{name}: %{{y:.1f}}%<extra>%{{x}}</extra>"))
    metric = "ANLS" if report.get("metric") == "anls" else "accuracy"
    title = f"{report.get('title') or report.get('bench')} · {Path(str(report.get('model'))).name} · tools " \
            f"{'on' if report.get('tools') else 'off'} · {metric} {100 * (report.get('accuracy') or 0):.1f}%"
    if report.get("paper_7b") is not None:
        fig.add_hline(y=report["paper_7b"], line_dash="dot", annotation_text=f"paper {report['paper_7b']}")
    fig.update_layout(title=title, barmode="group", height=height, yaxis={"title": "%", "range": [0, 105]},
                      legend={"orientation": "h", "y": -0.2}, margin={"t": 60, "b": 40})
    return fig


def write_chart(report: dict, path: str | Path) -> Path:
    path = Path(path)
    report_figure(report).write_html(str(path), include_plotlyjs="cdn", full_html=True)
    return path
