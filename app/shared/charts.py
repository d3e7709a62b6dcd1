"""Plotly figures of one session: the replay image with every box, the frames timeline, step timings.

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


def rgb(i: int) -> str:
    r, g, b = BOX_COLORS[i % len(BOX_COLORS)]
    return f"rgb({r},{g},{b})"


def empty(title: str, height: int = 300) -> go.Figure:
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
            line={"color": rgb(idx), "width": width}, customdata=[[x, y] for x, y in zip(xs, ys)],
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
        return empty("frames timeline (not a video)", height)
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
                                 marker={"color": rgb(s.index), "size": 14, "symbol": "square"},
                                 name=f"step {s.index + 1}", text=[f"#{k}" for k in frames],
                                 hovertemplate="frame %{text} at %{x:.2f} s<extra></extra>"))
    fig.update_layout(height=height, title="frames selected per step", xaxis_title="time (s)",
                      margin={"l": 10, "r": 10, "t": 40, "b": 40})
    return fig


def step_timings(steps: Sequence[Step], height: int = 280) -> go.Figure:
    """Per-step generation and operation time (stacked), with tokens out on hover."""
    if not steps:
        return empty("step timings", height)
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
