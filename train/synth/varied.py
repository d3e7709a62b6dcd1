"""The opt-in varied generator: the original categories and wording, on pictures that vary as users' do.

`Variety` says what is randomised; `make_varied(category, seed, item_id, variety)` returns the same
`Item` shape as `tasks.make_item`, with extra meta for the new trace kinds (every tag's box and colour,
the counted circles, the two related shapes). `CONTROL` draws pictures like the original generator's
(a look-alike, not the same pixels); `TRAIN` randomises everything; the shift suite (`shifts`) changes
one field of CONTROL at a time.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import ImageDraw

from core.media import overview_indices
from train.synth import looks as L
from train.synth import scenes as S
from train.synth.tasks import (OVERVIEW, VIDEO_FPS, VIDEO_FRAMES, VIDEO_SIZE, Item, canvas_size, drifting_frames,
                               norm_box)

BASE_SIDE = 1120
"""The original canvas's typical long side: sizes given "at the original scale" are multiplied by long/1120."""


@dataclass(frozen=True)
class Variety:
    long_side: tuple[int, int] | None = None  # canvas long side range, px (log-uniform); None: the original 896-1344
    aspect: tuple[float, float] = (1.0, 1.0)  # long/short side ratio range
    portrait_rate: float = 0.5  # share of portrait canvases (when aspect > 1)
    size: tuple[int, int] | None = None  # a fixed (width, height), overriding long_side/aspect
    backgrounds: tuple[str, ...] = ("ramp",)  # drawn uniformly from these (looks.BACKGROUNDS)
    glyph_px: tuple[int, int] = (26, 31)  # zoom-needed glyph height range, at the original scale
    glyph_scaled_rate: float = 1.0  # share of items whose glyph grows with the canvas (else same px as the original)
    fonts: str = "default"  # default (PIL's) | all (every installed font) | others (all but PIL's)
    rotation: float = 0.0  # tags rotate uniformly within +- this many degrees
    jpeg: tuple[int, int] | None = None  # JPEG quality range, applied to a jpeg_rate share of pictures
    jpeg_rate: float = 1.0
    distractor_tags: tuple[int, int] = (0, 0)  # look-alike tags of other colours (min, max inclusive)
    glyph_marks: tuple[int, int] = (0, 0)  # glyph-like marks without a tag
    extra_shapes: tuple[int, int] = (0, 0)  # saturated shapes (the colours the shape questions use)
    placements: tuple[str, ...] = ("anywhere",)  # anywhere | edge | corner, for the asked tag
    absent_rate: float = 0.0  # zoom-needed items whose asked colour is not there (answer "none"; training only)
    video_frames: tuple[int, int] | None = None  # source frames range; None: the original 48
    video_fps: tuple[float, float] | None = None  # None: the original 8
    sign_frames: tuple[int, int] | None = None  # source frames showing the sign; None: the original ~3 overview frames
    sign_edge_rate: float = 0.0  # share of videos whose sign shows in the first or last frames
    video_sizes: tuple[tuple[int, int], ...] = (VIDEO_SIZE,)  # drawn uniformly


CONTROL = Variety()
TRAIN = Variety(long_side=(400, 4200), aspect=(1.0, 2.2), backgrounds=L.BACKGROUNDS, glyph_px=(16, 44),
                glyph_scaled_rate=0.5, fonts="all", rotation=8.0, jpeg=(15, 95), jpeg_rate=0.4,
                distractor_tags=(0, 3), glyph_marks=(0, 4), extra_shapes=(0, 3),
                placements=("anywhere", "anywhere", "anywhere", "edge", "corner"), absent_rate=0.04,
                video_frames=(6, 64), video_fps=(4.0, 30.0), sign_frames=(1, 10), sign_edge_rate=0.25,
                video_sizes=(VIDEO_SIZE, (252, 336), (480, 270), (320, 320)))
PRESETS = {"control": CONTROL, "train": TRAIN}


def _between(rng, lo_hi) -> int:
    return int(rng.integers(lo_hi[0], lo_hi[1] + 1))


