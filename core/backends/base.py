"""The one small interface every model backend implements.

A backend turns a conversation (HF-style messages, see core.protocol) into the next assistant
turn. `stream` yields text chunks and ends with a `Generation`; `generate` returns just the
`Generation`; `generate_batch` advances many conversations at once. Each default is written in
terms of the others, so a backend implements `stream` or `generate` (and `generate_batch` where
the engine batches).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from typing import Iterator

from core.protocol import STOP_STRINGS, TOOL_CALL_END


@dataclass
class GenerationParams:
    max_new_tokens: int = 1024
    temperature: float = 0.0  # 0 means greedy
    top_p: float = 1.0
    top_k: int = 0
    stop: tuple[str, ...] = STOP_STRINGS
    seed: int | None = None
    logprobs: bool = False  # return per-token log-probabilities (RL)
    max_context_tokens: int | None = None  # prompt + new tokens; a longer prompt is refused before prefill
    confidence: bool = True  # record each token's probability where it comes cheap (answer confidence)


@dataclass
class Generation:
    """One assistant turn. `text` keeps a final </tool_call>; other stop strings are dropped."""

    text: str
    tokens_in: int = 0
    tokens_out: int = 0
    finish_reason: str = "stop"  # stop | length | cancelled
    seconds: float = 0.0
    token_ids: list[int] | None = None
    logprobs: list[float] | None = None
    tokens: list[str] | None = None  # each generated token decoded alone, aligned with logprobs
    extra: dict = field(default_factory=dict)


def cut_at_stop(text: str, stops: tuple[str, ...] = STOP_STRINGS) -> tuple[str, bool]:
    """Truncate at the first stop string. </tool_call> stays in the text, the others go."""
    hits = [(text.find(s), s) for s in stops if s in text]
    if not hits:
        return text, False
    pos, stop = min(hits)
    end = pos + len(stop) if stop == TOOL_CALL_END else pos
    return text[:end], True


class BackendError(RuntimeError):
    """A backend that cannot be built or run, with a message for the user."""


class ContextFull(BackendError):
    """The prompt alone is over the context budget: refused before the model reads it. From a
    batched call, `rows` are the conversations refused (the others were not run either)."""

    def __init__(self, message: str, rows: dict[int, str] | None = None) -> None:
        super().__init__(message)
        self.rows = rows or {}


def context_problem(prompt_tokens: int, params: GenerationParams) -> str | None:
    """Why a prompt of this many tokens may not be generated from (None when it may): the one rule
    every backend applies, from the token count, before any prefill or request."""
    budget = params.max_context_tokens
    if budget is not None and prompt_tokens >= budget:
        return f"the question and its picture take {prompt_tokens} tokens; the context holds {budget}"
    return None


def fit_context(prompt_tokens: int, params: GenerationParams) -> GenerationParams:
    """The params with max_new_tokens cut to the context left after the prompt; ContextFull when the
    prompt leaves none (checked from the token count, before any prefill)."""
    problem = context_problem(prompt_tokens, params)
    if problem:
        raise ContextFull(problem)
    if params.max_context_tokens is None:
        return params
    return replace(params, max_new_tokens=min(params.max_new_tokens, params.max_context_tokens - prompt_tokens))


def check_batch(prompt_tokens: list[int | None], params: GenerationParams) -> None:
    """ContextFull naming every conversation of a batch whose prompt is over the budget (a count of
    None is not checked), before any of them is prefilled."""
    rows = {i: p for i, n in enumerate(prompt_tokens) if n is not None and (p := context_problem(n, params))}
    if rows:
        raise ContextFull(next(iter(rows.values())), rows)


class Backend:
    name = "base"
    model_id = ""
    streams = True  # False: `stream` yields the whole turn at once (the app says so)
    pixel_preset: str | None = None  # the resolution preset the checkpoint declares (studio.json), if any

    def stream(self, messages: list[dict], params: GenerationParams,
               cancel: threading.Event | None = None) -> Iterator[str | Generation]:
        yield self.generate(messages, params, cancel)

    def generate(self, messages: list[dict], params: GenerationParams,
                 cancel: threading.Event | None = None) -> Generation:
        result = None
        for chunk in self.stream(messages, params, cancel):
            if isinstance(chunk, Generation):
                result = chunk
        if result is None:
            raise BackendError(f"{self.name} backend produced no generation")
        return result

    def generate_batch(self, batch: list[list[dict]], params: GenerationParams) -> list[Generation]:
        return [self.generate(messages, params) for messages in batch]

    def familiarity(self, pictures: list) -> list[tuple[bool, float]] | None:
        """Per picture (familiar, distance over the threshold) against the pictures the model was
        trained on (core.familiarity); None where the model ships no reference or the backend cannot
        read its vision features."""
        return None

    def forget(self) -> None:
        """Drop any per-conversation state kept between turns (run_batch calls it when done)."""
