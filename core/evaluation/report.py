"""The evaluation report: pure functions of the finished item records (items.jsonl lines).

Definitions (per item = per (question, sample) record):
* accuracy: mean score (exact match 0/1; ANLS for InfoVQA), with a bootstrap 95% interval over
  questions (each question's samples stay together);
* rapr: share of items with at least one visual operation that ran (RaPR);
* accuracy_with_ops / accuracy_without_ops: accuracy of those two groups;
* no_tool_share: share of items with no tool call at all (not even a failed one);
* clean_tool_call_share: of all tool calls, the share that parsed and executed without an error turn;
* error_turn_rate: error turns (fed back as "Execution error") over all assistant turns;
* tokens_per_item: generated tokens; seconds_per_item: wall time of the batch shared among its items;
* calibration: the reliability table of the answer confidences (core/evaluation/calibration.py), None
  where the backend gave no probabilities; unfamiliar_share: of the items the model's familiarity
  reference checked, the share whose picture is unlike its training pictures.
"""
from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np

from core.evaluation.calibration import reliability, reliability_markdown
from core.trajectory import Trajectory


def item_stats(traj: Trajectory) -> dict:
    """What the report needs from one trajectory, stored beside it in items.jsonl."""
    calls = [s for s in traj.steps if s.tool is not None or s.error is not None]
    return {"status": traj.status, "n_steps": len(traj.steps), "n_ops": traj.n_ops, "n_tool_calls": len(calls),
            "n_error_turns": traj.n_errors, "tokens_in": sum(s.tokens_in for s in traj.steps),
            "tokens_out": sum(s.tokens_out for s in traj.steps),
            "tools_used": sorted({s.tool for s in traj.steps if s.is_operation}),
            "answer_confidence": traj.answer_confidence, "familiar": traj.familiar}


def bootstrap_ci(values, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> list[float | None]:
    """Percentile bootstrap interval of the mean (resampling the values with replacement)."""
    x = np.asarray(values, dtype=float)
    if len(x) == 0 or n_boot <= 0:
        return [None, None]
    if len(x) == 1:
        return [float(x[0]), float(x[0])]
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(n_boot, len(x)))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return [round(float(lo), 4), round(float(hi), 4)]


def _mean(values) -> float | None:
    values = list(values)
    return round(float(np.mean(values)), 4) if values else None


def group_stats(records: list[dict]) -> dict:
    calls = sum(r["n_tool_calls"] for r in records)
    errors_in_calls = sum(min(r["n_error_turns"], r["n_tool_calls"]) for r in records)
    return {
        "n": len({r["id"] for r in records}),
        "accuracy": _mean(r["score"] for r in records),
        "rapr": _mean(r["n_ops"] >= 1 for r in records),
        "no_tool_share": _mean(r["n_tool_calls"] == 0 for r in records),
        "clean_tool_call_share": round((calls - errors_in_calls) / calls, 4) if calls else None,
        "mean_ops": _mean(r["n_ops"] for r in records),
    }


def summarize(records: list[dict], header: dict | None = None, n_boot: int = 2000) -> dict:
    """The report.json object (docs/protocol.md, section 6) for the given finished items."""
    header = dict(header or {})
    per_question = defaultdict(list)
    for r in records:
        per_question[r["id"]].append(r["score"])
    steps = sum(r["n_steps"] for r in records)
    with_ops = [r["score"] for r in records if r["n_ops"] >= 1]
    without_ops = [r["score"] for r in records if r["n_ops"] == 0]
    by_cat = defaultdict(list)
    for r in records:
        by_cat[r.get("category") or "all"].append(r)
    overall = group_stats(records)
    report = {
        **{k: header.pop(k, None) for k in ("bench", "model", "backend", "tools")},
        "n": overall["n"],
        "n_items": len(records),
        "accuracy": overall["accuracy"],
        "accuracy_ci95": bootstrap_ci([np.mean(v) for v in per_question.values()], n_boot=n_boot),
        "rapr": overall["rapr"],
        "accuracy_with_ops": _mean(with_ops),
        "accuracy_without_ops": _mean(without_ops),
        "mean_ops": overall["mean_ops"],
        "no_tool_share": overall["no_tool_share"],
        "clean_tool_call_share": overall["clean_tool_call_share"],
        "error_turn_rate": round(sum(r["n_error_turns"] for r in records) / steps, 4) if steps else None,
        "tokens_per_item": _mean(r["tokens_out"] for r in records),
        "prompt_tokens_per_item": _mean(r["tokens_in"] for r in records),
        "seconds_per_item": _mean(r.get("seconds", 0.0) for r in records),
        "status": dict(sorted(Counter(r["status"] for r in records).items())),
        "by_category": {cat: group_stats(rs) for cat, rs in sorted(by_cat.items())},
        "calibration": reliability(records),
        "unfamiliar_share": _mean(not r["familiar"] for r in records if r.get("familiar") is not None),
        **header,
    }
    return report


