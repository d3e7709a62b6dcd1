"""One machine's CPU cores as several training processes, each with its share of the batch.

On 2 cores, two processes of one thread each ran the fast SFT step at 5.9 conversations/s against
3.3 for one process of two threads (batch 4 each against 8): the step is a chain of small operations
where a second OpenMP thread waits more than it works. So on a CPU `python -m train sft` starts its
own ranks (gloo DDP, like `torchrun`) and gives each `batch_size / N` rows: the global batch, the
loss over it and the gradient are those of one process (DDP averages the gradients, and the loss is
divided by the whole batch's trained tokens).

The launcher stays the command the user (or the Train tab) started: its ranks die with it (a kill -9
of the launcher included) and it ends with the first rank that fails.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

MIN_ROWS = 4
"""Fewest rows a rank gets: below it the shared prefix runs for too few rows to pay."""


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def auto_processes(batch_size: int, n_cores: int) -> int:
    """The most ranks (at most one per core) that split `batch_size` evenly with MIN_ROWS each."""
    fits = [n for n in range(1, n_cores + 1) if batch_size % n == 0 and batch_size // n >= MIN_ROWS]
    return max(fits, default=1)


def planned_processes(requested: int | None, batch_size: int, on_gpu: bool) -> int:
    """How many ranks this command starts: 1 inside a launch already (torchrun, accelerate, ours) or
    on a GPU; the requested number, or `auto_processes`. A batch the ranks cannot split is an error."""
    if "RANK" in os.environ or on_gpu:
        return 1
    n = auto_processes(batch_size, cores()) if requested is None else requested
    if n < 1 or batch_size % n:
        raise SystemExit(f"error: processes={n} must divide batch_size={batch_size} (each rank takes an equal share)")
    return n


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the launcher dies, however it dies (Linux)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def rank_env(rank: int, n: int, port: int, threads: int) -> dict[str, str]:
    return {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(n),
            "LOCAL_WORLD_SIZE": str(n), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
            "OMP_NUM_THREADS": str(threads), "CUDA_VISIBLE_DEVICES": ""}


def launch(module_argv: list[str], n: int, batch_size: int, threads: int | None = None) -> int:
    """Run `python -m <module_argv>` as `n` ranks with `batch_size / n` rows and `threads` threads each
    (default: the cores shared out); the exit status is the first failing rank's, else 0."""
    threads = threads or max(1, cores() // n)
    extra = [f"batch_size={batch_size // n}", f"torch_threads={threads}", "processes=1"]
    port = free_port()
    procs = [subprocess.Popen([sys.executable, "-m", *module_argv, *extra], env=rank_env(r, n, port, threads),
                              preexec_fn=_die_with_parent) for r in range(n)]
    try:
        while True:
            codes = [p.poll() for p in procs]
            failed = [c for c in codes if c not in (None, 0)]
            if failed or all(c == 0 for c in codes):
                return failed[0] if failed else 0
            time.sleep(0.2)
    except KeyboardInterrupt:  # Ctrl-C reached the ranks too (one process group); the checkpoints stay
        return 130
    finally:
        for p in procs:  # a rank that failed leaves the others waiting in a collective
            if p.poll() is None:
                p.kill()
                p.wait()
