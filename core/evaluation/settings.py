"""Default resolution and sampling settings for an evaluation, chosen by the checkpoint.

* A checkpoint of ours declares its resolution preset in `studio.json` ("pixel_preset"; the
  shipped tiny model says "tiny"): that preset, greedy decoding, short turns.
* Anything else (TIGER-Lab/PixelReasoner-RL-v1, other Qwen2.5-VL checkpoints) gets the release's
  reproduction settings: first image MIN_PIXELS 401408 (512*28*28) / MAX_PIXELS 4014080
  (5120*28*28), crops 256..5120 * 28*28, temperature 0.6 (the release's eval script default).

Uncertain: the release reads one MIN_PIXELS/MAX_PIXELS pair from the environment for both the first
image and crops, and its crop default is 256*28*28; we keep the documented crop default and let
--crop-min-pixels/--crop-max-pixels set crops separately (pass the same values to mirror a run
that exported both).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from core.operations import PIXEL_PRESETS, PixelLimits, resolve_pixel_preset

REPRODUCTION = {"temperature": 0.6, "max_new_tokens": 2048}  # and the "eval" pixel preset
OWN_CHECKPOINT = {"temperature": 0.0, "max_new_tokens": 128}


@dataclass
class EvalSettings:
    pixels: PixelLimits
    pixel_preset: str
    temperature: float
    max_new_tokens: int
    source: str  # "studio.json" | "reproduction"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["pixels"] = asdict(self.pixels)
        return d


def resolve_settings(model_preset: str | None, preset: str | None = None, temperature: float | None = None,
                     max_new_tokens: int | None = None, min_pixels: int | None = None,
                     max_pixels: int | None = None, crop_min_pixels: int | None = None,
                     crop_max_pixels: int | None = None) -> EvalSettings:
    """Defaults from the checkpoint (its studio.json preset, or reproduction), then explicit overrides."""
    base = OWN_CHECKPOINT if model_preset else REPRODUCTION
    name = resolve_pixel_preset(preset, model_preset, default="eval")
    limits = PIXEL_PRESETS[name]
    overrides = {k: v for k, v in (("first_min", min_pixels), ("first_max", max_pixels),
                                   ("crop_min", crop_min_pixels), ("crop_max", crop_max_pixels)) if v is not None}
    limits = replace(limits, **overrides)
    for lo, hi in (("first_min", "first_max"), ("crop_min", "crop_max")):
        if getattr(limits, lo) > getattr(limits, hi):
            raise ValueError(f"{lo} ({getattr(limits, lo)}) is above {hi} ({getattr(limits, hi)})")
    return EvalSettings(pixels=limits, pixel_preset=name,
                        temperature=base["temperature"] if temperature is None else temperature,
                        max_new_tokens=base["max_new_tokens"] if max_new_tokens is None else max_new_tokens,
                        source="studio.json" if model_preset else "reproduction")
