"""Procedural pictures with known ground truth: cluttered scenes, glyph tags, large shapes, videos.

Pure drawing functions of a seeded `numpy.random.Generator`, so every item is reproducible from
its seed. The glyph on a tag is drawn large enough to read after a crop and small enough to be a
blur at the tiny preset's overview resolution (tests measure both heights). Clutter uses muted
colours so that a tag's saturated border stays a visible blob in the overview: the model can see
*where* to zoom before it can see *what* is written.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

GLYPHS = "23457AEHKX"
"""Few, visually distinct classes, so a tiny model can learn to read them."""

TAG_COLORS = {"red": (220, 30, 30), "blue": (30, 70, 230), "green": (20, 170, 40)}
SHAPE_COLORS = {"red": (215, 40, 40), "green": (30, 160, 50), "blue": (40, 80, 220),
                "yellow": (235, 205, 30), "purple": (140, 50, 180)}
SHAPES = ("circle", "square", "triangle")


@dataclass
class Tag:
    color: str
    glyph: str
    box: tuple[int, int, int, int]  # pixels, the tag's outer border
    glyph_box: tuple[int, int, int, int]  # pixels, the ink of the glyph


def font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def rgb(c) -> tuple[int, int, int]:
    return tuple(int(v) for v in c)


def background(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A muted 2D gradient (warmer to the right, bluer to the bottom, like light and sky) with
    low-contrast clutter (rectangles, ellipses, lines).

    The gradient's fixed directions give every spot a colour that hints at where it is: a cue a
    tiny vision tower without absolute position embeddings can use to name a box's coordinates.
    """
    base = rng.integers(105, 150, 3).astype(np.float32)
    gx = np.array([70, 10, -50], np.float32) + rng.integers(-12, 13, 3)
    gy = np.array([-30, -45, 60], np.float32) + rng.integers(-12, 13, 3)
    xs = np.linspace(-0.5, 0.5, width, dtype=np.float32)[None, :, None]
    ys = np.linspace(-0.5, 0.5, height, dtype=np.float32)[:, None, None]
    arr = np.clip(base + gx * xs + gy * ys, 0, 255)
    img = Image.fromarray(arr.astype(np.uint8))
    clutter(img, rng)
    return img


def clutter(img: Image.Image, rng: np.random.Generator, scale: float = 1.0, n: tuple[int, int] = (25, 45)) -> None:
    """Low-contrast greyish marks (rectangles, ellipses, lines), sized by `scale`: never a saturated blob."""
    width, height = img.size
    d = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(*n))):
        col = rgb(np.clip(rng.integers(70, 190) + rng.integers(-25, 26, 3), 0, 255))
        x0, y0 = int(rng.integers(-40, width)), int(rng.integers(-40, height))
        w, h = int(rng.integers(20, 160) * scale), int(rng.integers(20, 160) * scale)
        kind = rng.integers(0, 3)
        if kind == 0:
            d.rectangle([x0, y0, x0 + w, y0 + h], fill=col)
        elif kind == 1:
            d.ellipse([x0, y0, x0 + w, y0 + h], fill=col)
        else:
            d.line([x0, y0, x0 + w, y0 + h], fill=col, width=max(1, int(rng.integers(3, 10) * scale)))


def draw_glyph_tag(img: Image.Image, rng: np.random.Generator, color: str, glyph: str,
                   glyph_px: int, avoid: list[tuple[int, int, int, int]] | None = None,
                   margin: float = 0.04) -> Tag:
    """A white tag with a thick coloured border and a black glyph, at a random free spot."""
    d = ImageDraw.Draw(img)
    f = font(glyph_px)
    gx0, gy0, gx1, gy1 = d.textbbox((0, 0), glyph, font=f, stroke_width=max(1, glyph_px // 12))
    pad, border = glyph_px // 3, max(4, glyph_px // 5)
    tw, th = gx1 - gx0 + 2 * (pad + border), gy1 - gy0 + 2 * (pad + border)
    W, H = img.size
    for _ in range(50):
        x0 = int(rng.integers(int(margin * W), int(W * (1 - margin)) - tw))
        y0 = int(rng.integers(int(margin * H), int(H * (1 - margin)) - th))
        box = (x0, y0, x0 + tw, y0 + th)
        if not any(overlaps(box, a, 20) for a in (avoid or [])):
            break
    d.rectangle(box, fill=TAG_COLORS[color])
    d.rectangle([box[0] + border, box[1] + border, box[2] - border, box[3] - border], fill=(250, 250, 250))
    ox, oy = box[0] + border + pad - gx0, box[1] + border + pad - gy0
    d.text((ox, oy), glyph, font=f, fill=(0, 0, 0), stroke_width=max(1, glyph_px // 12), stroke_fill=(0, 0, 0))
    gb = d.textbbox((ox, oy), glyph, font=f, stroke_width=max(1, glyph_px // 12))
    return Tag(color=color, glyph=glyph, box=box, glyph_box=tuple(int(v) for v in gb))


def overlaps(a, b, gap: int = 0) -> bool:
    return not (a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1])


def draw_shape(d: ImageDraw.ImageDraw, shape: str, box: tuple[int, int, int, int], fill) -> None:
    x0, y0, x1, y1 = box
    if shape == "circle":
        d.ellipse(box, fill=fill)
    elif shape == "square":
        d.rectangle(box, fill=fill)
    else:
        d.polygon([((x0 + x1) // 2, y0), (x1, y1), (x0, y1)], fill=fill)


def ink_height(img: Image.Image, box: tuple[int, int, int, int], threshold: int = 110) -> int:
    """Rows of `box` (in img's pixels) holding dark glyph ink: the glyph's measured pixel height.

    A blurred glyph loses its dark core, so few rows stay below the threshold; that is the
    measure the tests use for "unreadable" versus "readable".
    """
    arr = np.asarray(img.convert("L").crop(box)).astype(np.int16)
    rows = (arr < threshold).any(axis=1)
    return int(rows.sum())


def scale_box(box, sx: float, sy: float) -> tuple[int, int, int, int]:
    return (int(box[0] * sx), int(box[1] * sy), int(np.ceil(box[2] * sx)), int(np.ceil(box[3] * sy)))
