"""Trace kinds for varied items (`varied`): zooming twice, noticing a wrong crop, saying nothing is
there, following the asked colour, and cropping the objects of counting and relation questions.

* two_step     - coarse crop of the region, then a crop of that crop (`target_image` 2), where one crop's
                 view would leave the glyph too small to read (`needs_two_steps`);
* colour_fix   - a crop on a look-alike tag of another colour (masked), "this is the blue tag, not the
                 red tag", the right crop, the answer;
* not_found    - the asked colour is absent: crops on the other tags (masked), then an answer that says so;
* count_crops  - a crop of each counted circle (or of the region holding them), then the count;
* relation     - a crop of each shape, then the relation read from the two boxes' positions.

Each returns a `traces.Trace` or None (the item then gets the original kinds).
"""
from __future__ import annotations

import math

import numpy as np

from core.operations import PIXEL_PRESETS, crop_box
from train.synth.traces import Trace, boxed, crop_call, noisy_box

READABLE_GLYPH_PX = 14
"""A glyph this tall in the model's view of a crop is readable (tests/test_synth.py measures >= 14 after a crop)."""
NOT_FOUND = "none"


def _view_scale(w: float, h: float, max_pixels: int) -> float:
    return min(1.0, math.sqrt(max_pixels / max(1.0, w * h)))


def needs_two_steps(item, preset: str = "tiny") -> bool:
    """Whether one crop around the tag (with the crop's 0.1 padding) shows its glyph too small to read."""
    if item.image is None or "glyph_box" not in item.meta:
        return False
    W, H = item.image.size
    tb, gb = item.meta["tag_box"], item.meta["glyph_box"]
    rw, rh = min(W, tb[2] - tb[0] + 0.2 * W), min(H, tb[3] - tb[1] + 0.2 * H)
    return (gb[3] - gb[1]) * _view_scale(rw, rh, PIXEL_PRESETS[preset].crop_max) < READABLE_GLYPH_PX


def coarse_box(rng: np.random.Generator, target) -> list[float]:
    """A region several times the target's size that holds it (at a random offset), 2 decimals."""
    tw, th = target[2] - target[0], target[3] - target[1]
    cw, ch = (min(0.5, max(0.2, 6 * s)) for s in (tw, th))
    x1 = float(np.clip(rng.uniform(target[2] - cw + 0.02, target[0] - 0.02), 0, 1 - cw))
    y1 = float(np.clip(rng.uniform(target[3] - ch + 0.02, target[1] - 0.02), 0, 1 - ch))
    return [round(x1, 2), round(y1, 2), round(min(0.99, x1 + cw), 2), round(min(0.99, y1 + ch), 2)]


def box_in_crop(target, call_box, size) -> tuple[float, float, float, float]:
    """The target (normalized to the picture) normalized to the crop that `call_box` makes of it."""
    W, H = size
    px = crop_box(call_box, W, H).px
    cw, ch = px[2] - px[0], px[3] - px[1]
    return ((target[0] * W - px[0]) / cw, (target[1] * H - px[1]) / ch,
            (target[2] * W - px[0]) / cw, (target[3] * H - px[1]) / ch)


def _norm(box, size) -> tuple[float, float, float, float]:
    return (box[0] / size[0], box[1] / size[1], box[2] / size[0], box[3] / size[1])


def two_step(item, rng) -> Trace:
    coarse = coarse_box(rng, item.target)
    fine = noisy_box(rng, box_in_crop(item.target, coarse, item.image.size), 0.01)
    s = item.subject
    return Trace("two_step", [
        f"The {s} is too small to see here. I will zoom in on the region around it.\n\n{crop_call(coarse)}",
        f"The {s} is still too small to read. I will zoom in on it in this view.\n\n{crop_call(fine, 2)}",
        f"The tag reads {item.answer}.\n\n{boxed(item.answer)}"], [True, True, True])


