"""How sure the model was, as the Ask and Inspect tabs show it: the answer's confidence, the note for a
picture unlike the model's training pictures, and a step's text with its least sure tokens marked
(pure functions of the Trajectory and its steps; core/confidence.py computes the numbers)."""
from __future__ import annotations

import re

UNFAMILIAR_NOTE = "⚠️ unfamiliar picture: it is unlike what the model learned, so its answer is a guess"
UNSURE_ANSWER = 0.5  # an answer the model gave less probability than this is an unsure answer


def plural(n: int, word: str) -> str:
    """'1 operation', '2 operations'."""
    return f"{n} {word}{'' if n == 1 else 's'}"


STATED = re.compile(r"\b(?:reads|says|shows|there (?:are|is)|answer is|count is)\s+[\"'“]?([A-Za-z0-9.,-]+?)[\"'”]?"
                    r"(?=[\s.,;:!?]|$)", re.IGNORECASE)


def stated_elsewhere(text: str, answer: str | None) -> str | None:
    """The value the reasoning states ("The tag reads 6.") where it differs from the boxed answer (7);
    None where they agree or the text states none."""
    if not answer or "\\boxed" not in text:
        return None
    said = STATED.findall(text[:text.rfind("\\boxed")])
    if not said:
        return None
    value = said[-1].strip(".,")
    return None if value.lower() == answer.strip().lower() else value


def honesty_line(traj) -> str:
    """Everything said beside a Trajectory's answer on how far to trust it ('' where nothing is known)."""
    line = confidence_line(traj.answer_confidence, traj.familiar)
    said = stated_elsewhere(traj.steps[-1].text, traj.answer) if traj.steps else None
    if said is not None:
        line += (" · " if line else "") + f"⚠️ the reasoning says {said!r} but the answer is {traj.answer!r}"
    return line


def confidence_line(confidence: float | None, familiar: bool | None) -> str:
    """'confidence 42% (unsure)' and the unfamiliar-picture note, as far as they are known ('' else)."""
    parts = []
    if confidence is not None:
        parts.append(f"confidence **{100 * confidence:.0f}%**" + (" (unsure)" if confidence < UNSURE_ANSWER else ""))
    if familiar is False:
        parts.append(UNFAMILIAR_NOTE)
    return " · ".join(parts)


def unsure_segments(text: str, unsure: list[dict] | None) -> list[tuple[str, str | None]]:
    """The step's text cut into (piece, label) pairs for gr.HighlightedText: each least sure token
    labelled with its probability ("p 0.14"), the rest unlabelled."""
    out: list[tuple[str, str | None]] = []
    at = 0
    for u in sorted(unsure or [], key=lambda u: u["at"]):
        start, end = u["at"], u["at"] + len(u["text"])
        if start < at or text[start:end] != u["text"]:
            continue  # a token that does not sit where it says (an edited text): left unmarked
        if start > at:
            out.append((text[at:start], None))
        out.append((u["text"], f"p {u['p']:.2f}"))
        at = end
    if at < len(text):
        out.append((text[at:], None))
    return out
