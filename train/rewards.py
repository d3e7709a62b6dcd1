"""Curiosity-driven reward shaping (Pixel Reasoner; docs/protocol.md, section 4), as pure functions.

The paper writes r' = r + α·r_curiosity + β·r_penalty with
    r_curiosity = max(H − RaPR(x), 0) · 1[PR(y)]      r_penalty = min(N − n_vo(y), 0)
where RaPR(x) is the share of the group's rollouts for query x that use at least one visual
operation. The released implementation computes, per group of rollouts of one query:

* correctness r ∈ {0, 1}; a correct answer after an uncorrected failed operation scores 0;
* for a rollout with ≥ 1 operation: curiosity = max(H − rapr, 0) / 2.0 (images; / 1.5 for videos),
  then divided by rapr and multiplied by 0.25; penalty = −0.05 · (n_ops − 1);
* reward = r + curiosity + penalty; rollouts without operations get r only.

Here α = 0.25 (the multiplier), β = 0.05, H = 0.3, N = 1, image_div = 2.0, video_div = 1.5 are the
released defaults, all overridable. `n_ops` counts the operations a rollout *attempted* (tool calls,
including those that failed and came back as error turns; train.rl.n_calls): the release counts
calls, and its rule "correct but ended on a failed operation scores 0" only makes sense if a failed
call is an operation. So a policy whose first crops are clumsy still earns the curiosity bonus for
trying, which is the point of the bonus (uncertain detail of the release; decided for that reason).

Rollouts come as flat lists, `group_size` consecutive entries per query (TRL's order).
"""
from __future__ import annotations

from dataclasses import dataclass

DEFAULTS = {"alpha": 0.25, "beta": 0.05, "H": 0.3, "N": 1, "image_div": 2.0, "video_div": 1.5}


@dataclass
class ShapedRewards:
    rewards: list[float]  # r + curiosity + penalty, per rollout
    correctness: list[float]  # r, after zeroing for a final failed operation
    curiosity: list[float]
    penalty: list[float]
    rapr: list[float]  # the rollout's group RaPR (same value within a group)


def _groups(n: int, group_size: int) -> list[range]:
    if group_size < 1 or n % group_size:
        raise ValueError(f"{n} rollouts do not split into groups of {group_size}")
    return [range(i, i + group_size) for i in range(0, n, group_size)]


def shaped_rewards(correct, n_ops, is_video, final_op_failed, group_size: int, *, alpha: float = 0.25,
                   beta: float = 0.05, H: float = 0.3, N: int = 1, image_div: float = 2.0,
                   video_div: float = 1.5, curiosity: bool = True) -> ShapedRewards:
    """Per-rollout shaped rewards and their terms. `curiosity=False` is the ablation (α = 0)."""
    n = len(correct)
    if not (len(n_ops) == len(is_video) == len(final_op_failed) == n):
        raise ValueError("correct, n_ops, is_video and final_op_failed must have the same length")
    out = ShapedRewards([0.0] * n, [0.0] * n, [0.0] * n, [0.0] * n, [0.0] * n)
    for group in _groups(n, group_size):
        rapr = sum(1 for i in group if n_ops[i] >= 1) / group_size
        for i in group:
            r = 1.0 if correct[i] and not final_op_failed[i] else 0.0
            cur = pen = 0.0
            if n_ops[i] >= 1:  # rapr > 0 here, so the division is safe
                if curiosity:
                    cur = alpha * max(H - rapr, 0.0) / (video_div if is_video[i] else image_div) / rapr
                pen = beta * min(N - n_ops[i], 0)
            out.correctness[i], out.curiosity[i], out.penalty[i], out.rapr[i] = r, cur, pen, rapr
            out.rewards[i] = r + cur + pen
    return out


def group_advantages(rewards: list[float], group_size: int, scale: bool = True, eps: float = 1e-4) -> list[float]:
    """GRPO advantages as TRL computes them: reward minus the group mean, divided by the group's
    sample standard deviation (n − 1) + eps."""
    adv = [0.0] * len(rewards)
    for group in _groups(len(rewards), group_size):
        vals = [rewards[i] for i in group]
        mean = sum(vals) / len(vals)
        std = (sum((v - mean) ** 2 for v in vals) / max(len(vals) - 1, 1)) ** 0.5
        for i in group:
            adv[i] = (rewards[i] - mean) / (std + eps) if scale else rewards[i] - mean
    return adv


def informative_groups(rewards: list[float], group_size: int, tol: float = 1e-9) -> list[bool]:
    """Per rollout: False when every reward of its group is equal (zero advantage: the release drops
    such groups from the batch), True otherwise."""
    keep = [True] * len(rewards)
    for group in _groups(len(rewards), group_size):
        vals = [rewards[i] for i in group]
        if max(vals) - min(vals) <= tol:
            for i in group:
                keep[i] = False
    return keep
