"""The performance table's model rows: batched rollouts, loop overhead, thread settings, first Ask
(see bench/perf.py). Everything runs the embedded checkpoint (assets/pixel-reasoner-tiny)."""
from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from core.backends.base import GenerationParams
from core.loop import Done, LoopConfig, Task, run, run_batch
from core.operations import PixelLimits

ROOT = Path(__file__).resolve().parents[1]


def zoom_tasks(n: int, seed: int = 500) -> list[Task]:
    """TinyZoom 'zoom needed' items, each its own picture: the model crops once, then answers."""
    from train.synth.tasks import make_item

    items = [make_item("zoom_needed", seed + i, f"perf-{i}") for i in range(n)]
    return [Task(question=it.question, image=it.image, answer=it.answer) for it in items]


def bench_batching(backend, n: int, runs: int) -> dict:
    """A group of n conversations through run_batch versus one at a time, medians of interleaved runs,
    with the cached turn engine (the default) and with plain batched generate."""
    config = LoopConfig(pixels=PixelLimits.preset(backend.pixel_preset or "tiny"))
    params = GenerationParams(max_new_tokens=256)
    tasks = zoom_tasks(n)
    run_batch(backend, tasks[:2], config, params)  # warm-up
    walls: dict[str, list[float]] = {"one_cached": [], "group_cached": [], "one_plain": [], "group_plain": []}
    steps = []
    for _ in range(runs):
        for name in walls:
            backend.cache_turns = name.endswith("cached")
            t0 = time.perf_counter()
            if name.startswith("one"):
                trajs = [run_batch(backend, [t], config, params)[0] for t in tasks]
            else:
                trajs = run_batch(backend, tasks, config, params)
            walls[name].append(time.perf_counter() - t0)
            steps.append(statistics.mean(len(t.steps) for t in trajs))
    backend.cache_turns = True
    rate = {k: n / statistics.median(v) for k, v in walls.items()}
    return {"n": n, "runs": runs, "mean_steps": statistics.mean(steps), "traj_per_s": rate,
            "speedup": rate["group_cached"] / rate["one_plain"],
            "speedup_same_engine": rate["group_cached"] / rate["one_cached"]}


def bench_model_turn(backend, repeats: int) -> dict:
    """One turn of the embedded model (the first turn of a zoom item: it writes the crop call), median."""
    from core.loop import Episode

    config = LoopConfig(pixels=PixelLimits.preset(backend.pixel_preset or "tiny"))
    params = GenerationParams(max_new_tokens=256)
    times = []
    for task in zoom_tasks(repeats + 1, seed=700):
        messages = Episode(task, config).messages
        t0 = time.perf_counter()
        backend.generate_batch([messages], params)
        times.append(time.perf_counter() - t0)
    return {"turn_ms": statistics.median(times[1:]) * 1e3, "turns": repeats}  # the first warms up


def bench_overhead(backend, runs: int) -> dict:
    """The streaming loop (the app's path) outside model.generate, as a share of the episode."""
    config = LoopConfig(pixels=PixelLimits.preset(backend.pixel_preset or "tiny"))
    params = GenerationParams(max_new_tokens=256)
    tasks = zoom_tasks(runs + 1, seed=900)
    inner, spent = backend.model.generate, []

    def timed_generate(*a, **kw):
        t0 = time.perf_counter()
        try:
            return inner(*a, **kw)
        finally:
            spent.append(time.perf_counter() - t0)

    backend.model.generate = timed_generate
    shares, n_steps = [], []
    try:
        for i, task in enumerate(tasks):
            spent.clear()
            t0 = time.perf_counter()
            for event in run(backend, task, config, params):
                if isinstance(event, Done):
                    n_steps.append(len(event.trajectory.steps))
            wall = time.perf_counter() - t0
            if i:  # the first warms up
                shares.append((wall - sum(spent)) / wall)
    finally:
        del backend.model.generate
    return {"runs": runs, "median_share": statistics.median(shares), "mean_steps": statistics.mean(n_steps[1:])}


def tinyzoom_test(cache: Path, n: int) -> Path:
    out = cache / f"tinyzoom-{n}"
    if not (out / "test.jsonl").exists():
        subprocess.run([sys.executable, "-m", "train", "synth", "--out", str(out), "--train", "0",
                        "--validation", "0", "--test", str(n)], cwd=ROOT, check=True, capture_output=True)
    return out


def bench_eval_threads(cache: Path, n: int, runs: int) -> dict:
    """`python -m core eval` of n TinyZoom items (batch 16) with the default environment and with
    OMP_WAIT_POLICY=PASSIVE / ACTIVE set by hand, interleaved in rotating order, median wall seconds."""
    data = tinyzoom_test(cache, n)
    settings = {"default": None, "PASSIVE": "PASSIVE", "ACTIVE": "ACTIVE"}
    walls: dict[str, list[float]] = {k: [] for k in settings}
    names = list(settings)
    for r in range(runs):
        for name in names[r % 3:] + names[:r % 3]:  # each setting takes each place in turn
            policy = settings[name]
            env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
            if policy:
                env["OMP_WAIT_POLICY"] = policy
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "core", "eval", "--bench", "tinyzoom", "--data", str(data),
                            "--limit", str(n), "--batch", "16", "--no-db", "--quiet", "--json",
                            "--out", str(cache / f"eval-{name}-{r}-{time.time_ns()}")],
                           cwd=ROOT, env=env, check=True, capture_output=True)
            walls[name].append(time.perf_counter() - t0)
    return {"items": n, "runs": runs, "wall_s": {k: statistics.median(v) for k, v in walls.items()}}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_first_ask(folder: Path, asks: int = 3) -> dict:
    """Start `python app.py` and ask at once, then again: the first Ask against the later ones."""
    from gradio_client import Client, handle_file

    port = _free_port()
    image = folder / "ask.png"
    zoom_tasks(1, seed=77)[0].image.save(image)
    proc = subprocess.Popen([sys.executable, "app.py", "--db", str(folder / "studio.db"), "--port", str(port)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        started = time.perf_counter()
        while True:
            try:
                client = Client(f"http://127.0.0.1:{port}/", verbose=False)
                break
            except Exception:  # not listening yet
                if proc.poll() is not None or time.perf_counter() - started > 300:
                    raise RuntimeError("the app did not start") from None
                time.sleep(0.25)
        ready = time.perf_counter() - started
        times = []
        for i in range(asks):
            t0 = time.perf_counter()
            client.predict(handle_file(str(image)), f"What is written on the tag? ({i})", "transformers", "",
                           True, 0.0, 4, 256, "vcot", False, api_name="/ask")
            times.append(time.perf_counter() - t0)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return {"page_ready_s": ready, "first_s": times[0], "warm_s": statistics.median(times[1:])}
