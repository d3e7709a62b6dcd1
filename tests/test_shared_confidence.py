"""What the Ask and Inspect tabs say beside an answer: confidence, unfamiliar picture, a reasoning that
states another value than the boxed answer, and a step's text cut for highlighting."""
from __future__ import annotations

from app.shared.confidence import confidence_line, honesty_line, plural, stated_elsewhere, unsure_segments
from core.trajectory import Media, Step, Trajectory


def test_a_reasoning_that_reads_another_value_than_the_boxed_answer_is_flagged():
    assert stated_elsewhere("The tag reads 6.\n\n\\boxed{7}", "7") == "6"
    assert stated_elsewhere("There are 3 shapes. \\boxed{4}", "4") == "3"
    assert stated_elsewhere("The tag reads 7.\n\n\\boxed{7}", "7") is None
    assert stated_elsewhere('The sign reads "HELLO". \\boxed{HELLO}', "HELLO") is None
    assert stated_elsewhere("The large circle is green. \\boxed{green}", "green") is None
    traj = Trajectory(question="q", media=Media(kind="image"), answer="7", answer_confidence=0.3, familiar=False,
                      steps=[Step(index=0, text="The tag reads 6.\n\n\\boxed{7}")])
    line = honesty_line(traj)
    assert "confidence **30%** (unsure)" in line and "unfamiliar picture" in line
    assert "the reasoning says '6' but the answer is '7'" in line


def test_nothing_known_says_nothing():
    assert confidence_line(None, None) == "" and confidence_line(0.9, True) == "confidence **90%**"
    assert plural(1, "operation") == "1 operation" and plural(0, "error") == "0 errors"


def test_unsure_tokens_cut_the_text_where_they_sit():
    text = "box [0.44, 0.66]"
    unsure = [{"at": 7, "text": "4", "p": 0.13}, {"at": 13, "text": "6", "p": 0.2}, {"at": 2, "text": "zz", "p": 0.1}]
    segments = unsure_segments(text, unsure)
    assert "".join(t for t, _ in segments) == text
    assert [(t, label) for t, label in segments if label] == [("4", "p 0.13"), ("6", "p 0.20")]
