"""Plotly figures of training and evaluation jobs (the Train tab): metric curves with EMA lines,
and the gain of a fine-tuned model over its start model."""
from __future__ import annotations

from typing import Sequence

import plotly.graph_objects as go

from app.shared.charts import empty, rgb, short_name

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


def value_axis(values: Sequence[float]) -> dict:
    """A y axis that shows its values: a constant (a learning rate of 1e-4) gets a range around it,
    where plotly would draw it on -1..1, and small numbers are written 1e-4, not 100µ."""
    lo, hi = min(values), max(values)
    axis: dict = {}
    if lo == hi:
        pad = abs(lo) * 0.5 or 1.0
        axis["range"] = [lo - pad, hi + pad]
    if 0 < max(abs(lo), abs(hi)) < 1e-2:
        axis["exponentformat"] = "e"
    return axis


def job_curves(rows: Sequence[dict], keys: Sequence[str] | None = None, alpha: float = 0.6,
               title: str = "", height_per_row: int = 220, marks: Sequence[tuple[int, str]] = ()) -> go.Figure:
    """One panel per metric: raw points at 25% opacity plus an EMA line; x = step, hover gives values.
    `marks` (step, label) draw a dashed vertical line on every panel (the RL collapse alarms)."""
    from plotly.subplots import make_subplots

    rows = [r for r in rows if "train_runtime" not in r]  # the Trainer's end-of-run summary row
    keys = list(keys or curve_keys(rows))
    if not rows or not keys:
        return empty(title or "metrics", height=300)
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
        color = rgb(i)
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="markers+lines", name=key, opacity=0.25, showlegend=False,
                                 line={"color": color, "width": 1}, marker={"size": 4},
                                 hovertemplate=f"{key}<br>step %{{x}}: %{{y:.4g}}<extra></extra>"), row=r, col=c)
        if len(pts) > 1 and alpha > 0:
            fig.add_trace(go.Scatter(x=xs, y=ema(ys, alpha), mode="lines", name=f"{key} (EMA)", showlegend=False,
                                     line={"color": color, "width": 2.5},
                                     hovertemplate=f"{key} EMA<br>step %{{x}}: %{{y:.4g}}<extra></extra>"),
                          row=r, col=c)
        fig.update_yaxes(**value_axis(ys), row=r, col=c)
    fig.update_layout(height=max(300, nrows * height_per_row + 60), title=title or None, uirevision="job",
                      margin={"l": 40, "r": 20, "t": 60 if title else 40, "b": 30})
    fig.update_xaxes(title_text="step", title_standoff=2)
    for step, label in marks:
        fig.add_vline(x=step, line={"color": "#d62728", "dash": "dash", "width": 1.5}, annotation_text=label,
                      annotation_font_size=10, row="all", col="all")
    return fig


def gain_bars(result: dict, height: int = 320) -> go.Figure:
    """Start model vs fine-tuned accuracy per part (app/training/gain.py's gain.json), 95% intervals."""
    sets = list(result["sets"].items())
    names = [short_name(name) for name, _ in sets]
    fig = go.Figure()
    for who, label in (("base", "start model"), ("tuned", "fine-tuned")):
        acc = [c[who]["accuracy"] or 0 for _, c in sets]
        lo = [a - (c[who]["ci95"][0] if c[who]["ci95"][0] is not None else a) for a, (_, c) in zip(acc, sets)]
        hi = [(c[who]["ci95"][1] if c[who]["ci95"][1] is not None else a) - a for a, (_, c) in zip(acc, sets)]
        fig.add_trace(go.Bar(x=names, y=acc, name=label,
                             error_y={"type": "data", "symmetric": False, "array": hi, "arrayminus": lo}))
    fig.update_layout(barmode="group", height=height, title="accuracy on the same items (95% intervals)",
                      yaxis={"range": [0, 1.05], "title": "accuracy"}, margin={"l": 10, "r": 10, "t": 40, "b": 40})
    return fig