def colour_fix(item, rng) -> Trace:
    other = item.meta["distractors"][int(rng.integers(0, len(item.meta["distractors"])))]
    s, color = item.subject, item.meta["color"]
    wrong = crop_call(noisy_box(rng, _norm(other["box"], item.image.size)))
    return Trace("colour_fix", [
        f"The {s} is too small to read. I will zoom in on it.\n\n{wrong}",
        f"This is the {other['color']} tag, not the {s}. I will zoom in on the {s}.\n\n"
        f"{crop_call(noisy_box(rng, item.target))}",
        f"The tag reads {item.answer}.\n\n{boxed(item.answer)}"], [False, True, True])


def not_found(item, rng) -> Trace:
    s, size = item.subject, item.image.size
    seen = item.meta["distractors"][:3]
    turns = [f"The {s} is too small to read. I will zoom in on it.\n\n"
             f"{crop_call(noisy_box(rng, _norm(seen[0]['box'], size)))}"]
    for prev, nxt in zip(seen, seen[1:]):
        turns.append(f"This is the {prev['color']} tag, not the {s}. I will look elsewhere.\n\n"
                     f"{crop_call(noisy_box(rng, _norm(nxt['box'], size)))}")
    turns.append(f"This is the {seen[-1]['color']} tag, not the {s}. There is no {s} in the image.\n\n"
                 f"{boxed(NOT_FOUND)}")
    return Trace("not_found", turns, [False] * (len(turns) - 1) + [True])


def _union(boxes) -> tuple[float, float, float, float]:
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))


def count_crops(item, rng) -> Trace | None:
    boxes, s, n = item.meta["boxes"], item.subject, item.answer
    final = f"I count {n} {s}.\n\n{boxed(n)}"
    if len(boxes) <= 3:
        turns = [f"I will zoom in on each of the {s}, one at a time.\n\n{crop_call(noisy_box(rng, boxes[0], 0.01))}"]
        turns += [f"I will zoom in on the next one.\n\n{crop_call(noisy_box(rng, b, 0.01))}" for b in boxes[1:]]
        return Trace("count_crops", turns + [final], [True] * (len(turns) + 1))
    region = _union(boxes)
    if region[2] - region[0] > 0.75 or region[3] - region[1] > 0.75:
        return None
    return Trace("count_crops", [f"I will zoom in on the region that holds the {s}.\n\n"
                                 f"{crop_call(noisy_box(rng, region, 0.01))}", final], [True, True])


def relation(item, rng) -> Trace:
    (b1, b2), (first, second), a = item.meta["boxes"], item.subject.split("|"), item.answer
    x1, x2 = (b1[0] + b1[2]) / 2, (b2[0] + b2[2]) / 2
    return Trace("relation", [
        f"I will find the {first}.\n\n{crop_call(noisy_box(rng, b1, 0.01))}",
        f"I will find the {second}.\n\n{crop_call(noisy_box(rng, b2, 0.01))}",
        f"The {first} is at x = {x1:.2f} and the {second} at x = {x2:.2f}, so the {first} is to the {a} of "
        f"the {second}.\n\n{boxed(a)}"], [True, True, True])


def search_trace(item, rng, colour_fix_rate: float = 0.35, crop_rate: float = 0.8) -> Trace | None:
    """The new kind for a varied item, or None to fall back to the original kinds."""
    m = item.meta
    if item.category == "zoom_needed":
        if m.get("absent"):
            return not_found(item, rng)
        if m.get("distractors") and rng.random() < colour_fix_rate:  # look-alikes never take the asked colour
            return colour_fix(item, rng)
        return two_step(item, rng) if needs_two_steps(item) else None
    if item.category == "counting" and m.get("boxes") and rng.random() < crop_rate:
        return count_crops(item, rng)
    if item.category == "relative" and m.get("boxes") and rng.random() < crop_rate:
        return relation(item, rng)
    return None
