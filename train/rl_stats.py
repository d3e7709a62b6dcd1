"""What an RL step measures, as pure functions of trajectories: correctness, operations attempted,
the per-step metrics written to metrics.jsonl (reward, accuracy, RaPR, curiosity, penalty, ...) and the
periodic TinyZoom evaluation's summary."""
from __future__ import annotations

from core.loop import Task
from core.scoring import judge_trajectory
from train.rollout import Rollout

def is_correct(traj) -> bool:
    """Judged by core.scoring's rule; also stores the verdict and the scorer's name on the trajectory."""
    return bool(judge_trajectory(traj) and traj.correct)


def n_calls(traj) -> int:
    """Operations attempted: steps that called a tool, whether it ran or came back as an error."""
    return sum(1 for s in traj.steps if s.tool is not None or s.error is not None)


def rollout_stats(rollouts: list[Rollout], tasks: list[Task]) -> dict[str, list]:
    trajs = [r.trajectory for r in rollouts]
    return {"correct": [is_correct(t) for t in trajs], "n_ops": [n_calls(t) for t in trajs],
            "n_ok_ops": [t.n_ops for t in trajs],
            "is_video": [task.video is not None for task in tasks],
            "final_op_failed": [t.final_op_failed for t in trajs],
            "n_steps": [len(t.steps) for t in trajs], "n_errors": [t.n_errors for t in trajs],
            "length": [sum(r.ledger.completion_mask) for r in rollouts]}


def step_metrics(stats: dict[str, list], shaped, keep: list[bool]) -> dict[str, float]:
    """The RL metrics for one generation batch (all processes' rollouts)."""
    n = len(stats["correct"])
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    used = [k >= 1 for k in stats["n_ops"]]
    out = {"reward": mean(shaped.rewards), "accuracy": mean([float(c) for c in stats["correct"]]),
           "rapr": mean([float(u) for u in used]), "curiosity": mean(shaped.curiosity), "penalty": mean(shaped.penalty),
           "ops_per_traj": mean(stats["n_ops"]),
           "executed_ops_per_traj": mean(stats["n_ok_ops"]), "turns_per_traj": mean(stats["n_steps"]),
           "error_rate": sum(stats["n_errors"]) / max(1, sum(stats["n_steps"])),
           "response_length": mean(stats["length"]), "frac_filtered": 1 - mean([float(k) for k in keep])}
    for kind, flag in (("image", False), ("video", True)):
        sel = [u for u, v in zip(used, stats["is_video"]) if v == flag]
        if sel:
            out[f"rapr_{kind}"] = mean([float(u) for u in sel])
    out["reward_std"] = (sum((r - out["reward"]) ** 2 for r in shaped.rewards) / max(1, n - 1)) ** 0.5
    return out


def tinyzoom_summary(trajs, tasks: list[Task]) -> dict[str, float]:
    """eval_<category>_acc per category, eval_accuracy and eval_rapr over all items."""
    out: dict[str, float] = {}
    cats = sorted({t.meta.get("category", "all") for t in tasks})
    for cat in cats:
        sel = [tr for tr, t in zip(trajs, tasks) if t.meta.get("category", "all") == cat]
        out[f"eval_{cat}_acc"] = sum(is_correct(tr) for tr in sel) / len(sel)
        out[f"eval_{cat}_rapr"] = sum(n_calls(tr) >= 1 for tr in sel) / len(sel)
    out["eval_accuracy"] = sum(is_correct(tr) for tr in trajs) / max(1, len(trajs))
    out["eval_rapr"] = sum(n_calls(tr) >= 1 for tr in trajs) / max(1, len(trajs))
    out["eval_executed_rapr"] = sum(tr.n_ops >= 1 for tr in trajs) / max(1, len(trajs))
    steps = [s for tr in trajs for s in tr.steps if s.tool is not None or s.error is not None]
    out["eval_error_rate"] = sum(1 for s in steps if s.error) / max(1, len(steps))
    return out
