"""Each generated token's probability, recorded during transformers' `generate` at the cost of one
log-softmax per step (keeping every step's logits, `output_logits`, holds steps x vocabulary floats).

`TokenLogprobs` is a logits processor placed last: at each step it takes the log-probability of the
token the previous step chose (now the last input id) from the distribution it kept, then keeps the
new step's distribution; `row` adds the final token's.
"""
from __future__ import annotations

import torch


class TokenLogprobs:
    """A transformers LogitsProcessor that records, per row, the log-probability of each chosen token."""

    def __init__(self) -> None:
        self.steps: list[torch.Tensor] = []  # per generated token: (batch,) log-probabilities
        self._last: torch.Tensor | None = None  # the latest step's log-softmax, (batch, vocab)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self._last is not None:
            self.steps.append(self._last.gather(1, input_ids[:, -1:]).view(-1).cpu())
        self._last = torch.log_softmax(scores.float(), -1)
        return scores

    def row(self, row: int, tokens: list[int]) -> list[float]:
        """The log-probabilities of `row`'s generated `tokens` (the first len(tokens) of its steps)."""
        out = [float(step[row]) for step in self.steps[:len(tokens)]]
        if len(out) < len(tokens) and self._last is not None:  # the final token: its step was not followed
            out.append(float(self._last[row, tokens[len(out)]]))
        return out


def token_pieces(tokenizer, ids: list[int]) -> list[str]:
    """Each token decoded alone (special tokens as empty text), in order."""
    return tokenizer.batch_decode([[i] for i in ids], skip_special_tokens=True)
