"""Where a generated turn stops: a protocol stop string, a stop token, or the caller's cancel.
Shared by the transformers backend's `generate` paths and the turn engine (core.backends.hf_turns)."""
from __future__ import annotations

import threading
from contextlib import contextmanager

import torch

STOP_WINDOW = 24  # tokens decoded from the end of each row when looking for a stop string


class PrefillCancelled(Exception):
    """Stop came while the prompt was being read: raised between two decoder layers."""


class StopCriteria:
    """Per-row stop on protocol stop strings or stop token ids; every row on `cancel`.

    Records, for each row, how many new tokens it had when it stopped (`lengths`), so batched
    output can be cut without guessing where padding starts.
    """

    def __init__(self, tokenizer, stops: tuple[str, ...], stop_ids: set[int], prompt_len: int,
                 batch_size: int, cancel: threading.Event | None = None) -> None:
        self.tokenizer, self.stops, self.stop_ids = tokenizer, tuple(stops), set(stop_ids)
        self.prompt_len, self.cancel = prompt_len, cancel
        self.abandoned = threading.Event()  # set when the caller stops reading a stream
        self.lengths: list[int | None] = [None] * batch_size
        self.cancelled = False
        self.decoding = False  # set by the first call, after the prompt's prefill
        self.closing_chars = {s[-1] for s in self.stops if s}
        self.may_close: dict[int, bool] = {}  # token id -> its text holds a stop string's last character

    def row_done(self, new_tokens: list[int]) -> bool:
        """Whether the row's newest token ends it. A stop string can only complete with the token
        that writes its last character, so the tail is decoded only after such a token."""
        if not new_tokens:
            return False
        last = new_tokens[-1]
        if last in self.stop_ids:
            return True
        closes = self.may_close.get(last)
        if closes is None:
            text = self.tokenizer.decode([last], skip_special_tokens=False)
            # an incomplete UTF-8 sequence decodes to U+FFFD: its character is only known with neighbours
            closes = self.may_close[last] = "\ufffd" in text or any(c in text for c in self.closing_chars)
        if not closes:
            return False
        tail = self.tokenizer.decode(new_tokens[-STOP_WINDOW:], skip_special_tokens=False)
        return any(s in tail for s in self.stops)

    def stop_asked(self) -> bool:
        return self.abandoned.is_set() or (self.cancel is not None and self.cancel.is_set())

    @contextmanager
    def watch_prefill(self, model):
        """Within the block, a Stop before the first new token raises PrefillCancelled at the next
        decoder layer: generate's stopping criteria run only between tokens, and a long prompt's
        prefill takes seconds on a CPU (9.5 s at the 12 K context on the embedded model)."""
        def check(module, args) -> None:
            if not self.decoding and self.stop_asked():
                raise PrefillCancelled("stopped while reading the prompt")
        layers = [m for m in model.modules() if type(m).__name__.endswith("DecoderLayer")]
        handles = [layer.register_forward_pre_hook(check) for layer in layers]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def __call__(self, input_ids: torch.LongTensor, scores=None, **kwargs) -> torch.BoolTensor:
        self.decoding = True
        n_new = input_ids.shape[1] - self.prompt_len
        if self.stop_asked():
            self.cancelled = True
            return torch.ones(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        done = []
        for row, ids in enumerate(input_ids.tolist()):
            if self.lengths[row] is None and self.row_done(ids[self.prompt_len:]):
                self.lengths[row] = n_new
            done.append(self.lengths[row] is not None)
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)
