"""Charts over the sessions a filter selects (the Inspect tab's Charts accordion): operations per
session, step latency, RaPR per day and per model. Rows come from SessionLog.stats."""
from __future__ import annotations

from typing import Sequence

import plotly.graph_objects as go

from app.shared.charts import empty, short_name


def stats_figures(stats: dict) -> tuple[go.Figure, go.Figure, go.Figure, go.Figure]:
    """The four charts, in the order the accordion shows them."""
    return (ops_per_session(stats["ops"]), latency_per_step(stats["latency"]),
            rapr_over_time(stats["rapr_by_day"]), rapr_by_model(stats["rapr_by_model"]))


def ops_per_session(rows: Sequence[dict], height: int = 280) -> go.Figure:
    if not rows:
        return empty("operations per session", height)
    fig = go.Figure(go.Bar(x=[r["n_ops"] for r in rows], y=[r["sessions"] for r in rows]))
    fig.update_layout(height=height, title="operations per session", xaxis={"title": "operations", "dtick": 1},
                      yaxis={"title": "sessions", "rangemode": "tozero"}, margin={"l": 10, "r": 10, "t": 40, "b": 40})
    return fig


def rapr_over_time(rows: Sequence[dict], height: int = 280) -> go.Figure:
    """RaPR (share of tool-enabled sessions using at least one operation) per day, one line per model."""
    if not rows:
        return empty("RaPR over time", height)
    fig = go.Figure()
    for model in sorted({r["model"] or "" for r in rows}):
        pts = [r for r in rows if (r["model"] or "") == model]
        fig.add_trace(go.Scatter(x=[r["day"] for r in pts], y=[r["rapr"] for r in pts], mode="lines+markers",
                                 name=short_name(model) or "?", customdata=[r["sessions"] for r in pts],
                                 hovertemplate="%{x}: RaPR %{y:.2f} over %{customdata} sessions<extra></extra>"))
    fig.update_layout(height=height, title="RaPR over time", yaxis={"range": [0, 1.05], "title": "RaPR"},
                      xaxis_title="day",
                      margin={"l": 10, "r": 10, "t": 40, "b": 40})
    return fig


def rapr_by_model(rows: Sequence[dict], height: int = 280) -> go.Figure:
    if not rows:
        return empty("RaPR and accuracy by model", height)
    names = [short_name(r["model"]) or "?" for r in rows]
    fig = go.Figure([go.Bar(x=names, y=[r["rapr"] for r in rows], name="RaPR"),
                     go.Bar(x=names, y=[r["accuracy"] for r in rows], name="accuracy (scored)")])
    fig.update_layout(height=height, title="RaPR and accuracy by model", yaxis={"range": [0, 1.05], "title": "share"},
                      margin={"l": 10, "r": 10, "t": 40, "b": 40})
    return fig


def latency_per_step(rows: Sequence[dict], height: int = 280) -> go.Figure:
    """Distribution of step latency (generation + operation) by step kind."""
    if not rows:
        return empty("latency per step", height)
    fig = go.Figure()
    kinds = {}
    for r in rows:
        kind = "error" if r["is_error"] else (r["tool"] or "answer")
        kinds.setdefault(kind, []).append((r["gen_seconds"] or 0) + (r["tool_seconds"] or 0))
    for kind, values in sorted(kinds.items()):
        fig.add_trace(go.Box(y=values, name=kind, boxpoints="outliers"))
    fig.update_layout(height=height, title="latency per step", yaxis={"title": "seconds", "rangemode": "tozero"},
                      margin={"l": 10, "r": 10, "t": 40, "b": 40})
    return fig
