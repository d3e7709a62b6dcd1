"""Will the model fit? Its parameter count from its config (built on the meta device: no weights,
no memory), against what the device has, so a 7B on a 16 GB card is refused at start with the
numbers instead of failing minutes into the download or the first forward pass."""
from __future__ import annotations

import os
from pathlib import Path

import torch

OVERHEAD = 1.15  # weights plus what loading and a short generation need on top (buffers, KV cache)


def count_parameters(model: str) -> int:
    """Parameters of the checkpoint's architecture, from its config.json (a folder or a hub id)."""
    from transformers import AutoConfig, Qwen2_5_VLForConditionalGeneration

    config = AutoConfig.from_pretrained(model)
    with torch.device("meta"):
        net = Qwen2_5_VLForConditionalGeneration(config)
    return sum(p.numel() for p in net.parameters())


def device_memory(device: str, device_map: str | None = None) -> int | None:
    """Bytes the weights may use: the GPU's or the machine's memory. None when unknown or when a
    device_map spreads the model (accelerate offloads what does not fit): then nothing is refused."""
    if device_map:
        return None
    if device.startswith("cuda"):
        try:
            index = int(device.split(":")[1]) if ":" in device else torch.cuda.current_device()
            return torch.cuda.get_device_properties(index).total_memory
        except (RuntimeError, AssertionError, ValueError):  # no CUDA yet (ZeroGPU attaches it per call)
            return None
    if device == "cpu":
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            return None
    return None


def fit_problem(n_params: int, dtype: torch.dtype, available: int | None, device: str) -> str | None:
    """A one-line refusal when n_params in dtype (plus overhead) exceed `available` bytes, else None."""
    if available is None:
        return None
    need = n_params * torch.finfo(dtype).bits // 8
    if need * OVERHEAD <= available:
        return None
    name = str(dtype).removeprefix("torch.")
    hint = "use bfloat16 (--dtype bfloat16) or " if dtype == torch.float32 else ""
    return (f"the model has {n_params / 1e9:.1f}B parameters: {need / 1e9:.1f} GB of weights in {name}, but "
            f"{device} has {available / 1e9:.1f} GB; {hint}choose a larger device or --device-map auto "
            "over several GPUs")


def check_fits(model: str, dtype: torch.dtype, device: str, device_map: str | None = None,
               max_memory_gb: float | None = None) -> str | None:
    """fit_problem for a checkpoint; `max_memory_gb` overrides what the device reports."""
    available = int(max_memory_gb * 1e9) if max_memory_gb else device_memory(device, device_map)
    if available is None:
        return None
    path = Path(model).expanduser()
    return fit_problem(count_parameters(str(path) if path.exists() else model), dtype, available, device)
