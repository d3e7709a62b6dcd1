"""Running as a Hugging Face Space: generation inside `@spaces.GPU` when `spaces` is importable (a
real module file on the path standing in for the package), the model and backend from environment
variables, HF_HOME on persistent storage, and a model too large refused when the app starts."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.backends.openai import OpenAIBackend
from tests.test_backend_sizing import QWEN25_VL_7B

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("studio_app_main", ROOT / "app.py")  # app.py, not the app/ package
app_main = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(app_main)

FAKE_SPACES = '''
CALLS = []


def GPU(task=None, *, duration=None):
    """Like spaces.GPU: decorate with or without arguments; records each call and its duration."""
    def wrap(fn):
        def inner(*args, **kwargs):
            CALLS.append([fn.__name__, duration])
            return fn(*args, **kwargs)
        return inner
    return wrap if task is None else wrap(task)
'''

SPACE_RUN = '''
import json, spaces
from core.backends import load_backend
from core.backends.zerogpu import GPUBackend
from core.loop import LoopConfig, Task, run_to_end
from core.media import load_image
from core.operations import PixelLimits
backend = load_backend("transformers", device="cpu")
task = Task(question="What is written on the blue tag?", image=load_image("assets/examples/zoom_needed_101.png"))
traj = run_to_end(backend, task, config=LoopConfig(pixels=PixelLimits.preset(backend.pixel_preset)))
batch = backend.generate_batch([[{"role": "user", "content": "hi"}]], __import__("core").backends.GenerationParams(
    max_new_tokens=4))
print(json.dumps({"wrapped": isinstance(backend, GPUBackend), "calls": spaces.CALLS, "answer": traj.answer,
                  "tool": traj.steps[0].tool, "batch": len(batch), "model": traj.model}))
'''


def test_generation_runs_inside_spaces_gpu(tmp_path):
    (tmp_path / "spaces.py").write_text(FAKE_SPACES)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]), "STUDIO_GPU_DURATION": "77"}
    out = subprocess.run([sys.executable, "-c", SPACE_RUN], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["wrapped"] and result["answer"] == "3" and result["tool"] == "crop_image_normalized"
    assert result["calls"] == [["_stream", 77], ["_stream", 77], ["_generate_batch", 77]]  # two turns, one batch
    assert result["model"].endswith("pixel-reasoner-tiny") and result["batch"] == 1


@pytest.mark.skipif(importlib.util.find_spec("spaces") is not None, reason="spaces is installed here")
def test_without_spaces_generation_is_not_wrapped():
    from core.backends import zerogpu

    assert zerogpu.AVAILABLE is False and zerogpu.gpu_stream is zerogpu._stream
    assert zerogpu.on_gpu("the backend") == "the backend"


def test_environment_variables_choose_model_backend_and_options(tmp_path, monkeypatch):
    monkeypatch.setenv("STUDIO_BACKEND", "openai")
    monkeypatch.setenv("STUDIO_MODEL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("STUDIO_SERVED_MODEL_NAME", "PixelReasoner-RL-v1")
    monkeypatch.setenv("STUDIO_MAX_MEMORY_GB", "40")
    args = app_main.build_parser().parse_args(["--db", str(tmp_path / "studio.db")])
    assert (args.backend, args.model, args.served_model_name) == ("openai", "http://127.0.0.1:9/v1",
                                                                    "PixelReasoner-RL-v1")
    assert args.max_memory_gb == 40.0
    studio = app_main.make_studio(args)
    assert studio.backend_options == {"model_name": "PixelReasoner-RL-v1"}  # only what openai takes
    from app.ask.session import AskSettings, get_backend

    backend = get_backend(studio, AskSettings(backend="openai", model="http://127.0.0.1:9/v1"))
    assert isinstance(backend, OpenAIBackend) and backend.model_name == "PixelReasoner-RL-v1"
    flag_wins = app_main.build_parser().parse_args(["--backend", "replay", "--model", "m"])
    assert (flag_wins.backend, flag_wins.model) == ("replay", "m")


def test_hf_home_goes_to_persistent_storage(tmp_path):
    env = {"SPACE_ID": "user/studio"}
    assert app_main.use_persistent_cache(env, tmp_path) == str(tmp_path / ".huggingface") == env["HF_HOME"]
    assert app_main.use_persistent_cache({"SPACE_ID": "u/s"}, tmp_path / "missing") is None  # no storage
    assert app_main.use_persistent_cache({}, tmp_path) is None  # not a Space
    kept = {"SPACE_ID": "u/s", "HF_HOME": "/elsewhere"}
    assert app_main.use_persistent_cache(kept, tmp_path) == "/elsewhere"


def test_a_model_too_large_is_refused_when_the_app_starts(tmp_path):
    model = tmp_path / "qwen25vl7b"
    model.mkdir()
    (model / "config.json").write_text(QWEN25_VL_7B)
    out = subprocess.run([sys.executable, "app.py", "--model", str(model), "--dtype", "float32", "--preload",
                          "--max-memory-gb", "24", "--db", str(tmp_path / "studio.db")],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode != 0
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("error: cannot load") and "8.3B parameters: 33.2 GB of weights in float32" in last
