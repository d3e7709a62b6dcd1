"""How sure the model was: per-token probabilities of a generated turn turned into the numbers the
Studio shows (pure functions of plain lists; the backends supply the tokens and log-probabilities).

- `step_uncertainty`: a turn's mean log-probability per token and its least sure tokens (p < 0.5),
  each with its character offset in the turn's text, so a viewer can highlight them.
- `answer_confidence`: the probability the model gave its final answer: over each place the turn
  writes it, the product of the probabilities of the tokens that spell it; the least of these (a
  copy of an answer already written is near-certain, the writing where it decided is not).

The probabilities are those of the distribution each token was drawn from (temperature applied;
greedy decoding reads the model's own distribution).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

UNSURE_P = 0.5  # a token the model gave less than this probability counts as unsure
MAX_UNSURE = 100  # unsure tokens kept per turn (the least sure)


@dataclass
class UnsureToken:
    """One generated token the model was unsure of."""

    at: int  # character offset of the token in the turn's text
    text: str  # the token as decoded
    p: float  # the probability the model gave it

    def to_dict(self) -> dict:
        return asdict(self)


def token_starts(pieces: list[str], text: str) -> list[int | None]:
    """Each piece's character offset in `text` (pieces decoded one by one, in order); None for a
    piece not found where it should be (a stop string cut away, a byte split across tokens)."""
    starts: list[int | None] = []
    at = 0
    for piece in pieces:
        if not piece:
            starts.append(at)
            continue
        if text.startswith(piece, at):
            starts.append(at)
            at += len(piece)
            continue
        found = text.find(piece, at)
        if found == -1 or found - at > 4:  # a few replacement characters may sit between
            starts.append(None)
            continue
        starts.append(found)
        at = found + len(piece)
    return starts


def step_uncertainty(pieces: list[str], logprobs: list[float], text: str, unsure_p: float = UNSURE_P,
                     limit: int = MAX_UNSURE) -> tuple[float | None, list[UnsureToken]]:
    """(mean log-probability per token, the tokens under `unsure_p`, at most `limit` of the least
    sure, in text order) of one turn whose text is `text`. Tokens past the text (a stop string the
    turn dropped) do not count; nor do whitespace tokens among the unsure."""
    n = min(len(pieces), len(logprobs))
    if n == 0:
        return None, []
    starts = token_starts(pieces[:n], text)
    kept = [i for i in range(n) if starts[i] is not None and starts[i] < len(text)]
    if not kept:
        return None, []
    mean = sum(logprobs[i] for i in kept) / len(kept)
    low = [i for i in kept if pieces[i].strip() and math.exp(logprobs[i]) < unsure_p]
    low = sorted(sorted(low, key=lambda i: logprobs[i])[:limit])
    return mean, [UnsureToken(at=starts[i], text=pieces[i], p=round(math.exp(logprobs[i]), 4)) for i in low]


def answer_spans(text: str, answer: str | None) -> list[tuple[int, int]]:
    """[start, end) of each place the final answer is written in the turn's text, as a whole word
    (a "3" inside "13" or "x3" does not count)."""
    if not answer:
        return []
    spans, at = [], text.find(answer)
    while at != -1:
        end = at + len(answer)
        if not (at > 0 and text[at - 1].isalnum() and answer[0].isalnum()) and \
                not (end < len(text) and text[end].isalnum() and answer[-1].isalnum()):
            spans.append((at, end))
        at = text.find(answer, at + 1)
    return spans


def answer_confidence(pieces: list[str], logprobs: list[float], text: str, answer: str | None) -> float | None:
    """The probability the model gave its answer: for each place the turn writes `answer`, the product
    of the probabilities of the tokens spelling it; the least of these. A turn that states the answer
    ("The tag reads 7.") and then boxes it (`\\boxed{7}`) copies it the second time with near
    certainty: the first writing is where the model decided. None when the answer or the
    probabilities are missing."""
    spans = answer_spans(text, answer)
    n = min(len(pieces), len(logprobs))
    if not spans or n == 0:
        return None
    starts = token_starts(pieces[:n], text)
    found = []
    for lo, hi in spans:
        inside = [logprobs[i] for i in range(n) if starts[i] is not None and pieces[i]
                  and starts[i] < hi and starts[i] + len(pieces[i]) > lo]
        if inside:
            found.append(sum(inside))
    return round(math.exp(min(found)), 4) if found else None
