"""The two warm-start mixes, written beside the TinyZoom train split.

train_trap.jsonl: textual answers dominate, as in the paper's SFT data, so that the warm start falls
into the learning trap: every textual trace and every self-correction trace kept; of the pixel and
video traces only `pixel_share` kept as they are, the others turned into direct answers (system,
question, the trace's final answer turn): answers given without looking closer.
train_trap_nocorr.jsonl: the same mix, record for record, minus the self-correction traces.
"""
from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

TEXTUAL = ("textual", "textual_notool")
CORRECTION = "correction"


def as_direct_answer(rec: dict) -> dict:
    """A tool-using record as the direct answer a textual warm start would give (its last turn only)."""
    final = [m for m in rec["messages"] if m["role"] == "assistant"][-1]
    meta = {**rec["meta"], "trace": "textual_from_" + rec["meta"].get("trace", "")}
    return {**rec, "messages": rec["messages"][:2] + [final], "train_turns": [True], "meta": meta}


def trap_records(records: list[dict], pixel_share: float, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for rec in records:
        trace = rec["meta"].get("trace", "")
        keep = trace in TEXTUAL or trace == CORRECTION or rng.random() < pixel_share
        out.append(rec if keep else as_direct_answer(rec))
    return out


def write_mixes(data: Path, pixel_share: float, seed: int = 0) -> dict[str, dict[str, int]]:
    """Write both mixes; returns trace kind -> count per mix (also in <data>/mixes/counts.json)."""
    records = [json.loads(x) for x in (data / "train.jsonl").read_text(encoding="utf-8").splitlines() if x.strip()]
    trap = trap_records(records, pixel_share, seed)
    mixes = {"train_trap": trap, "train_trap_nocorr": [r for r in trap if r["meta"].get("trace") != CORRECTION]}
    counts = {}
    for name, recs in mixes.items():
        (data / f"{name}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs),
                                            encoding="utf-8")
        counts[name] = dict(sorted(Counter(r["meta"].get("trace", "") for r in recs).items()))
    (data / "mixes").mkdir(exist_ok=True)
    (data / "mixes" / "counts.json").write_text(json.dumps(counts, indent=2))
    return counts
