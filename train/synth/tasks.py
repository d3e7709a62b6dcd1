"""The synthetic task families, each a pure function of a seed returning an `Item` with ground truth.

* zoom_needed  - V*-like: "What is written on the red tag?"; the glyph is ~5 px in the overview,
                 ~20 px after a crop around the tag (the tag's coloured border is visible in both).
* zoom_optional - answerable at low resolution: the colour of the large shape, or its side.
* counting     - TallyQA-like: how many medium circles of one colour.
* relative     - V*-like relative position of two large shapes.
* video        - a sign with a glyph shows in ~3 of the 16 overview frames; readable only in the
                 selected frames at full resolution.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

from core.media import overview_indices
from train.synth import scenes as S

CATEGORIES = ("zoom_needed", "zoom_optional", "counting", "relative", "video")

VIDEO_SIZE = (336, 252)
VIDEO_FRAMES = 48
VIDEO_FPS = 8.0
OVERVIEW = 16


@dataclass
class Item:
    id: str
    category: str
    question: str
    answer: str
    image: Image.Image | None = None
    frames: list[Image.Image] | None = None  # video frames at full resolution
    target: tuple[float, float, float, float] | None = None  # normalized box of what to zoom on
    visible_frames: list[int] = field(default_factory=list)  # 1-based overview frames showing the answer
    subject: str = ""  # words reused by the trace templates ("red tag", "large circle")
    meta: dict = field(default_factory=dict)


def canvas_size(rng: np.random.Generator) -> tuple[int, int]:
    return int(rng.integers(896, 1345)), int(rng.integers(896, 1345))


def norm_box(box, width: int, height: int) -> tuple[float, float, float, float]:
    return (box[0] / width, box[1] / height, box[2] / width, box[3] / height)


def zoom_needed(rng: np.random.Generator, item_id: str) -> Item:
    w, h = canvas_size(rng)
    img = S.background(rng, w, h)
    color = str(rng.choice(list(S.TAG_COLORS)))
    glyph = str(rng.choice(list(S.GLYPHS)))
    tag = S.draw_glyph_tag(img, rng, color, glyph, glyph_px=int(rng.integers(26, 31)))
    return Item(item_id, "zoom_needed", f"What is written on the {color} tag?", glyph, image=img,
                target=norm_box(tag.box, w, h), subject=f"{color} tag",
                meta={"tag_box": list(tag.box), "glyph_box": list(tag.glyph_box)})


def _large_shape(rng, img) -> tuple[str, str, tuple[int, int, int, int]]:
    w, h = img.size
    shape, color = str(rng.choice(S.SHAPES)), str(rng.choice(list(S.SHAPE_COLORS)))
    side = min(int(rng.integers(220, 380)), w // 2 - 71)  # fits its half; the cap leaves every item that fitted as it was
    left = bool(rng.integers(0, 2))
    x0 = int(rng.integers(30, w // 2 - side - 40)) if left else int(rng.integers(w // 2 + 40, w - side - 30))
    y0 = int(rng.integers(30, h - side - 30))
    box = (x0, y0, x0 + side, y0 + side)
    S.draw_shape(ImageDraw.Draw(img), shape, box, S.SHAPE_COLORS[color])
    return shape, color, box


def zoom_optional(rng: np.random.Generator, item_id: str) -> Item:
    w, h = canvas_size(rng)
    img = S.background(rng, w, h)
    shape, color, box = _large_shape(rng, img)
    if rng.random() < 0.5:  # a tag is there too: the question, not the picture, decides whether to zoom
        S.draw_glyph_tag(img, rng, str(rng.choice(list(S.TAG_COLORS))), str(rng.choice(list(S.GLYPHS))),
                         glyph_px=28, avoid=[box])
    if rng.random() < 0.5:
        q, a, kind = f"What colour is the large {shape}?", color, "colour"
    else:
        side = "left" if (box[0] + box[2]) / 2 < w / 2 else "right"
        q, a, kind = f"Is the large {shape} on the left or the right side?", side, "side"
    return Item(item_id, "zoom_optional", q, a, image=img, target=norm_box(box, w, h),
                subject=f"large {shape}", meta={"kind": kind, "color": color, "shape": shape})


def counting(rng: np.random.Generator, item_id: str) -> Item:
    w, h = canvas_size(rng)
    img = S.background(rng, w, h)
    d = ImageDraw.Draw(img)
    color = str(rng.choice(list(S.SHAPE_COLORS)))
    others = [c for c in S.SHAPE_COLORS if c != color]
    n = int(rng.integers(1, 6))
    placed: list[tuple[int, int, int, int]] = []
    for k in range(n + int(rng.integers(0, 4))):
        col = color if k < n else str(rng.choice(others))
        for _ in range(100):
            r = int(rng.integers(40, 70))
            x, y = int(rng.integers(20, w - r - 20)), int(rng.integers(20, h - r - 20))
            box = (x, y, x + r, y + r)
            if not any(S.overlaps(box, p, 30) for p in placed):
                break
        placed.append(box)
        d.ellipse(box, fill=S.SHAPE_COLORS[col])
    return Item(item_id, "counting", f"How many {color} circles are there?", str(n), image=img,
                subject=f"{color} circles", meta={"color": color})


def relative(rng: np.random.Generator, item_id: str) -> Item:
    w, h = canvas_size(rng)
    img = S.background(rng, w, h)
    d = ImageDraw.Draw(img)
    (s1, s2), (c1, c2) = rng.choice(S.SHAPES, 2, replace=True), rng.choice(list(S.SHAPE_COLORS), 2, replace=False)
    size = int(rng.integers(120, 200))
    y1, y2 = int(rng.integers(30, h - size - 30)), int(rng.integers(30, h - size - 30))
    xa = int(rng.integers(30, w // 2 - size - 30))
    xb = int(rng.integers(w // 2 + 30, w - size - 30))
    first_left = bool(rng.integers(0, 2))
    x1, x2 = (xa, xb) if first_left else (xb, xa)
    S.draw_shape(d, str(s1), (x1, y1, x1 + size, y1 + size), S.SHAPE_COLORS[str(c1)])
    S.draw_shape(d, str(s2), (x2, y2, x2 + size, y2 + size), S.SHAPE_COLORS[str(c2)])
    a = "left" if first_left else "right"
    q = f"Is the {c1} {s1} to the left or to the right of the {c2} {s2}?"
    return Item(item_id, "relative", q, a, image=img, subject=f"{c1} {s1}|{c2} {s2}")


def drifting_frames(rng: np.random.Generator, base, sign, sign_box, n: int, lo: int, hi: int) -> list:
    """n frames of four drifting muted discs over `base`, showing `sign` (the base with the sign drawn)
    in source frames lo..hi; the discs never cover the sign."""
    w, h = base.size
    movers = [(int(rng.integers(0, w)), int(rng.integers(0, h)), int(rng.integers(-4, 5)), int(rng.integers(-3, 4)),
               S.rgb(rng.integers(70, 190, 3))) for _ in range(4)]
    frames = []
    for t in range(n):
        f = (sign if lo <= t <= hi else base).copy()
        d = ImageDraw.Draw(f)
        for x, y, vx, vy, col in movers:
            cx, cy = (x + vx * t) % w, (y + vy * t) % h
            if not S.overlaps((cx - 18, cy - 18, cx + 18, cy + 18), sign_box):
                d.ellipse([cx - 18, cy - 18, cx + 18, cy + 18], fill=col)
        frames.append(f)
    return frames


def video(rng: np.random.Generator, item_id: str) -> Item:
    """Drifting muted shapes; a red sign with a glyph shows during 3 consecutive overview frames."""
    w, h = VIDEO_SIZE
    base = S.background(rng, w, h)
    idx = overview_indices(VIDEO_FRAMES, OVERVIEW)
    k = int(rng.integers(2, OVERVIEW - 2))  # 1-based first overview frame showing the sign
    visible = [k, k + 1, k + 2]
    lo, hi = idx[k - 1] - 1, idx[k + 1] + 1  # source frames showing it (a frame of slack each side)
    glyph = str(rng.choice(list(S.GLYPHS)))
    sign = base.copy()
    tag = S.draw_glyph_tag(sign, rng, "red", glyph, glyph_px=int(rng.integers(22, 26)), margin=0.06)
    frames = drifting_frames(rng, base, sign, tag.box, VIDEO_FRAMES, lo, hi)
    return Item(item_id, "video", "What is written on the red sign that appears in the video?", glyph,
                frames=frames, visible_frames=visible, target=norm_box(tag.box, w, h), subject="red sign",
                meta={"tag_box": list(tag.box), "glyph_box": list(tag.glyph_box), "source_frames": [lo, hi]})


MAKERS = {"zoom_needed": zoom_needed, "zoom_optional": zoom_optional, "counting": counting,
          "relative": relative, "video": video}


MIX = {"zoom_needed": 0.36, "zoom_optional": 0.24, "counting": 0.1, "relative": 0.1, "video": 0.2}
"""Share of each category in a split (the test split rounds up to whole items per category)."""


def make_item(category: str, seed: int, item_id: str) -> Item:
    """The item of a seed (the original generator; `varied.make_varied` draws the opt-in varied one)."""
    return MAKERS[category](np.random.default_rng(seed), item_id)
