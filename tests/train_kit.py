"""What the training tests read back from a run folder."""
from __future__ import annotations

import json
from pathlib import Path


def complete_checkpoints(run: Path) -> list[int]:
    """Steps of the run's checkpoints that finished saving (trainer_state.json is written last)."""
    return sorted(int(p.name.split("-")[1]) for p in run.glob("checkpoint-*") if (p / "trainer_state.json").exists())


def step_rows(run: Path) -> list[dict]:
    """metrics.jsonl's per-step rows (not the end-of-run summary row)."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "loss" in r and "train_runtime" not in r]
