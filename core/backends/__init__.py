"""Model backends behind one interface (core.backends.base.Backend), built by name."""
from __future__ import annotations

from core.backends.base import Backend, BackendError, Generation, GenerationParams, cut_at_stop

BACKENDS = ("transformers", "vllm", "openai", "replay")


def load_backend(name: str, model: str | None = None, replay: str | None = None, **kwargs) -> Backend:
    """Build a backend by name. `model` is a hub id, a local path, or (openai) a base URL."""
    if name == "replay":
        if not replay:
            raise BackendError("the replay backend needs --replay FILE (a JSON list of assistant turns)")
        from core.backends.replay import ReplayBackend
        return ReplayBackend(replay, **kwargs)
    if name == "transformers":
        from core.backends.hf import TransformersBackend
        from core.backends.zerogpu import on_gpu
        return on_gpu(TransformersBackend(model or default_model(), **kwargs))
    if name == "vllm":
        from core.backends.vllm import VLLMBackend
        return VLLMBackend(model or default_model(), **kwargs)
    if name == "openai":
        from core.backends.openai import OpenAIBackend
        return OpenAIBackend(model or "http://localhost:8000/v1", **kwargs)
    raise BackendError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")


def default_model() -> str:
    """The embedded checkpoint shipped in assets/ (trained by `python -m train`)."""
    from pathlib import Path
    return str(Path(__file__).resolve().parents[2] / "assets" / "pixel-reasoner-tiny")


__all__ = ["Backend", "BackendError", "Generation", "GenerationParams", "cut_at_stop", "load_backend",
           "default_model", "BACKENDS"]
