"""How sure the model was, as the Ask and Inspect tabs show it: the answer's confidence, the note for a
picture unlike the model's training pictures, and a step's text with its least sure tokens marked
(pure functions of the Trajectory and its steps; core/confidence.py computes the numbers)."""
from __future__ import annotations

UNFAMILIAR_NOTE = "⚠️ unfamiliar picture: it is unlike what the model learned, so its answer is a guess"
UNSURE_ANSWER = 0.5  # an answer the model gave less probability than this is an unsure answer


def plural(n: int, word: str) -> str:
    """'1 operation', '2 operations'."""
    return f"{n} {word}{'' if n == 1 else 's'}"


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
