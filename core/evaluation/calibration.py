"""Calibration: does the model's answer confidence (core/confidence.py) match how often it is right?
Pure functions of finished item records (items.jsonl lines carrying `answer_confidence`).

A reliability table bins the items by confidence and gives each bin's mean confidence and accuracy;
a calibrated model's two columns agree. The expected calibration error (ECE) is their gap averaged
over the items.
"""
from __future__ import annotations

import numpy as np

BIN_EDGES = (0.0, 0.2, 0.4, 0.6, 0.8, 0.9, 1.0)  # the top bins narrower: most answers are sure


def reliability(records: list[dict], edges: tuple[float, ...] = BIN_EDGES) -> dict | None:
    """{"bins": [{lo, hi, n, confidence, accuracy}], "ece", "n", "coverage"} over the records with a
    confidence (`coverage`: their share of all records); None when none has one."""
    rated = [(float(r["answer_confidence"]), float(r["score"])) for r in records
             if r.get("answer_confidence") is not None]
    if not rated:
        return None
    conf = np.array([c for c, _ in rated])
    score = np.array([s for _, s in rated])
    index = np.clip(np.searchsorted(edges, conf, side="right") - 1, 0, len(edges) - 2)
    bins, gap = [], 0.0
    for b in range(len(edges) - 1):
        inside = index == b
        n = int(inside.sum())
        row = {"lo": edges[b], "hi": edges[b + 1], "n": n, "confidence": None, "accuracy": None}
        if n:
            row["confidence"] = round(float(conf[inside].mean()), 4)
            row["accuracy"] = round(float(score[inside].mean()), 4)
            gap += n * abs(row["confidence"] - row["accuracy"])
        bins.append(row)
    return {"bins": bins, "ece": round(gap / len(rated), 4), "n": len(rated),
            "coverage": round(len(rated) / len(records), 4)}


def reliability_markdown(table: dict | None, metric: str = "accuracy") -> list[str]:
    """The reliability table as markdown lines (none without a table)."""
    if not table:
        return []
    pct = lambda v: "–" if v is None else f"{100 * v:.1f}"  # noqa: E731
    lines = [f"Calibration ({table['n']} items with an answer confidence, expected calibration error "
             f"{pct(table['ece'])} points):", "", f"| confidence | n | mean confidence | {metric} |",
             "| --- | --- | --- | --- |"]
    for b in table["bins"]:
        lines.append(f"| {b['lo']:.1f}–{b['hi']:.1f} | {b['n']} | {pct(b['confidence'])} | {pct(b['accuracy'])} |")
    return lines
