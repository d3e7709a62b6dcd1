"""Answer extraction and scoring: \\boxed{} with fallbacks, multiple choice, numbers, ANLS, and `judge`,
the one rule that decides whether an answer is right (app, import, RL and evaluation all call it)."""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _codepoints(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


def brace_pairs(chars: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(opening, closing) indices of every "{" that closes (sorted by the opening), as a stack would
    pair them, vectorised.

    A brace's level is the depth inside it; the "}" closing an "{" is the next brace at the same
    level after it, so sorting the braces by (level, position) pairs them in O(n log n) numpy work."""
    pos = np.flatnonzero((chars == ord("{")) | (chars == ord("}")))
    if pos.size == 0:
        return pos, pos
    is_open = chars[pos] == ord("{")
    depth = np.cumsum(np.where(is_open, 1, -1))
    level = np.where(is_open, depth, depth + 1)
    order = np.lexsort((pos, level))
    lv, op, ps = level[order], is_open[order], pos[order]
    hit = (lv[:-1] == lv[1:]) & op[:-1] & ~op[1:]
    first, close = ps[:-1][hit], ps[1:][hit]
    order = np.argsort(first)
    return first[order], close[order]


def boxed_braces(chars: np.ndarray) -> np.ndarray:
    """Index of the "{" of every `\\boxed{` (spaces allowed before the brace), in order."""
    word = np.array([ord(c) for c in "\\boxed"], dtype=np.uint32)
    n = chars.size - word.size
    if n <= 0:
        return np.empty(0, dtype=np.int64)
    hit = np.ones(n, dtype=bool)
    for k, c in enumerate(word):
        hit &= chars[k : k + n] == c
    starts = np.flatnonzero(hit) + word.size
    if starts.size == 0:
        return starts
    # the next index at or after each position that is not a space
    idx = np.where(chars != ord(" "), np.arange(chars.size), chars.size)
    next_non_space = np.minimum.accumulate(idx[::-1])[::-1]
    brace = next_non_space[starts]
    ok = brace < chars.size
    brace = brace[ok]
    return brace[chars[brace] == ord("{")]


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...}, braces balanced (so \\boxed{\\frac{1}{2}} works).

    Vectorised and near-linear: every brace is paired once (rescanning from each \\boxed{ was
    quadratic: 56 KB of them took 85 s)."""
    if "\\boxed" not in text:
        return None
    chars = _codepoints(text)
    opens = boxed_braces(chars)
    if opens.size == 0:
        return None
    first, close = brace_pairs(chars)
    found = np.isin(opens, first)
    if not found.any():
        return None
    i = int(opens[np.flatnonzero(found)[-1]])
    return text[i + 1 : int(close[np.searchsorted(first, i)])].strip()


def _last_tagged(text: str, start: str = "<answer>", end: str = "</answer>") -> str | None:
    """What the last <answer>...</answer> holds (as re.findall would pair them), in linear time."""
    found, pos = None, 0
    while (i := text.find(start, pos)) != -1:
        j = text.find(end, i + len(start))
        if j == -1:
            break
        found, pos = text[i + len(start) : j], j + len(end)
    return found


def extract_answer(text: str) -> str | None:
    """The final answer: last \\boxed{}, else <answer>...</answer>, else the text after "Answer:"."""
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed
    tagged = _last_tagged(text)
    if tagged is not None:
        return tagged.strip()
    m = re.findall(r"Answer:[ \t]*(.+)", text)
    if m:
        return m[-1].strip()
    return None


def normalize(text: str) -> str:
    """Light normalisation: strip LaTeX text wrappers, punctuation at the ends, case, spaces."""
    s = str(text).strip()
    s = re.sub(r"\\text\{(.*?)\}", r"\1", s)
    s = re.sub(r"\\(mathrm|textbf|mathbf)\{(.*?)\}", r"\2", s)
    s = s.replace("\\%", "%").replace("$", "")
    s = s.strip(" .,:;!\"'`").lower()
    return re.sub(r"\s+", " ", s)


def choice_letter(answer: str, n_choices: int = 26) -> str | None:
    """The option letter at the start of an answer: "B", "(B)", "B. Sheep", "b: sheep"."""
    m = re.match(r"^\s*\(?([A-Za-z])\)?(?:[\s.:)\]]|$)", answer.strip())
    if m and m.group(1).upper() in LETTERS[:n_choices]:
        return m.group(1).upper()
    return None


def score_choice(answer: str | None, truth: str, choices: list[str] | None = None) -> bool:
    """Multiple choice: the letter at the start of the answer, or the option text itself."""
    if answer is None:
        return False
    letter = choice_letter(answer, len(choices) if choices else 26)
    truth_letter = choice_letter(truth) or truth.strip().upper()[:1]
    if letter is not None:
        return letter == truth_letter
    if choices:
        texts = [normalize(c) for c in choices]
        if normalize(answer) in texts:
            return LETTERS[texts.index(normalize(answer))] == truth_letter
    return False


_NUMBER_WORDS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen twenty".split())}


def parse_number(text: str | None) -> float | None:
    """The single number an answer states ("3", "3.0", "three", "1,200", "\\frac{1}{2}")."""
    if text is None:
        return None
    s = normalize(text).replace(",", "")
    if s in _NUMBER_WORDS:
        return float(_NUMBER_WORDS[s])
    m = re.fullmatch(r"\\d?frac\{(-?\d+(?:\.\d+)?)\}\{(-?\d+(?:\.\d+)?)\}", s)
    if m and float(m.group(2)) != 0:
        return float(m.group(1)) / float(m.group(2))
    nums = re.findall(r"-?\d+(?:\.\d+)?", s)
    if len(nums) == 1:
        return float(nums[0])
    return None


def score_number(answer: str | None, truth: str | float, tol: float = 1e-6) -> bool:
    """Numeric exact match (TallyQA counts): same value after parsing, within float tolerance."""
    a, t = parse_number(answer), parse_number(str(truth))
    return a is not None and t is not None and abs(a - t) <= tol * max(1.0, abs(t))


def score_text(answer: str | None, truth: str) -> bool:
    """Open answers: numbers compare as numbers, anything else as normalised text."""
    if answer is None:
        return False
    if parse_number(truth) is not None and parse_number(answer) is not None:
        return score_number(answer, truth)
    return normalize(answer) == normalize(truth)


def levenshtein(a: str, b: str) -> int:
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def anls(prediction: str | None, answers: list[str] | str, threshold: float = 0.5) -> float:
    """Average Normalized Levenshtein Similarity for one question (InfoVQA / DocVQA definition).

    max over ground truths of 1 - NL(pred, gt), set to 0 where NL >= threshold; strings are
    lower-cased and stripped, as in the official evaluation.
    """
    if isinstance(answers, str):
        answers = [answers]
    pred = " ".join(str(prediction or "").strip().lower().split())
    best = 0.0
    for gt in answers:
        gt = " ".join(str(gt).strip().lower().split())
        if not gt and not pred:
            return 1.0
        nl = levenshtein(pred, gt) / max(len(pred), len(gt), 1)
        best = max(best, 1.0 - nl if nl < threshold else 0.0)
    return best


# ---- judging ---------------------------------------------------------------------------------

SCORERS = ("text", "number", "choice", "anls")
"""`text`: numbers as numbers, other answers as normalised text (open questions, TinyZoom, the Studio);
`number`: numeric exact match (TallyQA); `choice`: the option letter (V*, MVBench); `anls` (InfoVQA)."""


@dataclass(frozen=True)
class Judgement:
    score: float  # in [0, 1]: 1/0, or ANLS
    correct: bool
    scorer: str  # the rule that gave it, stored beside the score


def truth_letter(truth: str, choices: list[str] | None) -> str | None:
    """The correct option's letter, whether the data stores "B", "(B)", "B. sheep" or "sheep"."""
    letter = choice_letter(truth, len(choices) if choices else 26)
    if letter is not None:
        return letter
    if choices:
        texts = [normalize(c) for c in choices]
        if normalize(truth) in texts:
            return LETTERS[texts.index(normalize(truth))]
    return None


def judge(answer: str | None, truth: str | list[str], scorer: str = "text",
          choices: list[str] | None = None) -> Judgement:
    """Score an extracted answer against one or more references with the named rule. Correct means a
    score of 1 (exact-match rules) or ANLS >= 0.5; a missing answer scores 0."""
    if scorer not in SCORERS:
        raise ValueError(f"unknown scorer {scorer!r} (known: {', '.join(SCORERS)})")
    truths = [truth] if isinstance(truth, str) else list(truth)
    value = 0.0
    if answer is not None and truths:
        if scorer == "anls":
            value = anls(answer, truths)
        elif scorer == "choice":
            letters = [truth_letter(t, choices) for t in truths]
            value = float(any(x is not None and score_choice(answer, x, choices) for x in letters))
        else:
            match = score_number if scorer == "number" else score_text
            value = float(any(match(answer, t) for t in truths))
    return Judgement(value, value >= 0.5 if scorer == "anls" else value >= 1.0, scorer)


def judge_trajectory(traj, scorer: str = "text", choices: list[str] | None = None) -> Judgement | None:
    """Judge a trajectory's answer against its ground truth and store the verdict and the scorer's name
    on it; None (and nothing stored) when it has no ground truth."""
    if traj.ground_truth is None:
        return None
    verdict = judge(traj.answer, traj.ground_truth, scorer, choices)
    traj.correct, traj.scorer = verdict.correct, verdict.scorer
    return verdict
