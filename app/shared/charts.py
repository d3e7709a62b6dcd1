"""Plotly figures for the Inspect tab: the replay image with every box, frame timelines, session charts.

Every figure gets a fixed height (Gradio's gr.Plot renders autosized figures at 0 px).
Inputs are the trajectory's steps (core.trajectory.Step), plain rows and PIL images, so the figures are testable.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import plotly.graph_objects as go
from PIL import Image

from app.shared.render import BOX_COLORS
from core.trajectory import Step

MAX_SIDE = 900


def short_name(model: str | None) -> str:
    """The last part of a model path (two for .../<run>/final), for legends and axes."""
    parts = (model or "").rstrip("/").split("/")
    return "/".join(parts[-2:]) if len(parts) > 1 and parts[-1] in ("final", "model") else parts[-1]


def _rgb(i: int) -> str:
    r, g, b = BOX_COLORS[i % len(BOX_COLORS)]
    return f"rgb({r},{g},{b})"


def _empty(title: str, height: int = 300) -> go.Figure:
    fig = go.Figure()
    fig.update_layout(title=title, height=height, xaxis={"visible": False}, yaxis={"visible": False},
                      annotations=[{"text": "no data yet", "showarrow": False, "x": 0.5, "y": 0.5,
                                    "xref": "paper", "yref": "paper"}])
    return fig


def boxes_in_source(steps: Sequence[Step]) -> list[tuple[int, list[int]]]:
    """(step index, box in original pixels) for every crop whose box maps to the original image."""
    return [(s.index, [int(v) for v in s.source_box_px]) for s in steps if s.source_box_px and not s.error]


def replay_figure(image: Image.Image, steps: Sequence[Step], current: int | None = None,
                  height: int = 520) -> go.Figure:
    """The source image with every crop box overlaid in step order; hover gives original pixels."""
    scale = min(1.0, MAX_SIDE / max(image.size))
    shown = image.convert("RGB").resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))))
    fig = go.Figure(go.Image(z=np.asarray(shown), hoverinfo="skip"))
    for idx, (x0, y0, x1, y1) in boxes_in_source(steps):
        xs = [x0, x1, x1, x0, x0]
        ys = [y0, y0, y1, y1, y0]
        width = 5 if current == idx else 2.5
        fig.add_trace(go.Scatter(
            x=[x * scale for x in xs], y=[y * scale for y in ys], mode="lines", name=f"step {idx + 1}",
            line={"color": _rgb(idx), "width": width}, customdata=[[x, y] for x, y in zip(xs, ys)],
            hovertemplate=f"step {idx + 1}<br>box [{x0}, {y0}, {x1}, {y1}] px<br>corner (%{{customdata[0]}}, "
                          "%{customdata[1]})<extra></extra>"))
    # an invisible grid so hovering anywhere reports original-pixel coordinates
    gx, gy = np.meshgrid(np.linspace(0, image.width - 1, 40), np.linspace(0, image.height - 1, 30))
    fig.add_trace(go.Scatter(x=(gx * scale).ravel(), y=(gy * scale).ravel(), mode="markers", showlegend=False,
                             marker={"opacity": 0, "size": 14},
                             customdata=np.stack([gx.ravel(), gy.ravel()], 1).round().astype(int),
                             hovertemplate="x %{customdata[0]} px, y %{customdata[1]} px<extra></extra>"))
    fig.update_layout(height=height, margin={"l": 0, "r": 0, "t": 30, "b": 0},
                      title=f"{image.width}×{image.height} px · {len(boxes_in_source(steps))} boxes",
                      legend={"orientation": "h"}, xaxis={"visible": False},
                      yaxis={"visible": False, "scaleanchor": "x"})
    return fig


def frames_timeline(frame_times: Sequence[float], steps: Sequence[Step], height: int = 260) -> go.Figure:
    """Overview frames on a time axis, and the frames each select_frames step chose above them."""
    if not frame_times:
        return _empty("frames timeline (not a video)", height)
    fig = go.Figure(go.Scatter(x=list(frame_times), y=["overview"] * len(frame_times), mode="markers+text",
                               text=[f"#{i + 1}" for i in range(len(frame_times))], textposition="top center",
                               marker={"color": "lightgray", "size": 10}, name="overview",
                               hovertemplate="frame #%{text} at %{x:.2f} s<extra></extra>"))
    for s in steps:
        frames = s.frames or []
        if not frames:
            continue
        times = [frame_times[k - 1] for k in frames if 0 < k <= len(frame_times)]
        fig.add_trace(go.Scatter(x=times, y=[f"step {s.index + 1}"] * len(times), mode="markers",
                                 marker={"color": _rgb(s.index), "size": 14, "symbol": "square"},
                                 name=f"step {s.index + 1}", text=[f"#{k}" for k in frames],
                                 hovertemplate="frame %{text} at %{x:.2f} s<extra></extra>"))
    fig.update_layout(height=height, title="frames selected per step", xaxis_title="time (s)",
                      margin={"l": 10, "r": 10, "t": 40, "b": 40})
    return fig


def step_timings(steps: Sequence[Step], height: int = 280) -> go.Figure:
    """Per-step generation and operation time (stacked), with tokens out on hover."""
    if not steps:
        return _empty("step timings", height)
    x = [f"{s.index + 1}·{s.tool or ('error' if s.error else 'answer')}" for s in steps]
    fig = go.Figure([
        go.Bar(x=x, y=[s.gen_seconds for s in steps], name="generation (s)",
               customdata=[[s.tokens_in, s.tokens_out] for s in steps],
               hovertemplate="%{y:.3f} s · %{customdata[0]} → %{customdata[1]} tokens<extra></extra>"),
        go.Bar(x=x, y=[s.tool_seconds for s in steps], name="operation (s)"),
    ])
    fig.update_layout(barmode="stack", height=height, title="time per step", xaxis_title="step",
                      yaxis={"title": "seconds", "rangemode": "tozero"}, legend={"orientation": "h", "y": -0.3},
                      margin={"l": 10, "r": 10, "t": 40, "b": 40})
    return fig


def ops_per_session(rows: Sequence[dict], height: int = 280) -> go.Figure:
    if not rows:
        return _empty("operations per session", height)
    fig = go.Figure(go.Bar(x=[r["n_ops"] for r in rows], y=[r["sessions"] for r in rows]))
    fig.update_layout(height=height, title="operations per session", xaxis={"title": "operations", "dtick": 1},
                      yaxis={"title": "sessions", "rangemode": "tozero"}, margin={"l": 10, "r": 10, "t": 40, "b": 40})
    return fig


def rapr_over_time(rows: Sequence[dict], height: int = 280) -> go.Figure:
    """RaPR (share of tool-enabled sessions using at least one operation) per day, one line per model."""
    if not rows:
        return _empty("RaPR over time", height)
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
        return _empty("RaPR and accuracy by model", height)
    names = [short_name(r["model"]) or "?" for r in rows]
    fig = go.Figure([go.Bar(x=names, y=[r["rapr"] for r in rows], name="RaPR"),
                     go.Bar(x=names, y=[r["accuracy"] for r in rows], name="accuracy (scored)")])
    fig.update_layout(height=height, title="RaPR and accuracy by model", yaxis={"range": [0, 1.05], "title": "share"},
                      margin={"l": 10, "r": 10, "t": 40, "b": 40})
    return fig


def latency_per_step(rows: Sequence[dict], height: int = 280) -> go.Figure:
    """Distribution of step latency (generation + operation) by step kind."""
    if not rows:
        return _empty("latency per step", height)
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


# ---- training and evaluation jobs (Train tab) --------------------------------------------------------

CURVE_ORDER = ("loss", "eval_loss", "reward", "accuracy", "rapr", "rapr_image", "rapr_video", "curiosity",
               "penalty", "eval_zoom_needed_acc", "eval_zoom_optional_acc", "eval_rapr", "learning_rate",
               "grad_norm", "kl", "ops_per_traj", "error_rate", "response_length")


SKIP_KEYS = {"step", "time", "epoch", "total_flos", "train_runtime", "train_samples_per_second",
             "train_steps_per_second", "num_tokens"}


def ema(values: Sequence[float], alpha: float) -> list[float]:
    """Exponential moving average (alpha = weight of the past: 0 keeps the raw values)."""
    out, acc = [], None
    for v in values:
        acc = v if acc is None else alpha * acc + (1 - alpha) * v
        out.append(acc)
    return out


def curve_keys(rows: Sequence[dict], limit: int = 9) -> list[str]:
    """Numeric keys of metrics rows, the important ones first."""
    keys: dict[str, None] = {}
    for r in rows:
        for k, v in r.items():
            if k not in SKIP_KEYS and isinstance(v, (int, float)) and not isinstance(v, bool):
                keys[k] = None
    ordered = [k for k in CURVE_ORDER if k in keys] + sorted(k for k in keys if k not in CURVE_ORDER)
    return ordered[:limit]


def job_curves(rows: Sequence[dict], keys: Sequence[str] | None = None, alpha: float = 0.6,
               title: str = "", height_per_row: int = 220, marks: Sequence[tuple[int, str]] = ()) -> go.Figure:
    """One panel per metric: raw points at 25% opacity plus an EMA line; x = step, hover gives values.
    `marks` (step, label) draw a dashed vertical line on every panel (the RL collapse alarms)."""
    from plotly.subplots import make_subplots

    rows = [r for r in rows if "train_runtime" not in r]  # the Trainer's end-of-run summary row
    keys = list(keys or curve_keys(rows))
    if not rows or not keys:
        return _empty(title or "metrics", height=300)
    cols = min(3, len(keys))
    nrows = -(-len(keys) // cols)
    fig = make_subplots(rows=nrows, cols=cols, subplot_titles=keys, horizontal_spacing=0.07,
                        vertical_spacing=min(0.12, 0.35 / max(1, nrows - 1)) if nrows > 1 else 0.1)
    for i, key in enumerate(keys):
        pts = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))
               and not isinstance(r.get(key), bool)]
        if not pts:
            continue
        xs, ys = [p[0] for p in pts], [float(p[1]) for p in pts]
        r, c = i // cols + 1, i % cols + 1
        color = _rgb(i)
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="markers+lines", name=key, opacity=0.25, showlegend=False,
                                 line={"color": color, "width": 1}, marker={"size": 4},
                                 hovertemplate=f"{key}<br>step %{{x}}: %{{y:.4g}}<extra></extra>"), row=r, col=c)
        if len(pts) > 1 and alpha > 0:
            fig.add_trace(go.Scatter(x=xs, y=ema(ys, alpha), mode="lines", name=f"{key} (EMA)", showlegend=False,
                                     line={"color": color, "width": 2.5},
                                     hovertemplate=f"{key} EMA<br>step %{{x}}: %{{y:.4g}}<extra></extra>"),
                          row=r, col=c)
    fig.update_layout(height=max(300, nrows * height_per_row + 60), title=title or None, uirevision="job",
                      margin={"l": 40, "r": 20, "t": 60 if title else 40, "b": 30})
    fig.update_xaxes(title_text="step", title_standoff=2)
    for step, label in marks:
        fig.add_vline(x=step, line={"color": "#d62728", "dash": "dash", "width": 1.5}, annotation_text=label,
                      annotation_font_size=10, row="all", col="all")
    return fig


def gain_bars(result: dict, height: int = 320) -> go.Figure:
    """Start model vs fine-tuned accuracy per held-out set (app/gain.py's gain.json), 95% intervals."""
    sets = [*result["sets"].items(), ("all", result["all"])]
    names = [short_name(name) for name, _ in sets]
    fig = go.Figure()
    for who, label in (("base", "start model"), ("tuned", "fine-tuned")):
        acc = [c[who]["accuracy"] or 0 for _, c in sets]
        lo = [a - (c[who]["ci95"][0] if c[who]["ci95"][0] is not None else a) for a, (_, c) in zip(acc, sets)]
        hi = [(c[who]["ci95"][1] if c[who]["ci95"][1] is not None else a) - a for a, (_, c) in zip(acc, sets)]
        fig.add_trace(go.Bar(x=names, y=acc, name=label,
                             error_y={"type": "data", "symmetric": False, "array": hi, "arrayminus": lo}))
    fig.update_layout(barmode="group", height=height, title="accuracy on the same held-out items (95% intervals)",
                      yaxis={"range": [0, 1.05], "title": "accuracy"}, margin={"l": 10, "r": 10, "t": 40, "b": 40})
    return fig
