"""Process-wide CPU thread settings, chosen once before torch loads.

On a CPU shared with other work, OpenMP's default wait policy makes each idle worker spin between
parallel regions; a batched `generate` on 2 busy cores then ran 3-6x slower than with the
passive policy (measured, docs/performance.md). libgomp reads OMP_WAIT_POLICY once, when torch
first loads it, so `configure_threads` must run before `import torch`: the entry points (`python
-m core`, `python -m train`, `python app.py`) call it first thing. A value the user set wins. The
transformers backend also runs `generate` in a worker thread, which does not spin either, for
programs that imported torch before calling this.
"""
from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Callable, Iterable, TypeVar

T = TypeVar("T")
R = TypeVar("R")
_prep_pool: ThreadPoolExecutor | None = None

THREAD_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}


def configure_threads() -> bool:
    """Set the passive OpenMP wait policy unless the user chose one; False when torch loaded first
    (the setting can no longer take effect in this process)."""
    if "torch" in sys.modules:
        return False
    for key, value in THREAD_ENV.items():
        os.environ.setdefault(key, value)
    return True


@contextmanager
def torch_threads(n: int | None):
    """Run the block with at most `n` intra-op threads (None: as set), then restore the count. Call
    it in the thread that runs the block: OpenMP keeps the count per thread."""
    import torch

    before = torch.get_num_threads()
    if n is None or n >= before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def parallel_map(fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """fn over items on a small shared thread pool, in order: for the preparation around the model
    (resizing, hashing, tokenizing release the GIL) while the model waits for all of it. `fn` must
    not call parallel_map itself (the pool's threads would wait on each other)."""
    global _prep_pool
    items = list(items)
    if len(items) < 2:
        return [fn(x) for x in items]
    if _prep_pool is None:
        _prep_pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="prep")
    return list(_prep_pool.map(fn, items))