class Canvas:
    """A new picture drawn as `v` says, with the scale (long side / 1120) that sizes its objects."""

    def __init__(self, rng: np.random.Generator, v: Variety) -> None:
        if v.size:
            w, h = v.size
        elif v.long_side is None:
            w, h = canvas_size(rng)
        else:
            long = int(np.exp(rng.uniform(np.log(v.long_side[0]), np.log(v.long_side[1]))))
            short = int(long / rng.uniform(*v.aspect))
            w, h = (short, long) if rng.random() < v.portrait_rate else (long, short)
        self.rng, self.v, self.w, self.h = rng, v, w, h
        self.scale = max(w, h) / BASE_SIDE
        self.bg = str(rng.choice(list(v.backgrounds)))
        self.img = L.background(rng, w, h, self.bg)
        fonts = L.installed_fonts()
        pool = {"default": fonts[:1], "others": fonts[1:] or fonts}.get(v.fonts, fonts)
        self.font = str(rng.choice(list(pool)))
        self.avoid: list = []
        self.meta = {"background": self.bg, "canvas": [w, h], "font": self.font.rsplit("/", 1)[-1] or "default"}

    def px(self, size: float) -> int:
        return max(1, int(size * self.scale))

    def glyph_px(self) -> int:
        g = float(self.rng.uniform(*self.v.glyph_px))
        scaled = self.rng.random() < self.v.glyph_scaled_rate
        self.meta["glyph_scaled"] = bool(scaled)
        return max(10, int(g * self.scale) if scaled else int(g))

    def angle(self) -> float:
        return round(float(self.rng.uniform(-self.v.rotation, self.v.rotation)), 1) if self.v.rotation else 0.0

    def tag(self, color: str, glyph: str, glyph_px: int, placement: str = "anywhere") -> tuple:
        box, gbox = L.draw_tag(self.img, self.rng, L.DISTRACTOR_COLORS[color], glyph, glyph_px, self.font,
                               self.angle(), placement, self.avoid)
        self.avoid.append(box)
        return box, gbox

    def look_alikes(self, not_color: str, glyph_px: int, tags: tuple[int, int] | None = None) -> list[dict]:
        """Distractor tags of other colours (`tags` overrides the variety's count range) and glyph-like
        marks, kept clear of what is placed."""
        out = []
        others = [c for c in L.DISTRACTOR_COLORS if c != not_color]
        for _ in range(_between(self.rng, tags or self.v.distractor_tags)):
            color = str(self.rng.choice(others))
            box, _ = self.tag(color, str(self.rng.choice(list(S.GLYPHS))), glyph_px)
            out.append({"color": color, "box": list(box)})
        for _ in range(_between(self.rng, self.v.glyph_marks)):
            self.avoid.append(L.glyph_mark(self.img, self.rng, glyph_px, self.font, self.avoid))
        return out

    def shapes(self) -> None:
        d = ImageDraw.Draw(self.img)
        for _ in range(_between(self.rng, self.v.extra_shapes)):
            side = self.px(float(self.rng.uniform(40, 110)))
            box = L.place(self.rng, (side, side), (self.w, self.h), "anywhere", self.avoid, self.px(20))
            shape = str(self.rng.choice(S.SHAPES))
            S.draw_shape(d, shape, box, S.SHAPE_COLORS[str(self.rng.choice(list(S.SHAPE_COLORS)))])
            self.avoid.append(box)

    def finish(self):
        if self.v.jpeg and self.rng.random() < self.v.jpeg_rate:
            q = _between(self.rng, self.v.jpeg)
            self.img = L.jpeg(self.img, q)
            self.meta["jpeg"] = q
        return self.img

    def norm(self, box) -> tuple[float, float, float, float]:
        return norm_box(box, self.w, self.h)


