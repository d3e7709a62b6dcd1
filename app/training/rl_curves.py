"""The two curves every RL run is read by, from its metrics.jsonl rows: rollout RaPR per step against
the curiosity target H, and greedy TinyZoom accuracy at each in-run evaluation. One figure for one
run (the Studio's Train tab) or many (the ablation's docs), colour by group, one line per run."""
from __future__ import annotations

from typing import Mapping, Sequence

import plotly.graph_objects as go

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")
SEED_COLORS = PALETTE[:5]  # by_group: seed k has one colour across the groups' columns
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


def rl_figure(runs: Mapping[str, Sequence[dict]], H: float, title: str = "", height: int = 380,
              by_group: bool = False) -> go.Figure:
    """Rollout RaPR per step (H dotted) above or beside eval accuracy per eval step. `runs` maps a label
    ("group/seed" puts the runs of one group in one colour) to its metrics rows; `by_group` gives each
    group its own column (RaPR on top, accuracy below), so that many runs stay readable."""
    from plotly.subplots import make_subplots

    groups = list(dict.fromkeys(label.split("/")[0] for label in runs)) or [""]
    if by_group:
        titles = [f"{g}: rollout RaPR" for g in groups] + [f"{g}: eval accuracy" for g in groups]
        fig = make_subplots(rows=2, cols=len(groups), subplot_titles=titles, horizontal_spacing=0.04,
                            vertical_spacing=0.14, shared_yaxes=True)
    else:
        fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.08,
                            subplot_titles=(f"rollout RaPR per step (dotted: H = {H:g})", "eval accuracy (greedy)"))
    seen: set[str] = set()
    for label, rows in runs.items():
        group = label.split("/")[0]
        k = groups.index(group)
        color = PALETTE[k % len(PALETTE)] if not by_group else SEED_COLORS[_seed_index(label) % len(SEED_COLORS)]
        top, bottom = ((1, k + 1), (2, k + 1)) if by_group else ((1, 1), (1, 2))
        name = label.split("/")[-1] if by_group else label
        xs, ys = rapr_points(rows)
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=name, legendgroup=name if by_group else group,
                                 showlegend=not by_group or name not in seen,
                                 line={"color": color, "width": 1.5}, marker={"size": 4},
                                 hovertemplate=f"{label}<br>step %{{x}}: RaPR %{{y:.3f}}<extra></extra>"),
                      row=top[0], col=top[1])
        seen.add(name)
        for key, (cat, dash) in EVAL_KEYS.items():
            ex, ey = eval_points(rows, key)
            if ex:
                fig.add_trace(go.Scatter(x=ex, y=ey, mode="lines+markers", name=f"{label} {cat}",
                                         legendgroup=name if by_group else group, showlegend=False,
                                         line={"color": color, "dash": dash, "width": 1.5}, marker={"size": 5},
                                         hovertemplate=f"{label} {cat}<br>step %{{x}}: %{{y:.3f}}<extra></extra>"),
                              row=bottom[0], col=bottom[1])
    for k in range(len(groups) if by_group else 1):
        fig.add_hline(y=H, line={"dash": "dot", "color": "#444"}, row=1, col=k + 1)
    fig.update_yaxes(range=[-0.02, 1.02])
    fig.update_xaxes(title_text="step")
    fig.update_layout(height=height, title=title or None, margin={"l": 40, "r": 20, "t": 70, "b": 70},
                      legend={"font": {"size": 10}})
    fig.add_annotation(text=f"dotted line: H = {H:g}; accuracy: solid zoom-needed, dotted zoom-optional",
                       xref="paper", yref="paper", x=1, y=-0.16, showarrow=False, font={"size": 10}, xanchor="right")
    return fig



def _seed_index(label: str) -> int:
    """seedN -> N (any other label: 0), so seed k has one colour across the groups' columns."""
    tail = label.split("/")[-1]
    return int(tail[4:]) if tail.startswith("seed") and tail[4:].isdigit() else 0


def write_png(fig: go.Figure, path, width: int = 1100, height: int | None = None) -> None:
    """A static PNG through plotly's kaleido, which drives an installed Chromium."""
    import os
    import shutil

    if "BROWSER_PATH" not in os.environ:
        found = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
        if found:
            os.environ["BROWSER_PATH"] = found
    fig.write_image(str(path), width=width, height=height or fig.layout.height or 400)
