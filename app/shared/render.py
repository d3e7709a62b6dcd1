"""Pictures the app shows: boxes drawn on images, a crop beside its source, frame strips.

Pure PIL functions of images and numbers, so tests can check pixels and the app, the Inspect
replay and the README screenshots all draw the same thing.
"""
from __future__ import annotations

from typing import Sequence

from PIL import Image, ImageDraw

BOX_COLORS = [(255, 59, 48), (0, 122, 255), (52, 199, 89), (255, 149, 0), (175, 82, 222), (255, 204, 0)]
PANEL_HEIGHT = 360
LABEL_BG = (20, 20, 20)


def color(i: int) -> tuple[int, int, int]:
    return BOX_COLORS[i % len(BOX_COLORS)]


def fit_height(image: Image.Image, height: int) -> tuple[Image.Image, float]:
    """Scale to a height (never above 2x), returning the image and the scale factor."""
    scale = min(height / image.height, 2.0)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.convert("RGB").resize(size, Image.Resampling.BILINEAR), scale


def _label(draw: ImageDraw.ImageDraw, xy: tuple[int, int], text: str, fill) -> None:
    x, y = xy
    l, t, r, b = draw.textbbox((x, y), text)
    draw.rectangle([l - 2, t - 2, r + 2, b + 2], fill=LABEL_BG)
    draw.text((x, y), text, fill=fill)


def draw_boxes(image: Image.Image, boxes: Sequence[Sequence[float]], labels: Sequence[str] | None = None,
               width: int | None = None, first_color: int = 0) -> Image.Image:
    """A copy of the image with pixel boxes [x0, y0, x1, y1] outlined, each in its own colour."""
    out = image.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    width = width or max(2, round(max(out.size) / 250))
    for i, box in enumerate(boxes):
        x0, y0, x1, y1 = (float(v) for v in box)
        c = color(first_color + i)
        draw.rectangle([x0, y0, x1, y1], outline=c, width=width)
        if labels:
            _label(draw, (int(x0) + width + 1, max(0, int(y0) - 14) if y0 >= 14 else int(y0) + width + 1),
                   labels[i], c)
    return out


def crop_beside_source(source: Image.Image, box_px: Sequence[int], crop: Image.Image, step_color: int = 0,
                       height: int = PANEL_HEIGHT, caption: str | None = None) -> Image.Image:
    """The source with the box drawn (left) and what the model saw (right), on one picture."""
    left, scale = fit_height(source, height)
    left = draw_boxes(left, [[v * scale for v in box_px]], first_color=step_color, width=3)
    right, _ = fit_height(crop, height)
    gap = 12
    out = Image.new("RGB", (left.width + gap + right.width, height + (22 if caption else 0)), (255, 255, 255))
    out.paste(left, (0, 0))
    out.paste(right, (left.width + gap, (height - right.height) // 2))
    draw = ImageDraw.Draw(out)
    draw.rectangle([left.width + gap, (height - right.height) // 2, out.width - 1,
                    (height - right.height) // 2 + right.height - 1], outline=color(step_color), width=3)
    if caption:
        draw.text((4, height + 5), caption, fill=(30, 30, 30))
    return out


def frame_strip(frames: Sequence[Image.Image], labels: Sequence[str], height: int = 150,
                highlight: Sequence[bool] | None = None) -> Image.Image:
    """Frames side by side with a caption under each (e.g. "#3 · 1.5 s"); highlighted ones get a frame."""
    tiles = [fit_height(f, height)[0] for f in frames]
    gap, cap = 6, 18
    out = Image.new("RGB", (sum(t.width for t in tiles) + gap * (len(tiles) + 1), height + cap + 2 * gap),
                    (250, 250, 250))
    draw = ImageDraw.Draw(out)
    x = gap
    for i, (tile, label) in enumerate(zip(tiles, labels)):
        out.paste(tile, (x, gap))
        if highlight is None or highlight[i]:
            draw.rectangle([x - 2, gap - 2, x + tile.width + 1, gap + tile.height + 1], outline=color(1), width=3)
        draw.text((x + 2, gap + height + 3), label, fill=(20, 20, 20))
        x += tile.width + gap
    return out


def frame_label(number: int, seconds: float | None) -> str:
    return f"#{number}" + (f" · {seconds:.1f} s" if seconds is not None else "")
