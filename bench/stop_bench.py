"""How long Stop takes when pressed during a prefill (run: python -m bench.stop_bench [--repeat 3]).

The longest prompts a visitor can cause, on the embedded model (CPU, the transformers stream the Ask
tab uses, which prefills the whole conversation every turn):
  a. a first turn at the question cap (--max-question-chars 2,000) with a picture;
  b. a later turn at the context budget (LoopConfig.max_context_tokens, 12,088 tokens).
For each: time to the first token without Stop, and from Stop (pressed 50 ms into the prefill, and
halfway through it) to the end of the stream. Stop is checked before every decoder layer during a
prefill (core/backends/stopping.py), so the wait is at most one layer's share of the prefill.
"""
from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path

from core.backends import default_model
from core.backends.base import GenerationParams
from core.backends.hf import TransformersBackend
from core.loop import Episode, LoopConfig, Task
from core.media import load_image
from core.operations import PixelLimits, resolve_pixel_preset

PICTURE = Path(__file__).resolve().parents[1] / "assets" / "examples" / "zoom_needed_101.png"
WORDS = "Which of the small signs in the far corner says what, and in which colour is it written? "


def conversation(backend: TransformersBackend, chars: int | None = None, tokens: int | None = None) -> list[dict]:
    """A first turn's messages: a picture and a question of `chars` characters, or as long as makes
    the prompt `tokens` tokens."""
    config = LoopConfig(pixels=PixelLimits.preset(resolve_pixel_preset(model=backend.pixel_preset)))
    picture = load_image(PICTURE)

    def messages(n: int) -> list[dict]:
        return Episode(Task(question=(WORDS * (n // len(WORDS) + 1))[:n], image=picture), config).messages
    if chars is not None:
        return messages(chars)
    lo, hi = 1, 400_000
    while lo < hi:  # the longest question whose prompt fits in `tokens`
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if backend.encoder.count_tokens(messages(mid)) <= tokens else (lo, mid - 1)
    return messages(lo)


def first_token_s(backend: TransformersBackend, messages: list[dict]) -> float:
    t0 = time.perf_counter()
    for chunk in backend.stream(messages, GenerationParams(max_new_tokens=2)):
        return time.perf_counter() - t0
    return time.perf_counter() - t0


def stop_s(backend: TransformersBackend, messages: list[dict], after: float = 0.05) -> float:
    """Seconds from Stop (set `after` s into the call) to the end of the stream."""
    cancel = threading.Event()
    pressed: list[float] = []

    def press() -> None:
        time.sleep(after)
        pressed.append(time.perf_counter())
        cancel.set()
    threading.Thread(target=press, daemon=True).start()
    for _ in backend.stream(messages, GenerationParams(max_new_tokens=512), cancel):
        pass
    return time.perf_counter() - pressed[0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--question-chars", type=int, default=2000)
    p.add_argument("--context-tokens", type=int, default=LoopConfig().max_context_tokens)
    args = p.parse_args()
    backend = TransformersBackend(default_model(), device="cpu")
    first_token_s(backend, conversation(backend, chars=20))  # warm up
    cases = {f"question at the cap ({args.question_chars} chars)": conversation(backend, chars=args.question_chars),
             f"prompt at the context budget ({args.context_tokens} tokens)":
                 conversation(backend, tokens=args.context_tokens - 1)}
    for name, messages in cases.items():
        n = backend.encoder.count_tokens(messages)
        ttft = min(first_token_s(backend, messages) for _ in range(args.repeat))
        for after in (0.05, ttft / 2):
            stops = [stop_s(backend, messages, after) for _ in range(args.repeat)]
            print(f"{name}: {n} prompt tokens · first token {ttft:.2f} s · Stop pressed {after:.2f} s into the "
                  f"prefill ends the stream in {min(stops):.2f}–{max(stops):.2f} s")


if __name__ == "__main__":
    main()