def zoom_needed(rng: np.random.Generator, item_id: str, v: Variety) -> Item:
    c = Canvas(rng, v)
    color = str(rng.choice(list(S.TAG_COLORS)))
    glyph = str(rng.choice(list(S.GLYPHS)))
    gpx = c.glyph_px()
    question = f"What is written on the {color} tag?"
    if rng.random() < v.absent_rate:  # only other colours' tags: the honest answer is that there is none
        tags = c.look_alikes(color, gpx, (max(1, v.distractor_tags[0]), max(2, v.distractor_tags[1])))
        c.shapes()
        return Item(item_id, "zoom_needed", question, "none", image=c.finish(), subject=f"{color} tag",
                    meta={**c.meta, "absent": True, "distractors": tags, "color": color, "variety": True})
    box, gbox = c.tag(color, glyph, gpx, str(rng.choice(list(v.placements))))
    tags = c.look_alikes(color, gpx)
    c.shapes()
    return Item(item_id, "zoom_needed", question, glyph, image=c.finish(), target=c.norm(box), subject=f"{color} tag",
                meta={**c.meta, "tag_box": list(box), "glyph_box": list(gbox), "distractors": tags, "color": color,
                      "glyph_px": gpx, "variety": True})


def zoom_optional(rng: np.random.Generator, item_id: str, v: Variety) -> Item:
    c = Canvas(rng, v)
    w, h = c.w, c.h
    shape, color = str(rng.choice(S.SHAPES)), str(rng.choice(list(S.SHAPE_COLORS)))
    side = min(c.px(float(rng.uniform(220, 380))), w // 2 - c.px(70), h - c.px(60))
    left = bool(rng.integers(0, 2))
    m = c.px(30)
    lo = m if left else w // 2 + m
    x0 = int(rng.integers(lo, max(lo + 1, (w // 2 if left else w) - side - m)))
    y0 = int(rng.integers(m, max(m + 1, h - side - m)))
    box = (x0, y0, x0 + side, y0 + side)
    S.draw_shape(ImageDraw.Draw(c.img), shape, box, S.SHAPE_COLORS[color])
    c.avoid.append(box)
    if rng.random() < 0.5:
        c.tag(str(rng.choice(list(S.TAG_COLORS))), str(rng.choice(list(S.GLYPHS))), c.glyph_px())
    c.look_alikes("", c.px(28))
    c.shapes()
    if rng.random() < 0.5:
        q, a, kind = f"What colour is the large {shape}?", color, "colour"
    else:
        a = "left" if (box[0] + box[2]) / 2 < w / 2 else "right"
        q, kind = f"Is the large {shape} on the left or the right side?", "side"
    return Item(item_id, "zoom_optional", q, a, image=c.finish(), target=c.norm(box), subject=f"large {shape}",
                meta={**c.meta, "kind": kind, "color": color, "shape": shape, "variety": True})


def counting(rng: np.random.Generator, item_id: str, v: Variety) -> Item:
    c = Canvas(rng, v)
    d = ImageDraw.Draw(c.img)
    color = str(rng.choice(list(S.SHAPE_COLORS)))
    others = [k for k in S.SHAPE_COLORS if k != color]
    n = int(rng.integers(1, 6))
    boxes = []
    for k in range(n + int(rng.integers(0, 4))):
        r = c.px(float(rng.uniform(40, 70)))
        box = L.place(rng, (r, r), (c.w, c.h), "anywhere", c.avoid, c.px(30))
        c.avoid.append(box)
        d.ellipse(box, fill=S.SHAPE_COLORS[color if k < n else str(rng.choice(others))])
        if k < n:
            boxes.append([round(x, 4) for x in c.norm(box)])
    c.look_alikes("", c.px(28))
    return Item(item_id, "counting", f"How many {color} circles are there?", str(n), image=c.finish(),
                subject=f"{color} circles", meta={**c.meta, "color": color, "boxes": boxes, "variety": True})


def relative(rng: np.random.Generator, item_id: str, v: Variety) -> Item:
    c = Canvas(rng, v)
    w, h = c.w, c.h
    d = ImageDraw.Draw(c.img)
    (s1, s2), (c1, c2) = rng.choice(S.SHAPES, 2, replace=True), rng.choice(list(S.SHAPE_COLORS), 2, replace=False)
    size = min(c.px(float(rng.uniform(120, 200))), w // 2 - c.px(60), h - c.px(60))
    m = c.px(30)
    y1, y2 = (int(rng.integers(m, max(m + 1, h - size - m))) for _ in range(2))
    xa = int(rng.integers(m, max(m + 1, w // 2 - size - m)))
    xb = int(rng.integers(w // 2 + m, max(w // 2 + m + 1, w - size - m)))
    first_left = bool(rng.integers(0, 2))
    x1, x2 = (xa, xb) if first_left else (xb, xa)
    b1, b2 = (x1, y1, x1 + size, y1 + size), (x2, y2, x2 + size, y2 + size)
    S.draw_shape(d, str(s1), b1, S.SHAPE_COLORS[str(c1)])
    S.draw_shape(d, str(s2), b2, S.SHAPE_COLORS[str(c2)])
    c.avoid += [b1, b2]
    c.look_alikes("", c.px(28))
    a = "left" if first_left else "right"
    return Item(item_id, "relative", f"Is the {c1} {s1} to the left or to the right of the {c2} {s2}?", a,
                image=c.finish(), subject=f"{c1} {s1}|{c2} {s2}",
                meta={**c.meta, "boxes": [[round(x, 4) for x in c.norm(b)] for b in (b1, b2)], "variety": True})


def video(rng: np.random.Generator, item_id: str, v: Variety) -> Item:
    """The original video (drifting shapes, a red sign) with varied length, fps, size, background and sign timing."""
    w, h = v.video_sizes[int(rng.integers(0, len(v.video_sizes)))]
    n_src = _between(rng, v.video_frames) if v.video_frames else VIDEO_FRAMES
    fps = round(float(rng.uniform(*v.video_fps)), 1) if v.video_fps else VIDEO_FPS
    bg = str(rng.choice(list(v.backgrounds)))
    base = L.background(rng, w, h, bg)
    idx = overview_indices(n_src, OVERVIEW)
    n_over = len(idx)
    if v.sign_frames is None:  # the original timing: 3 overview frames, a frame of slack each side
        k = int(rng.integers(2, n_over - 2)) if n_over > 4 else 1
        lo, hi = idx[k - 1] - 1, idx[min(k + 1, n_over - 1)] + 1
    else:
        if rng.random() < v.sign_edge_rate:
            k = 1 if rng.random() < 0.5 else n_over
        else:
            k = int(rng.integers(1, n_over + 1))
        dur = _between(rng, v.sign_frames)
        start = idx[k - 1] - int(rng.integers(0, dur))
        lo = max(0, min(start, n_src - dur))
        hi = lo + dur - 1
    lo, hi = max(0, lo), min(n_src - 1, hi)
    visible = [j + 1 for j, i in enumerate(idx) if lo <= i <= hi]
    if len(visible) > 4:  # a long sign in a short clip: keep it to 4 overview frames, as the trace names them all
        visible, hi = visible[:4], idx[visible[3] - 1]
    glyph = str(rng.choice(list(S.GLYPHS)))
    sign = base.copy()
    fonts = L.installed_fonts()
    font = fonts[0] if v.fonts == "default" else str(rng.choice(list(fonts)))
    gpx = int(rng.integers(22, 26))
    box, gbox = L.draw_tag(sign, rng, S.TAG_COLORS["red"], glyph, gpx, font, 0.0, "anywhere", [])
    frames = drifting_frames(rng, base, sign, box, n_src, lo, hi)
    return Item(item_id, "video", "What is written on the red sign that appears in the video?", glyph,
                frames=frames, visible_frames=visible, target=norm_box(box, w, h), subject="red sign",
                meta={"tag_box": list(box), "glyph_box": list(gbox), "source_frames": [lo, hi], "fps": fps,
                      "background": bg, "n_frames": n_src, "variety": True})


MAKERS = {"zoom_needed": zoom_needed, "zoom_optional": zoom_optional, "counting": counting,
          "relative": relative, "video": video}


def make_varied(category: str, seed: int, item_id: str, variety: Variety) -> Item:
    return MAKERS[category](np.random.default_rng(seed), item_id, variety)
