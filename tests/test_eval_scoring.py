"""Benchmark scoring and report maths on hand-checked cases."""
from __future__ import annotations

import pytest

from core.evaluation.benches import score
from core.evaluation.report import bootstrap_ci, summarize, to_markdown
from core.scoring import Judgement, anls, extract_answer, judge, judge_trajectory, truth_letter

CHOICES = ["red", "blue", "green", "yellow"]


@pytest.mark.parametrize("pred,answers,expected", [
    ("new york", ["new york"], 1.0),
    ("  New   York ", ["new york"], 1.0),  # case and spaces do not count
    ("new yrok", ["new york"], 0.75),  # 2 edits / 8 chars -> 1 - 0.25
    ("new yor", ["new york"], 0.875),  # 1 edit / 8 chars
    ("ny", ["new york"], 0.0),  # NL = 6/8 >= 0.5 -> 0
    ("york", ["new york"], 0.5 - 0.5),  # NL = 4/8 = 0.5 is not below the threshold -> 0
    ("42", ["42%", "42"], 1.0),  # best over the references
    ("42 %", ["42%"], 0.75),  # one insertion in 4 chars
    (None, ["x"], 0.0),
])
def test_anls_hand_checked(pred, answers, expected):
    assert anls(pred, answers) == pytest.approx(expected)
    assert score("infovqa", pred, answers) == pytest.approx(expected)


@pytest.mark.parametrize("text,answer", [
    ("The sign shows a sheep. \\boxed{B}", "B"),
    ("first \\boxed{A} then \\boxed{ (C) green }", "(C) green"),  # the last box
    ("no box <answer>D</answer>", "D"),
    ("Reasoning...\nAnswer: 4", "4"),
    ("nothing to extract", None),
])
def test_extraction_fallbacks(text, answer):
    assert extract_answer(text) == answer


@pytest.mark.parametrize("pred,truth,expected", [
    ("B", "B", 1.0), ("(B)", "B", 1.0), ("B. blue", "B", 1.0), ("b: blue", "B", 1.0),
    ("blue", "B", 1.0),  # the option's text counts as its letter
    ("C", "B", 0.0), ("green", "B", 0.0), (None, "B", 0.0),
    ("A", "(A) red", 1.0),  # truth stored with its text
    ("A", "red", 1.0),  # truth stored as the option text only
    ("Blue", "blue", 1.0),
])
def test_multiple_choice(pred, truth, expected):
    assert score("vstar", pred, truth, CHOICES) == expected
    assert score("mvbench", pred, truth, CHOICES) == expected


def test_truth_letter():
    assert truth_letter("(C) green", CHOICES) == "C"
    assert truth_letter("yellow", CHOICES) == "D"
    assert truth_letter("purple", CHOICES) is None


@pytest.mark.parametrize("pred,truth,expected", [
    ("3", "3", 1.0), ("3.0", "3", 1.0), ("three", "3", 1.0), ("There are 3.", "3", 1.0),
    ("4", "3", 0.0), ("3 or 4", "3", 0.0),  # two numbers: not one answer
    ("1,200", "1200", 1.0), (None, "3", 0.0),
])
def test_tallyqa_numbers(pred, truth, expected):
    assert score("tallyqa", pred, truth) == expected


def test_tinyzoom_text_and_numbers():
    assert score("tinyzoom", "Green.", "green") == 1.0
    assert score("tinyzoom", "07", "7") == 1.0
    assert score("tinyzoom", "red", "green") == 0.0


def test_correct_thresholds():
    assert judge("abcx", "abcd", "anls") == Judgement(0.75, True, "anls") and not judge("zzzz", "abcd", "anls").correct
    assert judge("B", "B", "choice", CHOICES).correct and not judge("A", "B", "choice", CHOICES).correct


def test_judge_names_its_scorer_and_a_trajectory_keeps_it():
    from core.trajectory import Media, Trajectory

    assert judge("Three.", "3") == Judgement(1.0, True, "text")  # numbers as numbers, text normalised
    assert judge(None, "3", "number") == Judgement(0.0, False, "number")
    with pytest.raises(ValueError, match="unknown scorer 'exact'"):
        judge("a", "a", "exact")
    traj = Trajectory("q", Media(kind="image"), answer="Green", ground_truth="green")
    assert judge_trajectory(traj) and (traj.correct, traj.scorer) == (True, "text")
    unknown = Trajectory("q", Media(kind="image"), answer="green")
    assert judge_trajectory(unknown) is None and (unknown.correct, unknown.scorer) == (None, None)


