"""The benchmarks: how each is scored, and the paper's figure for the released 7B model.

Scoring follows the release (docs/protocol.md, section 5), built on core.scoring so there is one
implementation of each rule:

* V* Bench and MVBench: multiple choice, the option letter at the start of the final answer
  (`\\boxed{B}`, `\\boxed{(B) sheep}`); an answer that repeats an option's text counts as that option.
* TallyQA: numeric exact match ("3", "3.0", "three").
* InfoVQA: ANLS against every reference answer (threshold 0.5).
* TinyZoom: numbers as numbers, text after light normalisation.

The final answer is the last `\\boxed{}` of the last turn, else `<answer>...</answer>`, else the
text after "Answer:" (core.scoring.extract_answer). The release's last resort, math-verify over
the whole response, is not reproduced: it can match a number anywhere in the reasoning.
"""
from __future__ import annotations

from dataclasses import dataclass

from core.scoring import judge


@dataclass(frozen=True)
class Bench:
    name: str
    title: str
    metric: str  # accuracy | anls
    scorer: str  # choice | number | anls | text
    paper_7b: float | None = None  # the paper's figure for TIGER-Lab/PixelReasoner-RL-v1 (percent)


BENCHES: dict[str, Bench] = {
    "vstar": Bench("vstar", "V* Bench", "accuracy", "choice", 84.3),
    "tallyqa": Bench("tallyqa", "TallyQA-Complex", "accuracy", "number", 73.8),
    "mvbench": Bench("mvbench", "MVBench", "accuracy", "choice", 67.8),
    "infovqa": Bench("infovqa", "InfographicsVQA", "anls", "anls", 84.0),
    "tinyzoom": Bench("tinyzoom", "TinyZoom", "accuracy", "text"),
}


def score(bench: str, prediction: str | None, truth: str | list[str], choices: list[str] | None = None) -> float:
    """The item's score in [0, 1] under the benchmark's rule (core.scoring.judge)."""
    return judge(prediction, truth, BENCHES[bench].scorer, choices).score
