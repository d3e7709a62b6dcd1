"""ZeroGPU: on a Space with ZeroGPU hardware a GPU is attached only inside functions decorated with
`@spaces.GPU`, so generation runs through such functions when the `spaces` package is importable
(outside ZeroGPU, `spaces.GPU` returns the function unchanged). The decorated functions are made
once at import, as ZeroGPU requires, and find the backend by a key: the model stays in this process
(loaded at start, moved to the GPU by ZeroGPU for each call), only messages and results travel.
"""
from __future__ import annotations

import importlib.util
import os
import threading
from typing import Iterator

from core.backends.base import Backend, Generation, GenerationParams

DURATION = int(os.environ.get("STUDIO_GPU_DURATION", "120"))
"""Seconds of GPU one call may hold (ZeroGPU's quota is counted in these); STUDIO_GPU_DURATION."""

_BACKENDS: dict[int, Backend] = {}


def _stream(key: int, messages: list[dict], params: GenerationParams) -> Iterator[str | Generation]:
    yield from _BACKENDS[key].stream(messages, params)


def _generate_batch(key: int, batch: list[list[dict]], params: GenerationParams) -> list[Generation]:
    return _BACKENDS[key].generate_batch(batch, params)


if importlib.util.find_spec("spaces") is not None:
    import spaces

    gpu_stream = spaces.GPU(duration=DURATION)(_stream)
    gpu_generate_batch = spaces.GPU(duration=DURATION)(_generate_batch)
    AVAILABLE = True
else:
    gpu_stream, gpu_generate_batch, AVAILABLE = _stream, _generate_batch, False


class GPUBackend(Backend):
    """A backend whose generation runs in `@spaces.GPU` functions; everything else is the inner one's.

    The caller's cancel event cannot cross into ZeroGPU's worker, so it is checked between chunks:
    a cancelled turn stops being read and ends as cancelled."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.key = id(inner)
        _BACKENDS[self.key] = inner

    def __getattr__(self, name: str):  # only called for what this class lacks
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def model_id(self) -> str:
        return self.inner.model_id

    @property
    def pixel_preset(self) -> str | None:  # declared on Backend, so __getattr__ never sees it
        return self.inner.pixel_preset

    @property
    def streams(self) -> bool:
        return self.inner.streams

    def stream(self, messages: list[dict], params: GenerationParams,
               cancel: threading.Event | None = None) -> Iterator[str | Generation]:
        text = ""
        for chunk in gpu_stream(self.key, messages, params):
            if cancel is not None and cancel.is_set():
                yield Generation(text=text, finish_reason="cancelled")
                return
            if isinstance(chunk, str):
                text += chunk
            yield chunk

    def generate_batch(self, batch: list[list[dict]], params: GenerationParams) -> list[Generation]:
        return gpu_generate_batch(self.key, batch, params)

    def familiarity(self, pictures: list) -> list[tuple[bool, float]] | None:  # declared on Backend
        return self.inner.familiarity(pictures)


def on_gpu(backend: Backend) -> Backend:
    """The backend wrapped for ZeroGPU when `spaces` is importable, else the backend itself."""
    return GPUBackend(backend) if AVAILABLE else backend