def test_bootstrap_ci_brackets_the_mean_and_is_deterministic():
    values = [1] * 30 + [0] * 20  # mean 0.6
    lo, hi = bootstrap_ci(values, n_boot=4000, seed=1)
    assert lo < 0.6 < hi
    # normal approximation: 0.6 +- 1.96 * sqrt(0.24 / 50) = +- 0.136
    assert hi - lo == pytest.approx(2 * 0.136, abs=0.04)
    assert bootstrap_ci(values, n_boot=4000, seed=1) == [lo, hi]
    assert bootstrap_ci([1.0]) == [1.0, 1.0] and bootstrap_ci([]) == [None, None]


def _rec(id, score, n_ops, calls, errors, steps, cat, sample=0, tokens=10):
    return {"id": id, "sample": sample, "score": score, "n_ops": n_ops, "n_tool_calls": calls, "n_error_turns": errors,
            "n_steps": steps, "category": cat, "tokens_out": tokens, "tokens_in": 100, "seconds": 0.5,
            "status": "done"}


def test_summarize_hand_computed():
    records = [
        _rec("a", 1.0, 1, 1, 0, 2, "zoom_needed"),  # one clean crop, correct
        _rec("b", 0.0, 1, 2, 1, 3, "zoom_needed"),  # a failed call then a clean one, wrong
        _rec("c", 1.0, 0, 0, 0, 1, "counting"),  # no tool, correct
        _rec("d", 0.0, 0, 1, 1, 2, "counting"),  # one failed call only, wrong
    ]
    r = summarize(records, {"bench": "tinyzoom", "model": "m", "backend": "b", "tools": True}, n_boot=200)
    assert r["n"] == 4 and r["accuracy"] == 0.5
    assert r["rapr"] == 0.5  # a and b ran an operation
    assert r["accuracy_with_ops"] == 0.5 and r["accuracy_without_ops"] == 0.5
    assert r["mean_ops"] == 0.5
    assert r["error_turn_rate"] == round(2 / 8, 4)
    assert r["clean_tool_call_share"] == 0.5  # 4 calls, 2 errors
    assert r["no_tool_share"] == 0.25
    z, c = r["by_category"]["zoom_needed"], r["by_category"]["counting"]
    assert (z["n"], z["accuracy"], z["rapr"], z["no_tool_share"], z["clean_tool_call_share"], z["mean_ops"]) == \
        (2, 0.5, 1.0, 0.0, round(2 / 3, 4), 1.0)
    assert (c["accuracy"], c["rapr"], c["no_tool_share"], c["clean_tool_call_share"]) == (0.5, 0.0, 0.5, 0.0)
    for key in ("bench", "model", "backend", "tools", "n", "accuracy", "accuracy_ci95", "rapr", "accuracy_with_ops",
                "accuracy_without_ops", "mean_ops", "error_turn_rate", "tokens_per_item", "seconds_per_item",
                "by_category"):
        assert key in r  # docs/protocol.md, section 6
    md = to_markdown(r)
    assert "| accuracy | 50.0" in md and "| zoom_needed | 2 | 50.0 | 100.0 | 0.0 | 66.7 | 1.0 |" in md


def test_samples_are_bootstrapped_per_question():
    records = [_rec("a", 1.0, 0, 0, 0, 1, "x", sample=0), _rec("a", 0.0, 0, 0, 0, 1, "x", sample=1),
               _rec("b", 1.0, 0, 0, 0, 1, "x", sample=0), _rec("b", 1.0, 0, 0, 0, 1, "x", sample=1)]
    r = summarize(records, n_boot=500)
    assert r["n"] == 2 and r["n_items"] == 4 and r["accuracy"] == 0.75
    lo, hi = r["accuracy_ci95"]
    assert 0.5 <= lo <= hi <= 1.0  # question means are 0.5 and 1.0
