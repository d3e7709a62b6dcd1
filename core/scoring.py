"""Answer extraction and scoring: \\boxed{} with fallbacks, multiple choice, numbers, ANLS, and `judge`,
the one rule that decides whether an answer is right (app, import, RL and evaluation all call it)."""
from __future__ import annotations

import re
from dataclasses import dataclass

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...}, braces balanced (so \\boxed{\\frac{1}{2}} works)."""
    start = text.rfind("\\boxed")
    while start != -1:
        i = start + len("\\boxed")
        while i < len(text) and text[i] == " ":
            i += 1
        if i < len(text) and text[i] == "{":
            depth, j = 0, i
            while j < len(text):
                if text[j] == "{":
                    depth += 1
                elif text[j] == "}":
                    depth -= 1
                    if depth == 0:
                        return text[i + 1 : j].strip()
                j += 1
        start = text.rfind("\\boxed", 0, start)
    return None


def extract_answer(text: str) -> str | None:
    """The final answer: last \\boxed{}, else <answer>...</answer>, else the text after "Answer:"."""
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed
    m = re.findall(r"<answer>(.*?)</answer>", text, flags=re.S)
    if m:
        return m[-1].strip()
    m = re.findall(r"Answer:\s*(.+)", text)
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
