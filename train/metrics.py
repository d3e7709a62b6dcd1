"""metrics.jsonl: one JSON object per logging step, the format (docs/protocol.md) the app plots and the RL trainer reuses.

    {"step": int, "time": float (unix seconds), "loss": ..., "learning_rate": ..., ...}

Only numeric values are written; the file is appended and flushed each time so a reader (the app)
sees a live curve, and a restarted run continues the same file.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

from transformers import TrainerCallback

RENAMES = {"train_loss": "loss", "lr": "learning_rate"}


def metrics_row(step: int, logs: dict, now: float | None = None) -> dict:
    """The contract's row for a Trainer `logs` dict: numbers only, finite, renamed to contract names."""
    row: dict = {"step": int(step), "time": round(now if now is not None else time.time(), 3)}
    for key, value in logs.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if isinstance(value, float) and not math.isfinite(value):
            value = None  # JSON has no NaN; keep the key so a diverging run is visible
        row[RENAMES.get(key, key)] = value
    return row


class MetricsJsonlCallback(TrainerCallback):
    """Append every `on_log` to <path> (default <output_dir>/metrics.jsonl) on the main process."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path else None

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        path = self.path or Path(args.output_dir) / "metrics.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(metrics_row(state.global_step, logs)) + "\n")
