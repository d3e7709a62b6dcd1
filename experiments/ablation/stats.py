"""The table's numbers: per-item values of each evaluation, row means with 95% intervals from a
bootstrap over seeds and items, and paired differences between rows (the same items resampled for
both). Pure functions over item records (core.evaluation's items.jsonl rows)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

METRICS = {
    "acc": lambda r: float(r["score"]),
    "rapr": lambda r: float(r["n_ops"] >= 1),
    "ops": lambda r: float(r["n_ops"]),
}


def read_items(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def per_item(records: list[dict], metric: str, category: str) -> dict[str, float]:
    """Item id -> the metric averaged over its samples, for the items of one category."""
    f, sums, counts = METRICS[metric], {}, {}
    for r in records:
        if r.get("category") == category:
            sums[r["id"]] = sums.get(r["id"], 0.0) + f(r)
            counts[r["id"]] = counts.get(r["id"], 0) + 1
    return {k: sums[k] / counts[k] for k in sums}


def matrix(runs: list[dict[str, float]], ids: list[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """Seeds x items (the items every run has, in a fixed order)."""
    if ids is None:
        ids = sorted(set.intersection(*[set(r) for r in runs])) if runs else []
    return np.array([[r[i] for i in ids] for r in runs], dtype=float).reshape(len(runs), len(ids)), ids


def _draws(n: int, size: int, rng: np.random.Generator, n_boot: int) -> np.ndarray:
    return rng.integers(0, n, size=(n_boot, size))


def mean_ci(m: np.ndarray, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """Mean over seeds and items, with a percentile bootstrap interval resampling seeds, then items."""
    if m.size == 0:
        return {"mean": None, "lo": None, "hi": None, "seeds": m.shape[0], "items": m.shape[1]}
    rng = np.random.default_rng(seed)
    s, i = _draws(m.shape[0], m.shape[0], rng, n_boot), _draws(m.shape[1], m.shape[1], rng, n_boot)
    boots = np.array([m[s[b]][:, i[b]].mean() for b in range(n_boot)])
    lo, hi = np.quantile(boots, [(1 - level) / 2, 1 - (1 - level) / 2])
    return {"mean": float(m.mean()), "lo": float(lo), "hi": float(hi), "seeds": m.shape[0], "items": m.shape[1]}


def paired_diff(a: np.ndarray, b: np.ndarray, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """mean(a) - mean(b), paired by item: each draw resamples the items once for both rows and each
    row's seeds on their own (seed k of one row shares nothing with seed k of another but a number)."""
    if a.shape[1] != b.shape[1] or a.size == 0 or b.size == 0:
        raise ValueError(f"paired rows need the same items: {a.shape} vs {b.shape}")
    rng = np.random.default_rng(seed)
    sa, sb = _draws(a.shape[0], a.shape[0], rng, n_boot), _draws(b.shape[0], b.shape[0], rng, n_boot)
    it = _draws(a.shape[1], a.shape[1], rng, n_boot)
    boots = np.array([a[sa[k]][:, it[k]].mean() - b[sb[k]][:, it[k]].mean() for k in range(n_boot)])
    lo, hi = np.quantile(boots, [(1 - level) / 2, 1 - (1 - level) / 2])
    return {"diff": float(a.mean() - b.mean()), "lo": float(lo), "hi": float(hi), "items": a.shape[1],
            "seeds": (a.shape[0], b.shape[0])}
