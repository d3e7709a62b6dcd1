"""Answer extraction and scorers on hand-checked cases."""
import pytest

from core.scoring import anls, choice_letter, extract_answer, last_boxed, parse_number, score_choice, score_number, score_text


def test_boxed_extraction_with_nesting_and_fallbacks():
    assert last_boxed("a \\boxed{1} then \\boxed{\\frac{1}{2}}") == "\\frac{1}{2}"
    assert extract_answer("I think <answer> Sheep </answer>") == "Sheep"
    assert extract_answer("Reasoning...\nAnswer: B. Sheep") == "B. Sheep"
    assert extract_answer("no answer here") is None
    assert extract_answer("\\boxed{unclosed") is None


@pytest.mark.parametrize("answer,letter", [("B", "B"), ("(C)", "C"), ("d. Elephant", "D"), ("A: Lion", "A"),
                                           ("Sheep", None), ("", None)])
def test_choice_letter(answer, letter):
    assert choice_letter(answer) == letter


def test_score_choice():
    choices = ["Lion", "Sheep", "Tiger", "Elephant"]
    assert score_choice("B", "B", choices)
    assert score_choice("(B) Sheep", "B", choices)
    assert score_choice("sheep", "B", choices)  # the option text itself
    assert not score_choice("A", "B", choices)
    assert not score_choice(None, "B", choices)


def test_numbers():
    assert parse_number("three") == 3 and parse_number("1,200") == 1200 and parse_number("\\frac{1}{2}") == 0.5
    assert parse_number("3 or 4") is None
    assert score_number("3", "3") and score_number("3.0", 3) and score_number("There are 3", "3")
    assert not score_number("4", "3") and not score_number(None, "3")


def test_score_text():
    assert score_text("\\text{Red}", "red") and score_text("Red.", "red")
    assert score_text("7", "seven") and not score_text("blue", "red")


def test_anls_hand_checked():
    assert anls("hello", ["helo"]) == pytest.approx(0.8)  # 1 edit / 5 chars -> 1 - 0.2
    assert anls("Hello ", "hello") == 1.0  # case and outer spaces are ignored
    assert anls("abcd", ["abxy"]) == 0.0  # NL = 2/4 = 0.5 reaches the threshold -> 0
    assert anls("abcde", ["abxde"]) == pytest.approx(0.8)
    assert anls("abc", ["xyz", "abd"]) == pytest.approx(1 - 1 / 3)  # best over the answers
    assert anls(None, ["x"]) == 0.0
