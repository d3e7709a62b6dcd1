"""Vision pre-training for the embedded model: teach the tower to see before SFT teaches it to talk.

    python -m train vision --config configs/vision_tiny.json [key=value ...]

The tower alone is trained on generated views, with a label for every merged token (the
28x28-pixel cell each LM image token covers): which glyph, which tag colour, which shape colour, or
background. A linear head reads the merger's output, the very vectors the LM gets, and a centring
term keeps the shared part of those vectors small. The views are the ones the model meets (a
zoom-needed overview, the crop after a good, wrong or tight zoom, a video frame showing the sign, a
zoom-optional overview) plus "sheets" of several tags, which give many glyphs per view; each is
generated on the fly: no epochs, no repeats.

`word_weight` (configs/vision_words.json) pulls each merged token toward the LM's own input
embedding of its class's word (" 7", " red"; background: the image pad token), from a least-squares
refit of the merger's last layer (`fit_words`), so the LM meets image tokens that look like words it
already copies. The architecture is unchanged: still a plain Qwen2.5-VL. `position_weight`,
`position_words`, `row_words` and `glyph_positions` are for the position experiments
(experiments/configs/, experiments/LOG.md), which no shipped stage uses.

The result is the base checkpoint with the new tower (fp32), ready for `train sft model=...`.
"""
from __future__ import annotations

import json
import logging
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from core.encoding import VisionTextEncoder
from core.operations import PIXEL_PRESETS, crop, resize_for_model
from train.sft import SFTRunConfig, copy_processor_files, run_main, start_run, warmup_cosine
from train.synth import scenes as S
from train.synth.tasks import VIDEO_SIZE, make_item
from train.synth.traces import noisy_box, wrong_box

log = logging.getLogger(__name__)

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


# ---- config ----------------------------------------------------------------------------------

@dataclass
class VisionRunConfig:
    model: str = "assets/pixel-reasoner-tiny"  # the checkpoint whose tower is trained (its LM is kept)
    fresh_vision: bool = True  # re-initialise the tower from its config first
    out: str = "runs/vision_tiny"
    final_dir: str | None = None  # default <out>/final
    mix: dict = field(default_factory=lambda: {"crop": 0.3, "sheet": 0.3, "overview": 0.15, "frame": 0.15, "shape": 0.1})
    wrong_crop_rate: float = 0.1
    tight_crop_rate: float = 0.3  # crops with a small margin, so glyphs look larger (a curriculum)
    batch_size: int = 32
    max_steps: int = 1000
    max_seconds: float | None = None  # stop after this much training time (cosine over time)
    learning_rate: float = 1e-3
    warmup_ratio: float = 0.05  # of max_steps, or of max_seconds with a budget
    weight_decay: float = 0.01
    background_weight: float = 0.2  # most cells are background: weigh them down
    center_weight: float = 1.0  # penalty on the share of the merged tokens' mean vector
    # Pull each merged token toward the LM's input embedding of its class's word (" 7", " red";
    # background: the image pad token), so the LM meets image tokens it reads like words. The
    # background then is one shared vector by design: use center_weight 0 with it.
    word_weight: float = 0.0
    word_init_views: int = 0  # with a trained tower: views for a least-squares start toward the words
    # Teach each merged token where it is: a linear head reads, from the token, the tenth of the
    # view's width and height its cell centre lies in. The tower has no absolute position otherwise
    # (2D RoPE), and the LM cannot get it through M-RoPE (experiments/read_probe.py --task position).
    position_weight: float = 0.0
    # Or hand the LM the position in its own words: each non-background token's word target also
    # gets the input embedding of the digit of its column's tenth ("3": the x of a box), as the
    # words did for glyphs (with --oracle, experiments/read_probe.py --task position learns from that).
    position_words: bool = False
    # With position_words: also add the row's tenth (the y of a box) as one of ten byte tokens no text
    # uses (ROW_WORDS), since a second digit would collide with the column's. SFT then maps them to digits.
    row_words: bool = False
    # With position_words: give glyph cells position too. The digit glyphs (2-5, 7) are spelt with the
    # digit words, so a "7" in column 3 would look like a "3" in column 7; false keeps them bare.
    glyph_positions: bool = True
    eval_views: int = 96  # held-out views per kind, fixed seed
    eval_every: int = 100
    num_workers: int = 1
    torch_threads: int | None = None
    seed: int = 0

    from_file = classmethod(SFTRunConfig.from_file.__func__)


