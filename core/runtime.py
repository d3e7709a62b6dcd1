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
from contextlib import contextmanager

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
