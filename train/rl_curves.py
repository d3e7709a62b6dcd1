"""The two curves every RL run is read by, from its metrics.jsonl rows: rollout RaPR per step against
the curiosity target H, and greedy TinyZoom accuracy at each in-run evaluation. One figure for one
run (the Studio's Train tab) or many (the ablation's docs), colour by group, one line per run."""
from __future__ import annotations

from typing import Mapping, Sequence

import plotly.graph_objects as go

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")
EVAL_KEYS = {"eval_zoom_needed_acc": ("zoom-needed", "solid"), "eval_zoom_optional_acc": ("zoom-optional", "dot"),
             "eval_video_acc": ("video", "dash")}


def rapr_points(rows: Sequence[dict]) -> tuple[list[int], list[float]]:
    """(steps, rollout RaPR) of the training rows (eval rows carry eval_rapr instead)."""
    pts = [(r["step"], float(r["rapr"])) for r in rows
           if isinstance(r.get("rapr"), (int, float)) and not isinstance(r.get("rapr"), bool) and "step" in r]
    return [p[0] for p in pts], [p[1] for p in pts]


def eval_points(rows: Sequence[dict], key: str) -> tuple[list[int], list[float]]:
    pts = sorted({r["step"]: float(r[key]) for r in rows if isinstance(r.get(key), (int, float))}.items())
    return [p[0] for p in pts], [p[1] for p in pts]


def rl_figure(runs: Mapping[str, Sequence[dict]], H: float, title: str = "", height: int = 380) -> go.Figure:
    """Left: rollout RaPR per step, H dotted; right: eval accuracy per eval step. `runs` maps a label
    ("group/seed" puts runs of one group in one colour) to its metrics rows."""
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.08,
                        subplot_titles=(f"rollout RaPR per step (dotted: H = {H:g})", "eval accuracy (greedy)"))
    groups = list(dict.fromkeys(label.split("/")[0] for label in runs))
    for label, rows in runs.items():
        group = label.split("/")[0]
        color = PALETTE[groups.index(group) % len(PALETTE)]
        xs, ys = rapr_points(rows)
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=label, legendgroup=group,
                                 line={"color": color, "width": 1.5}, marker={"size": 4},
                                 hovertemplate=f"{label}<br>step %{{x}}: RaPR %{{y:.3f}}<extra></extra>"), row=1, col=1)
        for key, (name, dash) in EVAL_KEYS.items():
            ex, ey = eval_points(rows, key)
            if ex:
                fig.add_trace(go.Scatter(x=ex, y=ey, mode="lines+markers", name=f"{label} {name}",
                                         legendgroup=group, showlegend=False,
                                         line={"color": color, "dash": dash, "width": 1.5}, marker={"size": 5},
                                         hovertemplate=f"{label} {name}<br>step %{{x}}: %{{y:.3f}}<extra></extra>"),
                              row=1, col=2)
    fig.add_hline(y=H, line={"dash": "dot", "color": "#444"}, row=1, col=1)
    fig.update_yaxes(range=[-0.02, 1.02])
    fig.update_xaxes(title_text="step")
    fig.update_layout(height=height, title=title or None, margin={"l": 40, "r": 20, "t": 60, "b": 40},
                      legend={"font": {"size": 10}})
    fig.add_annotation(text="accuracy: solid zoom-needed, dotted zoom-optional", xref="paper", yref="paper",
                       x=1, y=-0.16, showarrow=False, font={"size": 10}, xanchor="right")
    return fig


def write_png(fig: go.Figure, path, width: int = 1100, height: int | None = None) -> None:
    """A static PNG through plotly's kaleido, which drives an installed Chromium."""
    import os
    import shutil

    if "BROWSER_PATH" not in os.environ:
        found = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
        if found:
            os.environ["BROWSER_PATH"] = found
    fig.write_image(str(path), width=width, height=height or fig.layout.height or 400)
