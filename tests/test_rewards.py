"""The shaped reward on hand-worked groups (docs/protocol.md section 4: the released computation)."""
from __future__ import annotations

import pytest

from train.rewards import group_advantages, informative_groups, shaped_rewards


def test_image_group_with_low_rapr_gets_curiosity():
    # 4 rollouts, one uses 2 crops (rapr = 1/4). Curiosity = 0.25 * (0.3 - 0.25) / 2.0 / 0.25 = 0.025;
    # penalty = -0.05 * (2 - 1) = -0.05; it is correct: 1 + 0.025 - 0.05 = 0.975.
    out = shaped_rewards([True, True, False, False], [2, 0, 0, 0], [False] * 4, [False] * 4, group_size=4)
    assert out.rapr == [0.25] * 4
    assert out.curiosity == pytest.approx([0.025, 0, 0, 0])
    assert out.penalty == pytest.approx([-0.05, 0, 0, 0])
    assert out.rewards == pytest.approx([0.975, 1.0, 0.0, 0.0])


def test_video_divisor_and_failed_final_operation():
    # rapr = 1/5 on a video: curiosity = 0.25 * 0.1 / 1.5 / 0.2 = 0.083333...; the correct rollout whose
    # last operation failed scores 0 for correctness but keeps its curiosity (it used one op).
    out = shaped_rewards([True, False, True, True, False], [1, 0, 0, 0, 0], [True] * 5,
                         [True, False, False, False, False], group_size=5)
    assert out.correctness == [0.0, 0.0, 1.0, 1.0, 0.0]
    assert out.curiosity[0] == pytest.approx(0.25 * 0.1 / 1.5 / 0.2)
    assert out.rewards == pytest.approx([0.25 * 0.1 / 1.5 / 0.2, 0, 1, 1, 0])


def test_no_curiosity_at_or_above_threshold_and_ablation():
    # rapr = 2/4 = 0.5 >= 0.3: no bonus; three ops cost -0.1.
    out = shaped_rewards([True, True, True, False], [1, 3, 0, 0], [False] * 4, [False] * 4, group_size=4)
    assert out.curiosity == [0.0] * 4
    assert out.rewards == pytest.approx([1.0, 0.9, 1.0, 0.0])
    # the ablation: same group as the first test, curiosity off -> penalty only
    off = shaped_rewards([True, True, False, False], [2, 0, 0, 0], [False] * 4, [False] * 4, 4, curiosity=False)
    assert off.curiosity == [0.0] * 4 and off.rewards == pytest.approx([0.95, 1.0, 0.0, 0.0])


def test_groups_are_independent_and_coefficients_configurable():
    # two groups of 2; group 1 rapr = 0.5, group 2 rapr = 0 (no ops -> no bonus anywhere)
    out = shaped_rewards([True, False, True, True], [1, 0, 0, 0], [False] * 4, [False] * 4, group_size=2,
                         H=0.8, alpha=1.0, image_div=1.0)
    assert out.rapr == [0.5, 0.5, 0.0, 0.0]
    assert out.curiosity == pytest.approx([(0.8 - 0.5) / 0.5, 0, 0, 0])
    with pytest.raises(ValueError):
        shaped_rewards([True] * 3, [0] * 3, [False] * 3, [False] * 3, group_size=2)


def test_zero_advantage_groups_and_advantages():
    rewards = [1.0, 1.0, 0.0, 1.0, 0.5, 0.5]
    assert informative_groups(rewards, 2) == [False, False, True, True, False, False]
    adv = group_advantages(rewards, 2)
    assert adv[:2] == [0.0, 0.0] and adv[4:] == [0.0, 0.0]
    # group (0, 1): mean 0.5, sample std 0.7071 -> -0.5/0.7072, +0.5/0.7072
    assert adv[2] == pytest.approx(-0.5 / (0.5 ** 0.5 + 1e-4)) and adv[3] == pytest.approx(-adv[2])
