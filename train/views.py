"""The generated views that vision pre-training learns from, each with a class label per merged token.

A view is a picture the model meets, sized for the model (sides multiples of 28): a zoom-needed
overview, the crop after a good, wrong or tight zoom, a video frame showing the sign, a zoom-optional
overview, or a "sheet" of several tags at crop scale (many glyphs per view). Its `labels` give each
28x28 cell (one LM image token) its class: which glyph, tag colour, shape colour, or background.
Pure picture logic on numpy and PIL; `score_views` reads a model's per-cell logits back into scores.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from core.operations import PIXEL_PRESETS, crop, resize_for_model
from train.synth import scenes as S
from train.synth.tasks import VIDEO_SIZE, make_item
from train.synth.traces import noisy_box, wrong_box

CELL = 28  # pixels per merged token (patch 14 x merge 2)


CLASSES = ([f"glyph:{g}" for g in S.GLYPHS] + [f"tag:{c}" for c in S.TAG_COLORS]
           + [f"shape:{c}" for c in S.SHAPE_COLORS] + ["background"])


BACKGROUND = len(CLASSES) - 1


SCORED_KINDS = ("crop", "overview", "frame", "shape")  # held-out views; sheets are for training


@dataclass
class View:
    kind: str
    image: Image.Image  # sized for the model: sides are multiples of 28
    labels: np.ndarray  # (rows, cols) class index per merged token


def cls(name: str) -> int:
    return CLASSES.index(name)


def token_labels(masks: list[tuple[int, np.ndarray]], size: tuple[int, int], min_cover: float = 0.1) -> np.ndarray:
    """Per-cell labels from (class, boolean pixel mask) pairs in priority order: a cell takes the
    first class whose mask covers at least `min_cover` of it, else background. An object split
    thinly over several cells still labels the cell holding most of it."""
    w, h = size
    rows, cols = h // CELL, w // CELL
    labels = np.full((rows, cols), BACKGROUND, dtype=np.int64)
    for c, mask in reversed(masks):  # later (lower-priority) first, so earlier ones overwrite
        cover = mask[:rows * CELL, :cols * CELL].reshape(rows, CELL, cols, CELL).mean(axis=(1, 3))
        labels[cover >= min_cover] = c
        if cover.max() > 0:
            labels[np.unravel_index(int(cover.argmax()), cover.shape)] = c
    return labels


def box_mask(size: tuple[int, int], box, sx: float = 1.0, sy: float = 1.0, dx: float = 0.0, dy: float = 0.0) -> np.ndarray:
    """A boolean mask of `box` after shifting by (dx, dy) and scaling by (sx, sy)."""
    w, h = size
    mask = np.zeros((h, w), dtype=bool)
    x0, y0 = int(round((box[0] + dx) * sx)), int(round((box[1] + dy) * sy))
    x1, y1 = int(round((box[2] + dx) * sx)), int(round((box[3] + dy) * sy))
    mask[max(0, y0):max(0, y1), max(0, x0):max(0, x1)] = True
    return mask


def tag_masks(size, tag: S.Tag, sx: float = 1.0, sy: float = 1.0, dx: float = 0.0, dy: float = 0.0,
              readable: bool = True) -> list[tuple[int, np.ndarray]]:
    """(glyph, tag-colour) masks of a drawn tag in a view; only the colour where the glyph is unreadable."""
    colour = (cls(f"tag:{tag.color}"), box_mask(size, tag.box, sx, sy, dx, dy))
    if not readable:
        return [colour]
    return [(cls(f"glyph:{tag.glyph}"), box_mask(size, tag.glyph_box, sx, sy, dx, dy)), colour]


def zoom_tag(item) -> S.Tag:
    """The tag of a zoom-needed item, from its answer, question subject ("red tag") and meta boxes."""
    return S.Tag(color=item.subject.split()[0], glyph=item.answer, box=tuple(item.meta["tag_box"]),
                 glyph_box=tuple(item.meta["glyph_box"]))


def crop_view(rng: np.random.Generator, wrong: bool = False, tight: bool = False) -> View:
    """What the model sees after a zoom on a zoom-needed scene: a good crop, or a wrong one.

    A tight crop (a margin of 0.5-2 tag sizes instead of the tool's 10% padding) shows the glyph
    up to ~3x larger: easier shapes to learn first, which carry over to the real size.
    """
    item = make_item("zoom_needed", int(rng.integers(2**62)), "view")
    if tight:
        x0, y0, x1, y1 = item.meta["tag_box"]
        mx, my = (float(rng.uniform(0.5, 2.0)) * (x1 - x0) for _ in range(2))
        px = (max(0, int(x0 - mx)), max(0, int(y0 - my)),
              min(item.image.width, int(x1 + mx)), min(item.image.height, int(y1 + my)))
        view = item.image.crop(px)
    else:
        view, cb = crop(item.image, wrong_box(rng, item.target) if wrong else noisy_box(rng, item.target))
        px = cb.px
    limits = PIXEL_PRESETS["tiny"]
    sized = resize_for_model(view, limits.crop_max * 3 // 4 if tight else limits.crop_min, limits.crop_max)
    sx, sy = sized.width / view.width, sized.height / view.height
    masks = tag_masks(sized.size, zoom_tag(item), sx, sy, -px[0], -px[1])
    return View("crop", sized, token_labels(masks, sized.size))


def overview_view(rng: np.random.Generator) -> View:
    """A zoom-needed scene at overview size: the tag is a coloured speck, its glyph unreadable."""
    return overview_of(make_item("zoom_needed", int(rng.integers(2**62)), "view"))


def overview_of(item) -> View:
    """A zoom-needed item's picture as the tiny preset shows it, labelled per merged token."""
    limits = PIXEL_PRESETS["tiny"]
    sized = resize_for_model(item.image, limits.first_min, limits.first_max)
    sx, sy = sized.width / item.image.width, sized.height / item.image.height
    masks = tag_masks(sized.size, zoom_tag(item), sx, sy, readable=False)
    return View("overview", sized, token_labels(masks, sized.size, min_cover=0.05))


def frame_view(rng: np.random.Generator) -> View:
    """A selected video frame showing the red sign, at the frame resolution the tool returns."""
    w, h = VIDEO_SIZE
    img = S.background(rng, w, h)
    glyph = str(rng.choice(list(S.GLYPHS)))
    tag = S.draw_glyph_tag(img, rng, "red", glyph, glyph_px=int(rng.integers(22, 26)), margin=0.06)
    limits = PIXEL_PRESETS["tiny"]
    sized = resize_for_model(img, limits.frame_min, limits.frame_max)
    masks = tag_masks(sized.size, tag, sized.width / w, sized.height / h)
    return View("frame", sized, token_labels(masks, sized.size))


def shape_view(rng: np.random.Generator) -> View:
    """A zoom-optional scene at overview size: the large shape's cells carry its colour."""
    return shape_of(make_item("zoom_optional", int(rng.integers(2**62)), "view"))


def shape_of(item) -> View:
    """A zoom-optional item's picture as the tiny preset shows it, the large shape's cells labelled."""
    limits = PIXEL_PRESETS["tiny"]
    sized = resize_for_model(item.image, limits.first_min, limits.first_max)
    box = [v * (sized.width if i % 2 == 0 else sized.height) for i, v in enumerate(item.target)]
    color = np.array(S.SHAPE_COLORS[item.meta["color"]], dtype=np.int16)
    near = np.abs(np.asarray(sized, dtype=np.int16) - color).max(axis=-1) < 40
    mask = box_mask(sized.size, box) & near
    return View("shape", sized, token_labels([(cls(f"shape:{item.meta['color']}"), mask)], sized.size, 0.3))


def sheet_view(rng: np.random.Generator) -> View:
    """Several tags at crop scale on one background: many glyphs per view, so the tower sees
    several times more glyph examples for the same compute than from single crops."""
    rows = int(rng.integers(6, 9))
    cols = min(int(rng.integers(6, 9)), 64 // rows)  # at most 64 cells, like a crop
    img = S.background(rng, cols * CELL, rows * CELL)
    glyphs, tags, placed = [], [], []
    for _ in range(int(rng.integers(4, 9))):
        color, glyph = str(rng.choice(list(S.TAG_COLORS))), str(rng.choice(list(S.GLYPHS)))
        drawn = img.copy()
        try:
            tag = S.draw_glyph_tag(drawn, rng, color, glyph, glyph_px=int(rng.integers(16, 32)), avoid=placed, margin=0.0)
        except ValueError:  # a tag larger than the space left
            break
        if any(S.overlaps(tag.box, a) for a in placed):
            break  # no free spot: keep the sheet as it was
        img = drawn
        placed.append(tag.box)
        g, t = tag_masks(img.size, tag)
        glyphs.append(g)
        tags.append(t)
    return View("sheet", img, token_labels(glyphs + tags, img.size))


VIEWS = {"overview": overview_view, "frame": frame_view, "shape": shape_view, "sheet": sheet_view}  # and "crop"


def make_view(kind: str, rng: np.random.Generator, wrong_crop_rate: float = 0.1, tight_crop_rate: float = 0.0) -> View:
    if kind == "crop":
        u = rng.random()
        return crop_view(rng, wrong=bool(u < wrong_crop_rate), tight=bool(u > 1 - tight_crop_rate))
    return VIEWS[kind](rng)


def score_views(logits: torch.Tensor, views: list[View]) -> dict[str, float]:
    """Per-view scores from per-cell logits: glyph read (crop/frame) and shape colour named
    (shape), each the class with the highest logit in any cell; tag found (overview), the cell
    most sure of the tag's colour lies on the tag. Pure: tests call it with made-up logits."""
    glyphs = [cls(f"glyph:{g}") for g in S.GLYPHS]
    shapes = [cls(f"shape:{c}") for c in S.SHAPE_COLORS]
    hits: dict[str, list[float]] = {}
    start = 0
    for v in views:
        n = v.labels.size
        lg, lab = logits[start:start + n], torch.from_numpy(v.labels.reshape(-1))
        start += n
        present = [c for c in lab.unique().tolist() if c != BACKGROUND]
        if v.kind in ("crop", "frame"):
            truth = [c for c in present if c in glyphs]
            if truth:  # wrong crops have no glyph to read
                guess = glyphs[int(lg[:, glyphs].max(0).values.argmax())]
                hits.setdefault(f"{v.kind}_glyph_acc", []).append(float(guess == truth[0]))
        elif v.kind == "overview" and present:
            cell = int(lg[:, present[0]].argmax())
            hits.setdefault("overview_tag_found", []).append(float(lab[cell].item() == present[0]))
        elif v.kind == "shape" and present:
            guess = shapes[int(lg[:, shapes].max(0).values.argmax())]
            hits.setdefault("shape_colour_acc", []).append(float(guess == present[0]))
    return {k: sum(v) / len(v) for k, v in hits.items()}
