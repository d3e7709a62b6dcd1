"""What each merged token is trained toward in vision pre-training, beyond its class: the LM's word
for the class (`word_weight`), and for the position experiments (`position_weight`,
`position_words`, `row_words`; experiments/LOG.md) the tenth of the view it lies in, as a class or
as words. Pure tensor functions; tests call them with hand-made inputs.
"""
from __future__ import annotations

import numpy as np
import torch

from train.synth import scenes as S
from train.views import BACKGROUND, CLASSES

TENTHS = 10  # position classes per axis


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
