"""What a user's picture varies in: canvas shape, background, font, tag drawing, JPEG, look-alike marks.

Pure drawing functions of a seeded `numpy.random.Generator` (like `scenes`), used only by the opt-in
varied generator (`varied`); the original generator's pictures never pass through here.
"""
from __future__ import annotations

import io
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from train.synth import scenes as S

BACKGROUNDS = ("ramp", "flat", "white", "gradient", "noise", "texture", "photo")
"""`ramp` is the original generator's (muted, fixed-direction colour ramp with grey clutter)."""

FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts")
DISTRACTOR_COLORS = {**S.TAG_COLORS, "orange": (240, 130, 20), "purple": (140, 40, 190), "cyan": (20, 170, 190)}
"""Tag colours a look-alike may take: the asked-for colours (never the asked one) and a few others."""


@lru_cache(maxsize=1)
def installed_fonts() -> tuple[str, ...]:
    """Every TrueType/OpenType font file of the installed packages (system font folders, matplotlib's
    DejaVu set when matplotlib is installed) that draws the glyph set; sorted, so a seed picks the same
    font on machines with the same fonts. The PIL default ("") is always first."""
    dirs = [Path(d) for d in FONT_DIRS]
    try:
        import matplotlib

        dirs.append(Path(matplotlib.__file__).parent / "mpl-data" / "fonts" / "ttf")
    except ImportError:
        pass
    found = set()
    for d in dirs:
        if d.is_dir():
            found.update(str(p) for p in d.rglob("*") if p.suffix.lower() in (".ttf", ".otf"))
    usable = []
    for path in sorted(found):
        try:
            f = ImageFont.truetype(path, 20)
            if all(f.getbbox(g)[2] > f.getbbox(g)[0] for g in S.GLYPHS):
                usable.append(path)
        except OSError:
            continue
    return ("", *usable)


def load_font(path: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size) if not path else ImageFont.truetype(path, size)


# ---- backgrounds -----------------------------------------------------------------------------

def _lin(rng, w, h, c0, c1) -> np.ndarray:
    """A linear gradient from c0 to c1 in a random direction."""
    a = float(rng.uniform(0, 2 * np.pi))
    xs = np.linspace(-0.5, 0.5, w, dtype=np.float32)[None, :]
    ys = np.linspace(-0.5, 0.5, h, dtype=np.float32)[:, None]
    t = np.clip((np.cos(a) * xs + np.sin(a) * ys) / 0.71 + 0.5, 0, 1)[..., None]
    return np.asarray(c0, np.float32) * (1 - t) + np.asarray(c1, np.float32) * t