# ---- model -----------------------------------------------------------------------------------

TENTHS = 10  # position classes per axis


class TokenHead(torch.nn.Module):
    """The tower plus linear heads on each merged token (what the LM would read): its class, and
    the tenth of the view's width and height it lies in (`where`)."""

    def __init__(self, visual, out_dim: int) -> None:
        super().__init__()
        self.visual, self.head = visual, torch.nn.Linear(out_dim, len(CLASSES))
        self.where = torch.nn.Linear(out_dim, 2 * TENTHS)

    def forward(self, pixel_values: torch.Tensor, grid_thw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.visual(pixel_values, grid_thw=grid_thw).pooler_output
        return self.head(feats), feats


def cell_tenths(rows: int, cols: int) -> np.ndarray:
    """(rows*cols, 2): the tenth of the width and of the height each cell's centre lies in, row-major
    like the merged tokens."""
    x = np.floor((np.arange(cols) + 0.5) / cols * TENTHS).astype(np.int64)
    y = np.floor((np.arange(rows) + 0.5) / rows * TENTHS).astype(np.int64)
    return np.stack([np.tile(x, rows), np.repeat(y, cols)], 1)


def position_loss(where: torch.Tensor, tenths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy of the x and y tenths, and the share of cells whose both tenths are right."""
    lx, ly = where[:, :TENTHS], where[:, TENTHS:]
    loss = torch.nn.functional.cross_entropy(lx, tenths[:, 0]) + torch.nn.functional.cross_entropy(ly, tenths[:, 1])
    hit = ((lx.argmax(-1) == tenths[:, 0]) & (ly.argmax(-1) == tenths[:, 1])).float().mean()
    return loss, hit


def class_word_ids(tokenizer, image_token_id: int) -> list[int]:
    """The token each class would be read out as: the first piece of " 7" / " red" that is not a
    bare space; background is the image pad token (never an LM input otherwise)."""
    def word(name: str) -> int:
        ids = tokenizer(" " + name.split(":")[1], add_special_tokens=False)["input_ids"]
        return next(i for i in ids if tokenizer.decode([i]).strip())
    return [image_token_id if i == BACKGROUND else word(c) for i, c in enumerate(CLASSES)]


def word_logits(feats: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-cell class scores by nearness to each class's word embedding (for score_views)."""
    return -torch.cdist(feats.float(), targets.float())


def digit_word_ids(tokenizer) -> list[int]:
    """The tokens "0".."9": how a box's digits are spelt, and so how a column is handed to the LM."""
    return [tokenizer.convert_tokens_to_ids(str(d)) for d in range(TENTHS)]


ROW_WORDS = "ÀÁÂÃÄÅÆÇÈÉ"  # byte tokens (0xC0-0xC9) that ASCII text never uses: rows 0-9


def row_word_ids(tokenizer) -> list[int]:
    """The tokens that hand a row's tenth to the LM: words of their own, so a row never reads as a column."""
    return [tokenizer.convert_tokens_to_ids(c) for c in ROW_WORDS]


def position_tables(table: torch.Tensor, tokenizer, rows: bool) -> dict[int, torch.Tensor]:
    """Per axis (0: column, 1: row), the input embeddings of the words that spell its tenths."""
    tables = {0: table[digit_word_ids(tokenizer)]}
    if rows:
        tables[1] = table[row_word_ids(tokenizer)]
    return tables


def positioned(labels: torch.Tensor, glyphs: bool = True) -> torch.Tensor:
    """The cells that carry position words: every non-background cell, or (glyphs false) also not the glyphs'."""
    on = labels != BACKGROUND
    if not glyphs:
        on &= labels >= len(S.GLYPHS)  # the glyph classes come first in CLASSES
    return on


def cell_targets(targets: torch.Tensor, labels: torch.Tensor, tenths: torch.Tensor | None = None,
                 axes: dict[int, torch.Tensor] | None = None, on: torch.Tensor | None = None) -> torch.Tensor:
    """Each cell's word target: its class's word plus, on the cells `on` marks (default: positioned),
    for each axis in `axes` the word of the cell's tenth along it (position_tables)."""
    out = targets[labels]
    if axes:
        on = positioned(labels) if on is None else on
        for axis, words in axes.items():
            out = out + words[tenths[:, axis]] * on[:, None].to(out.dtype)
    return out


def fit_words(visual, feats: torch.Tensor, labels: torch.Tensor, cells: torch.Tensor, ridge: float = 1e-3) -> None:
    """A closed-form start for the word objective: refit the merger's last Linear so that its output
    on these cells is, in least squares with classes weighed equally, their word (`cells`: one
    target per cell, from cell_targets). The
    layer is replaced by itself followed by the fitted map (still one Linear: the checkpoint keeps
    Qwen2.5-VL's architecture)."""
    x = torch.cat([feats.double(), torch.ones(len(feats), 1, dtype=torch.float64)], 1)
    w = (1.0 / torch.bincount(labels, minlength=len(CLASSES)).clamp(min=1).double())[labels].sqrt()
    xw, yw = x * w[:, None], cells.double() * w[:, None]
    gram = xw.T @ xw
    a = torch.linalg.solve(gram + ridge * gram.diagonal().mean() * torch.eye(len(gram), dtype=gram.dtype), xw.T @ yw)
    last = visual.merger.mlp[-1]
    a = a.to(last.weight.device)
    with torch.no_grad():
        last.bias.copy_((last.bias.double() @ a[:-1] + a[-1]).to(last.bias.dtype))
        last.weight.copy_((a[:-1].T @ last.weight.double()).to(last.weight.dtype))


def view_loss(logits: torch.Tensor, feats: torch.Tensor, labels: torch.Tensor, cfg: VisionRunConfig,
              targets: torch.Tensor | None = None, cells: torch.Tensor | None = None) -> dict:
    """Class cross-entropy, the centring term and, with word targets, the class-weighted distance of
    each token to its word (`cells`: per-cell targets from cell_targets, default the class words)."""
    weight = torch.ones(len(CLASSES), device=logits.device)
    weight[BACKGROUND] = cfg.background_weight
    ce = torch.nn.functional.cross_entropy(logits, labels, weight=weight)
    shared = feats.mean(0).pow(2).sum() / feats.pow(2).sum(-1).mean()  # 1.0 when every token is the same vector
    losses = {"loss": ce + cfg.center_weight * shared, "ce": ce, "shared": shared}
    if targets is not None and cfg.word_weight:
        w = weight[labels]  # squared distance to the class's word, relative to the words' size
        goal = targets[labels] if cells is None else cells
        dist = (feats - goal).pow(2).sum(-1) / targets.pow(2).sum(-1).mean()
        losses["word"] = (w * dist).sum() / w.sum()
        losses["loss"] = losses["loss"] + cfg.word_weight * losses["word"]
    return losses


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


# ---- data ------------------------------------------------------------------------------------

class ViewStream(torch.utils.data.IterableDataset):
    """An endless stream of freshly generated batches (each worker its own seed)."""

    def __init__(self, encoder: VisionTextEncoder, cfg: VisionRunConfig) -> None:
        self.encoder, self.cfg = encoder, cfg

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        rng = np.random.default_rng([self.cfg.seed, info.id if info else 0, 1])
        while True:
            views = sample_views(self.cfg, rng, self.cfg.batch_size, self.cfg.wrong_crop_rate, self.cfg.tight_crop_rate)
            yield encode_views(self.encoder, views)


def sample_views(cfg: VisionRunConfig, rng: np.random.Generator, n: int, wrong_crop_rate: float = 0.1,
                 tight_crop_rate: float = 0.0) -> list[View]:
    """n fresh views, their kinds drawn from cfg.mix."""
    kinds, probs = list(cfg.mix), np.array(list(cfg.mix.values()), dtype=float)
    return [make_view(str(rng.choice(kinds, p=probs / probs.sum())), rng, wrong_crop_rate, tight_crop_rate)
            for _ in range(n)]


def view_cells(views: list[View]) -> tuple[torch.Tensor, torch.Tensor]:
    """Every merged token's class label and (x, y) tenths, the views' cells in order."""
    labels = torch.from_numpy(np.concatenate([v.labels.reshape(-1) for v in views]))
    tenths = torch.from_numpy(np.concatenate([cell_tenths(*v.labels.shape) for v in views]))
    return labels, tenths


def encode_views(encoder: VisionTextEncoder, views: list[View]) -> dict:
    pv, grid = encoder.encode_images([v.image for v in views])
    labels, tenths = view_cells(views)
    return {"pixel_values": pv, "grid_thw": grid, "labels": labels, "tenths": tenths}


def eval_views(cfg: VisionRunConfig) -> list[View]:
    rng = np.random.default_rng([cfg.seed, 999])
    return [make_view(kind, rng, wrong_crop_rate=0.0) for kind in SCORED_KINDS for _ in range(cfg.eval_views)]


def evaluate(model: TokenHead, encoder: VisionTextEncoder, views: list[View], bs: int = 64,
             targets: torch.Tensor | None = None, positions: bool = False,
             axes: dict[int, torch.Tensor] | None = None, glyph_positions: bool = True) -> dict[str, float]:
    """Scores over all held-out views (forward passes in chunks of `bs`, scored together); with
    word targets, also as read by nearness to the words (`word_` keys); with `positions`, the share
    of cells whose both tenths the position head gets right (`position_acc`; with position words, of
    their cells only); with position words (`axes`), how well the tokens spell their tenths
    (position_word_scores)."""
    model.eval()
    logits, feats = forward_views(model, encoder, views, bs)
    model.train()
    scores = score_views(logits, views)
    if targets is not None:
        scores.update({f"word_{k}": v for k, v in score_views(word_logits(feats, targets.cpu()), views).items()})
    labels, tenths = view_cells(views)
    on = positioned(labels, glyph_positions) if axes else slice(None)  # as in training
    if positions:  # on the cells the head is trained on (with position words, theirs)
        with torch.no_grad():
            where = model.where(feats[on].to(next(model.parameters()).device)).float().cpu()
        scores["position_acc"] = position_loss(where, tenths[on])[1].item()
    if targets is not None and axes:
        scores.update(position_word_scores(feats, labels, tenths, targets.cpu(), {a: w.cpu() for a, w in axes.items()}, on))
    return {k: round(v, 4) for k, v in scores.items()}


def position_word_scores(feats: torch.Tensor, labels: torch.Tensor, tenths: torch.Tensor, targets: torch.Tensor,
                         axes: dict[int, torch.Tensor], on: torch.Tensor) -> dict[str, float]:
    """Per axis, the share of the cells `on` marks whose nearest position word, once their class word
    and their other axes' true words are taken off, spells their own tenth (`word_x_acc`, `word_y_acc`):
    whether the tower hands the LM where each token is."""
    rest, t = feats[on] - targets[labels[on]], tenths[on]
    scores = {}
    for a, words in axes.items():
        own = rest - sum((w[t[:, b]] for b, w in axes.items() if b != a), torch.zeros_like(rest))
        scores[f"word_{'xy'[a]}_acc"] = (torch.cdist(own, words).argmin(-1) == t[:, a]).float().mean().item()
    return scores


def forward_views(model: TokenHead, encoder: VisionTextEncoder, views: list[View],
                  bs: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-cell logits and merged tokens of all views (no grad; chunks of `bs`; float32 on the CPU)."""
    device = next(model.parameters()).device
    logits, feats = [], []
    with torch.no_grad():
        for i in range(0, len(views), bs):
            batch = encode_views(encoder, views[i:i + bs])
            lg, ft = model(batch["pixel_values"].to(device), batch["grid_thw"].to(device))
            logits.append(lg.float().cpu())
            feats.append(ft.float().cpu())
    return torch.cat(logits), torch.cat(feats)


# ---- run -------------------------------------------------------------------------------------

def start_words(probe: TokenHead, model, encoder: VisionTextEncoder,
                cfg: VisionRunConfig) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """The classes' word embeddings (the LM's own) and, with position_words, the words that spell
    each axis's tenths (position_tables); with word_init_views, the merger's last layer is first
    refitted toward them on that many generated views (fit_words)."""
    device = next(probe.parameters()).device
    table = model.get_input_embeddings().weight.detach()
    targets = table[class_word_ids(encoder.tokenizer, encoder.image_token_id)].to(device)
    axes = {}
    if cfg.position_words:
        axes = {a: t.to(device) for a, t in position_tables(table, encoder.tokenizer, cfg.row_words).items()}
    if cfg.word_init_views:
        views = sample_views(cfg, np.random.default_rng([cfg.seed, 7]), cfg.word_init_views)
        _, feats = forward_views(probe, encoder, views)
        labels, tenths = view_cells(views)
        cells = cell_targets(targets.cpu(), labels, tenths, {a: t.cpu() for a, t in axes.items()},
                             positioned(labels, cfg.glyph_positions))
        fit_words(probe.visual, feats, labels, cells)
    return targets, axes


def lr_at(cfg: VisionRunConfig, step: int, elapsed: float) -> float:
    """Warmup then cosine to zero, over max_steps or, with a budget, over max_seconds."""
    frac = elapsed / cfg.max_seconds if cfg.max_seconds else step / max(1, cfg.max_steps)
    return warmup_cosine(cfg.learning_rate, frac, cfg.warmup_ratio)


def train(cfg: VisionRunConfig) -> dict:
    from transformers import Qwen2_5_VLForConditionalGeneration

    out = start_run(cfg, "vision")
    torch.manual_seed(cfg.seed)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(cfg.model, dtype=torch.float32)
    encoder = VisionTextEncoder.from_pretrained(cfg.model)
    if cfg.fresh_vision:
        model.model.visual = type(model.model.visual)._from_config(model.config.vision_config)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    probe = TokenHead(model.model.visual, model.config.vision_config.out_hidden_size).to(device)
    targets, axes = start_words(probe, model, encoder, cfg) if cfg.word_weight else (None, {})
    opt = torch.optim.AdamW(probe.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    held_out = eval_views(cfg)
    loader = torch.utils.data.DataLoader(ViewStream(encoder, cfg), batch_size=None, num_workers=cfg.num_workers,
                                         persistent_workers=cfg.num_workers > 0)
    metrics_path = out / "metrics.jsonl"
    stop = threading.Event()  # SIGTERM ends the run early, and the tower trained so far is still saved
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    t0, step, last = time.time(), 0, {}
    with metrics_path.open("a", encoding="utf-8") as mf:
        for batch in loader:
            elapsed = time.time() - t0
            if step >= cfg.max_steps or (cfg.max_seconds and elapsed >= cfg.max_seconds) or stop.is_set():
                break
            for group in opt.param_groups:
                group["lr"] = lr_at(cfg, step, elapsed)
            batch = {k: v.to(device) for k, v in batch.items()}
            logits, feats = probe(batch["pixel_values"], batch["grid_thw"])
            on = positioned(batch["labels"], cfg.glyph_positions) if axes else slice(None)  # cells given positions
            cells = cell_targets(targets, batch["labels"], batch["tenths"], axes, on) if axes else None
            losses = view_loss(logits, feats, batch["labels"], cfg, targets, cells)
            if cfg.position_weight and len(batch["tenths"][on]):  # with position words, only on their cells
                losses["position"], losses["position_hit"] = position_loss(probe.where(feats[on]), batch["tenths"][on])
                losses["loss"] = losses["loss"] + cfg.position_weight * losses["position"]
            opt.zero_grad()
            losses["loss"].backward()
            torch.nn.utils.clip_grad_norm_(probe.parameters(), 1.0)
            opt.step()
            step += 1
            row = {"step": step, "seconds": round(time.time() - t0, 1), "lr": opt.param_groups[0]["lr"],
                   **{k: round(v.item(), 4) for k, v in losses.items()}}
            if step % cfg.eval_every == 0:
                row.update(evaluate(probe, encoder, held_out, targets=targets, positions=cfg.position_weight > 0,
                                    axes=axes, glyph_positions=cfg.glyph_positions))
                log.info("step %d: %s", step, row)
            mf.write(json.dumps(row) + "\n")
            mf.flush()
            last = row
    final_scores = evaluate(probe, encoder, held_out, targets=targets, positions=cfg.position_weight > 0,
                            axes=axes, glyph_positions=cfg.glyph_positions)
    final = Path(cfg.final_dir) if cfg.final_dir else out / "final"
    save_with_tower(model, encoder, cfg.model, final)
    torch.save(probe.head.state_dict(), out / "token_head.pt")
    summary = {"steps": step, "seconds": round(time.time() - t0, 1), "final_dir": str(final),
               "loss": last.get("loss"), **final_scores}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def save_with_tower(model, encoder: VisionTextEncoder, source: str | Path, final: Path) -> None:
    """This model's weights (fp32: SFT continues from them) with the base checkpoint's tokenizer and
    processor files."""
    model.to("cpu", torch.float32).save_pretrained(final, safe_serialization=True)
    encoder.tokenizer.save_pretrained(str(final))
    copy_processor_files(Path(source), final)


def main(argv: list[str] | None = None) -> int:
    return run_main("python -m train vision", __doc__, VisionRunConfig, train, argv)
