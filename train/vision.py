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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from core.encoding import VisionTextEncoder
from train.run import RunConfig, copy_processor_files, option, run_main, start_run, warmup_cosine
from train.views import BACKGROUND, CLASSES, SCORED_KINDS, View, make_view, score_views
from train.vision_targets import (TENTHS, cell_targets, cell_tenths, class_word_ids, fit_words, position_loss,
                                  position_tables, position_word_scores, positioned, word_logits)

log = logging.getLogger(__name__)


# ---- config ----------------------------------------------------------------------------------

@dataclass
class VisionRunConfig(RunConfig):
    model: str = option("assets/pixel-reasoner-tiny", "the checkpoint whose tower is trained (its LM is kept)")
    fresh_vision: bool = option(True, "re-initialise the tower from its config first")
    out: str = "runs/vision_tiny"
    mix: dict = option(help="share of each view kind", factory=lambda: {"crop": 0.3, "sheet": 0.3, "overview": 0.15,
                                                                        "frame": 0.15, "shape": 0.1})
    wrong_crop_rate: float = option(0.1, "share of crops after a wrong zoom")
    tight_crop_rate: float = option(0.3, "crops with a small margin, so glyphs look larger (a curriculum)")
    batch_size: int = 32
    max_steps: int = 1000
    warmup_ratio: float = option(0.05, "of max_steps, or of max_seconds with a budget")
    weight_decay: float = 0.01
    background_weight: float = option(0.2, "loss weight of background cells (most cells are background)")
    center_weight: float = option(1.0, "penalty on the share of the merged tokens' mean vector")
    word_weight: float = option(0.0, "pull each merged token toward the LM's input embedding of its class's word "
                                     "(background: the image pad token; use center_weight 0 with it)")
    word_init_views: int = option(0, "with a trained tower: views for a least-squares start toward the words")
    position_weight: float = option(0.0, "experiment: a linear head reads each token's tenth of width and height")
    position_words: bool = option(False, "experiment: each token's word target also gets its column's digit word")
    row_words: bool = option(False, "experiment, with position_words: the row's tenth as one of ROW_WORDS")
    glyph_positions: bool = option(True, "experiment, with position_words: position words on glyph cells too "
                                         "(the digit glyphs are spelt with the digit words)")
    eval_views: int = option(96, "held-out views per kind, fixed seed")
    eval_every: int = option(100, "score the held-out views every N steps")
    num_workers: int = option(1, "view-generating processes")


# ---- model -----------------------------------------------------------------------------------


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