def _smooth_noise(rng, w, h, cells: int, amp: float) -> np.ndarray:
    small = rng.normal(0, amp, (max(2, h * cells // max(w, h)), max(2, w * cells // max(w, h)), 3)).astype(np.float32)
    up = Image.fromarray(np.clip(small + 128, 0, 255).astype(np.uint8)).resize((w, h), Image.BICUBIC)
    return np.asarray(up, np.float32) - 128


def _texture(rng, w, h) -> Image.Image:
    c0, c1 = rng.integers(60, 230, 3), rng.integers(60, 230, 3)
    img = Image.new("RGB", (w, h), S.rgb(c0))
    d = ImageDraw.Draw(img)
    step = int(rng.integers(8, 48)) * max(1, max(w, h) // 1200)
    kind = int(rng.integers(0, 4))
    if kind == 0:  # stripes
        for x in range(-h, w + h, 2 * step):
            d.polygon([(x, 0), (x + step, 0), (x + step + h, h), (x + h, h)], fill=S.rgb(c1))
    elif kind == 1:  # checker
        for y in range(0, h, step):
            for x in range((y // step % 2) * step, w, 2 * step):
                d.rectangle([x, y, x + step - 1, y + step - 1], fill=S.rgb(c1))
    elif kind == 2:  # dots
        for y in range(0, h, step):
            for x in range(0, w, step):
                d.ellipse([x, y, x + step // 2, y + step // 2], fill=S.rgb(c1))
    else:  # fabric-like noise
        arr = np.asarray(img, np.float32) + rng.normal(0, 28, (h, w, 1)).astype(np.float32)
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(1))
    return img


def _photo(rng, w, h) -> Image.Image:
    """A procedural outdoor-like scene: sky gradient, hills, ground, soft blobs, blur and sensor noise
    (drawn at most 1024 px long and scaled up, like a photo from a small sensor, which keeps 4000 px fast)."""
    fw, fh = w, h
    k = min(1.0, 1024 / max(w, h))
    w, h = max(8, int(w * k)), max(8, int(h * k))
    sky = _lin(rng, w, h, rng.integers(120, 220, 3), rng.integers(170, 250, 3))
    img = Image.fromarray(np.clip(sky, 0, 255).astype(np.uint8))
    d = ImageDraw.Draw(img)
    horizon = int(h * rng.uniform(0.35, 0.7))
    for _ in range(int(rng.integers(2, 5))):  # hills
        pts = [(0, h)] + [(int(x), int(horizon + rng.uniform(-0.15, 0.1) * h)) for x in np.linspace(0, w, 8)] + [(w, h)]
        d.polygon(pts, fill=S.rgb(rng.integers(40, 150, 3) * np.array([0.8, 1.0, 0.7])))
    for _ in range(int(rng.integers(15, 60))):  # trees, rocks, houses: soft blobs
        x, y = int(rng.integers(0, w)), int(rng.integers(horizon - h // 10, h))
        r = int(rng.integers(max(4, w // 100), max(8, w // 15)))
        tone = np.clip(rng.integers(40, 160) + rng.integers(-30, 31, 3), 0, 255)  # muted: no shape question's colour
        d.ellipse([x - r, y - 2 * r, x + r, y], fill=S.rgb(tone))
    img = img.filter(ImageFilter.GaussianBlur(max(1.0, w / 900))).resize((fw, fh), Image.BICUBIC)
    arr = np.asarray(img, np.float32) + 6 * rng.standard_normal((fh, fw, 1), dtype=np.float32)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def background(rng: np.random.Generator, w: int, h: int, kind: str) -> Image.Image:
    """A background of the given kind (BACKGROUNDS)."""
    scale = max(w, h) / 1120
    if kind == "ramp":
        if max(w, h) <= 1400:
            return S.background(rng, w, h)
        img = S.background(rng, w, h)  # its clutter is sized for ~1100 px: add some at this scale
        S.clutter(img, rng, scale, (10, 25))
        return img
    if kind == "white":
        return Image.new("RGB", (w, h), (255, 255, 255))
    if kind == "flat":
        img = Image.new("RGB", (w, h), S.rgb(rng.integers(40, 256, 3)))
    elif kind == "gradient":
        img = Image.fromarray(np.clip(_lin(rng, w, h, rng.integers(30, 250, 3), rng.integers(30, 250, 3)), 0, 255)
                              .astype(np.uint8))
    elif kind == "noise":
        base = rng.integers(70, 200, 3).astype(np.float32)
        arr = base + _smooth_noise(rng, w, h, int(rng.integers(4, 40)), float(rng.uniform(15, 45)))
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    elif kind == "texture":
        return _texture(rng, w, h)
    elif kind == "photo":
        return _photo(rng, w, h)
    else:
        raise ValueError(f"unknown background {kind!r}; choose one of {', '.join(BACKGROUNDS)}")
    if rng.random() < 0.7:
        S.clutter(img, rng, scale, (5, 40))
    return img


# ---- tags, marks, JPEG -----------------------------------------------------------------------

def render_tag(glyph: str, glyph_px: int, rgb: tuple[int, int, int], font_path: str = "",
               angle: float = 0.0) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """The original tag's drawing (coloured border, white inside, black glyph) in any font, rotated:
    an RGBA image and the glyph ink's box inside it."""
    f = load_font(font_path, glyph_px)
    stroke = max(1, glyph_px // 12)
    probe = ImageDraw.Draw(Image.new("L", (1, 1)))
    gx0, gy0, gx1, gy1 = probe.textbbox((0, 0), glyph, font=f, stroke_width=stroke)
    pad, border = glyph_px // 3, max(4, glyph_px // 5)
    tw, th = gx1 - gx0 + 2 * (pad + border), gy1 - gy0 + 2 * (pad + border)
    tag = Image.new("RGBA", (tw, th), (*rgb, 255))
    d = ImageDraw.Draw(tag)
    d.rectangle([border, border, tw - 1 - border, th - 1 - border], fill=(250, 250, 250, 255))
    ink = Image.new("L", (tw, th), 0)
    pos = (border + pad - gx0, border + pad - gy0)
    d.text(pos, glyph, font=f, fill=(0, 0, 0, 255), stroke_width=stroke, stroke_fill=(0, 0, 0, 255))
    ImageDraw.Draw(ink).text(pos, glyph, font=f, fill=255, stroke_width=stroke, stroke_fill=255)
    if angle:
        tag = tag.rotate(angle, resample=Image.BICUBIC, expand=True)
        ink = ink.rotate(angle, resample=Image.BICUBIC, expand=True)
    return tag, ink.point(lambda v: 255 if v > 96 else 0).getbbox() or (0, 0, 1, 1)


def place(rng: np.random.Generator, size: tuple[int, int], canvas: tuple[int, int], placement: str,
          avoid: list, gap: int) -> tuple[int, int, int, int]:
    """A free spot for a `size` object: anywhere (original 4% margin), along an edge, or in a corner."""
    (tw, th), (W, H) = size, canvas
    m = max(1, int(0.01 * min(W, H)))
    box = (0, 0, tw, th)
    for _ in range(60):
        if placement == "corner":
            x0 = m if rng.random() < 0.5 else W - tw - m
            y0 = m if rng.random() < 0.5 else H - th - m
        elif placement == "edge":
            side = int(rng.integers(0, 4))
            x0 = int(rng.integers(m, max(m + 1, W - tw - m)))
            y0 = int(rng.integers(m, max(m + 1, H - th - m)))
            x0, y0 = ((m, y0), (W - tw - m, y0), (x0, m), (x0, H - th - m))[side]
        else:
            x0 = int(rng.integers(int(0.04 * W), max(int(0.04 * W) + 1, int(0.96 * W) - tw)))
            y0 = int(rng.integers(int(0.04 * H), max(int(0.04 * H) + 1, int(0.96 * H) - th)))
        box = (x0, y0, x0 + tw, y0 + th)
        if not any(S.overlaps(box, a, gap) for a in avoid):
            return box
    return box


def draw_tag(img: Image.Image, rng: np.random.Generator, rgb, glyph: str, glyph_px: int, font_path: str,
             angle: float, placement: str, avoid: list) -> tuple[tuple, tuple]:
    """Paste a tag at a free spot; its outer box and glyph ink box in canvas pixels."""
    tag, ink = render_tag(glyph, glyph_px, rgb, font_path, angle)
    box = place(rng, tag.size, img.size, placement, avoid, max(8, glyph_px // 2))
    img.paste(tag, box[:2], tag)
    return box, (box[0] + ink[0], box[1] + ink[1], box[0] + ink[2], box[1] + ink[3])


def glyph_mark(img: Image.Image, rng: np.random.Generator, glyph_px: int, font_path: str, avoid: list) -> tuple:
    """A glyph-like mark with no tag: black text on a pale patch or straight on the background."""
    glyph = str(rng.choice(list(S.GLYPHS + "BCDFGMNPRSTUVWYZ689")))
    f = load_font(font_path, glyph_px)
    d = ImageDraw.Draw(img)
    x0, y0, x1, y1 = d.textbbox((0, 0), glyph, font=f)
    pad = glyph_px // 4
    box = place(rng, (x1 - x0 + 2 * pad, y1 - y0 + 2 * pad), img.size, "anywhere", avoid, glyph_px // 2)
    if rng.random() < 0.5:
        d.rectangle(box, fill=S.rgb(rng.integers(200, 256, 3)))
    d.text((box[0] + pad - x0, box[1] + pad - y0), glyph, font=f, fill=S.rgb(rng.integers(0, 60, 3)))
    return box


def jpeg(img: Image.Image, quality: int) -> Image.Image:
    """The picture after a JPEG round trip at `quality`."""
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    return Image.open(buf).convert("RGB")