def _pct(value) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def to_markdown(report: dict) -> str:
    """The report as a markdown table (percentages), with the paper's figure when there is one."""
    metric = "ANLS" if report.get("metric") == "anls" else "accuracy"
    lo, hi = report["accuracy_ci95"]
    lines = [f"# {report.get('title') or report.get('bench')}: {report.get('model')}", "",
             f"backend `{report.get('backend')}`, tools {'on' if report.get('tools') else 'off'}, "
             f"{report['n']} questions, {report['n_items']} items", "",
             "| metric | value |", "| --- | --- |",
             f"| {metric} | {_pct(report['accuracy'])} (95% CI {_pct(lo)}–{_pct(hi)}) |"]
    if report.get("paper_7b") is not None:
        lines.append(f"| paper (PixelReasoner-RL-v1) | {report['paper_7b']:.1f} |")
    lines += [f"| RaPR (items with ≥1 operation) | {_pct(report['rapr'])} |",
              f"| {metric} with operations | {_pct(report['accuracy_with_ops'])} |",
              f"| {metric} without operations | {_pct(report['accuracy_without_ops'])} |",
              f"| mean operations | {report['mean_ops']} |",
              f"| error-turn rate | {_pct(report['error_turn_rate'])} |",
              f"| generated tokens per item | {report['tokens_per_item']} |",
              f"| seconds per item | {report['seconds_per_item']} |", "",
              f"| category | n | {metric} | RaPR | no tool | clean tool calls | mean ops |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for cat, s in report["by_category"].items():
        lines.append(f"| {cat} | {s['n']} | {_pct(s['accuracy'])} | {_pct(s['rapr'])} | {_pct(s['no_tool_share'])} "
                     f"| {_pct(s['clean_tool_call_share'])} | {s['mean_ops']} |")
    calibration = reliability_markdown(report.get("calibration"), metric)
    if calibration:
        lines += [""] + calibration
    if report.get("unfamiliar_share") is not None:
        lines += ["", f"Pictures unlike the model's training pictures: {_pct(report['unfamiliar_share'])}%"]
    return "\n".join(lines) + "\n"


def oracle_split(own: list[dict], oracle: list[dict]) -> dict[str, dict]:
    """Per category (and "all"), the same items run with the model's own first look and with the oracle's:
    accuracies, and the wrong answers split by what the oracle look did to them. `wrong_place`: wrong with
    its own look, right with the right one; `cannot_read`: wrong with both, the look replaced; `no_look`:
    wrong with both, the model never looked (nothing to replace); `oracle_hurt`: right, then wrong."""
    theirs = {(r["id"], r.get("sample", 0)): r for r in oracle}
    pairs = [(r, theirs[(r["id"], r.get("sample", 0))]) for r in own if (r["id"], r.get("sample", 0)) in theirs]
    groups = defaultdict(list)
    for a, b in pairs:
        groups[a.get("category") or "all"].append((a, b))
        groups["all"].append((a, b))
    out = {}
    for cat, rows in sorted(groups.items(), key=lambda kv: (kv[0] == "all", kv[0])):
        right = [(bool(a["correct"]), bool(b["correct"]), b.get("oracle_step") is not None) for a, b in rows]
        out[cat] = {"n": len(rows), "own": _mean(x for x, _, _ in right), "oracle": _mean(y for _, y, _ in right),
                    "replaced": sum(looked for _, _, looked in right),
                    "wrong_place": sum(not x and y for x, y, _ in right),
                    "cannot_read": sum(not x and not y and looked for x, y, looked in right),
                    "no_look": sum(not x and not y and not looked for x, y, looked in right),
                    "oracle_hurt": sum(x and not y for x, y, _ in right)}
    return out


def oracle_markdown(split: dict[str, dict]) -> str:
    """`oracle_split` as a markdown table (accuracies in percent)."""
    lines = ["| category | n | own first crop | oracle first crop | change | looks replaced | wrong place | "
             "cannot read | wrong, no look | oracle hurt |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for cat, s in split.items():
        change = None if s["own"] is None else s["oracle"] - s["own"]
        lines.append(f"| {'**all**' if cat == 'all' else cat} | {s['n']} | {_pct(s['own'])} | {_pct(s['oracle'])} | "
                     f"{'–' if change is None else f'{100 * change:+.1f}'} | {s['replaced']} | {s['wrong_place']} | "
                     f"{s['cannot_read']} | {s['no_look']} | {s['oracle_hurt']} |")
    return "\n".join(lines) + "\n"
