"""The SFT forward without its two wastes: the prefix every row shares, and padding.

Every training conversation starts with the same system and tool text (~210 tokens, about 40% of a
conversation), and a right-padded batch of varied lengths is about a third padding. Here the shared
prefix runs once per batch (batch size 1) and its keys and values are handed to every row as the
cache; the rows' own tokens then run in small groups of similar length, so little padding is left.

It is the same computation: attention is causal, so the prefix's states do not depend on what follows
it; its gradient still flows (the cache is an expanded view, whose backward sums over the rows);
positions are the full batch's M-RoPE positions, sliced; and the loss is the same weighted sum over the
trained tokens. Only the order of floating-point sums differs.
"""
from __future__ import annotations

import types
from dataclasses import dataclass

import torch

from core.encoding import IGNORE_INDEX

MIN_PREFIX = 16
"""A shorter shared prefix is not worth its extra pass: the batch runs as one plain forward."""


@dataclass
class TokenLogProbs:
    """What the loss needs, over the positions that predict a trained token, flattened over the batch."""

    log_probs: torch.Tensor  # log-probability of each trained token
    weights: torch.Tensor  # its loss weight (1 unless the batch carries `loss_weights`)


def shared_prefix_len(input_ids: torch.Tensor, labels: torch.Tensor, attention_mask: torch.Tensor,
                      mm_token_type_ids: torch.Tensor | None = None) -> int:
    """How many leading tokens every row shares and may run once: equal ids, no padding and no picture
    in any row, and every trained token's predictor (the position before it) left outside."""
    same = (input_ids == input_ids[:1]).all(0) & (attention_mask == 1).all(0)
    if mm_token_type_ids is not None:
        same &= (mm_token_type_ids == 0).all(0)
    n = int(same.long().cumprod(0).sum())
    trained = (labels != IGNORE_INDEX).any(0).nonzero()
    if len(trained):
        n = min(n, int(trained[0]) - 1)
    return max(n, 0)


def prefix_classes(input_ids: torch.Tensor, labels: torch.Tensor, attention_mask: torch.Tensor,
                   mm_token_type_ids: torch.Tensor | None = None) -> list[tuple[list[int], int]]:
    """The batch's rows split into classes that each share a prefix worth running once: (rows, its length).

    Rows differ in their system turn (image tools, video tools, no tools), so the batch is cut, in
    sorted order, where the most tokens are saved overall; a row alone, or a class whose prefix is
    under MIN_PREFIX, gets length 0 (it runs whole)."""
    mm = mm_token_type_ids if mm_token_type_ids is not None else torch.zeros_like(input_ids)
    order = sorted(range(len(input_ids)), key=lambda i: input_ids[i][attention_mask[i] == 1].tolist())

    def shared(rows: list[int]) -> int:
        n = shared_prefix_len(input_ids[rows], labels[rows], attention_mask[rows], mm[rows])
        return n if len(rows) > 1 and n >= MIN_PREFIX else 0

    best: list[tuple[int, list[list[int]]]] = [(0, [])]  # over the first k sorted rows: tokens saved, classes
    for k in range(1, len(order) + 1):
        best.append(max(((best[j][0] + (k - j - 1) * shared(order[j:k]), best[j][1] + [order[j:k]])
                         for j in range(k)), key=lambda t: t[0]))
    return [(rows, shared(rows)) for rows in best[-1][1]]


def length_groups(lengths: list[int], max_waste: float = 0.1) -> list[list[int]]:
    """Rows grouped by length (longest first) so that padding is at most `max_waste` of each group."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    groups: list[list[int]] = []
    for i in order:
        if groups:
            g = groups[-1]
            width = lengths[g[0]]
            if 1 - (sum(lengths[j] for j in g) + lengths[i]) / (width * (len(g) + 1)) <= max_waste:
                g.append(i)
                continue
        groups.append([i])
    return groups


def position_ids(model, batch: dict) -> torch.Tensor:
    """The full batch's positions (3, B, L), as the model's own forward would compute them."""
    base = model.model
    pos = base.compute_3d_position_ids(
        input_ids=batch["input_ids"], image_grid_thw=batch.get("image_grid_thw"),
        video_grid_thw=batch.get("video_grid_thw"), second_per_grid_ts=batch.get("second_per_grid_ts"),
        inputs_embeds=None, attention_mask=batch["attention_mask"], past_key_values=None,
        mm_token_type_ids=batch.get("mm_token_type_ids"))
    if pos is None:  # text only: the language model's default positions
        b, length = batch["input_ids"].shape
        pos = torch.arange(length).view(1, 1, -1).expand(3, b, -1)
    return pos


def input_embeddings(model, batch: dict) -> torch.Tensor:
    """Token embeddings with the pictures' features in place of their pad tokens (the model's own step)."""
    base = model.model
    ids = batch["input_ids"]
    embeds = base.get_input_embeddings()(ids)
    for kind, key, grid in (("image", "pixel_values", "image_grid_thw"), ("video", "pixel_values_videos", "video_grid_thw")):
        if batch.get(key) is None:
            continue
        get = base.get_image_features if kind == "image" else base.get_video_features
        feats = torch.cat(get(batch[key], batch[grid], return_dict=True).pooler_output, dim=0).to(embeds.dtype)
        image_mask, video_mask = base.get_placeholder_mask(ids, inputs_embeds=embeds, **{f"{kind}_features": feats})
        embeds = embeds.masked_scatter(image_mask if kind == "image" else video_mask, feats)
    return embeds


def token_log_probs(model, batch: dict, max_waste: float = 0.1) -> TokenLogProbs:
    """Log-probabilities of the batch's trained tokens, the shared prefix run once and rows in length
    groups. Equal, up to float rounding, to the plain forward's (tests/test_shared_prefix.py)."""
    from transformers import DynamicCache

    ids, attn, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    weights = batch.get("loss_weights")
    if weights is None:
        weights = torch.ones(labels.shape)
    pos, embeds = position_ids(model, batch), input_embeddings(model, batch)
    lm, text_config = model.model.language_model, model.config.get_text_config()
    lengths = attn.sum(1).tolist()
    out_lp, out_w = [], []
    for members, n in prefix_classes(ids, labels, attn, batch.get("mm_token_type_ids")):
        prefix = None
        if n:
            first = members[:1]
            prefix = lm(inputs_embeds=embeds[first, :n], position_ids=pos[:, first, :n], attention_mask=attn[first, :n],
                        use_cache=True).past_key_values
        for group in length_groups([lengths[i] - n for i in members], max_waste):
            rows = torch.tensor([members[i] for i in group])
            width = int(attn[rows].sum(1).max())
            cache = None
            if prefix is not None:
                cache = DynamicCache(ddp_cache_data=[(k.expand(len(rows), -1, -1, -1), v.expand(len(rows), -1, -1, -1))
                                                     for k, v, _ in prefix], config=text_config)
            hidden = lm(inputs_embeds=embeds[rows, n:width], position_ids=pos[:, rows, n:width],
                        attention_mask=attn[rows, :width], past_key_values=cache,
                        use_cache=cache is not None).last_hidden_state
            target = labels[rows, n + 1:width]
            mask = target != IGNORE_INDEX
            logits = model.lm_head(hidden[:, :-1][mask]).float()
            out_lp.append(logits.log_softmax(-1).gather(-1, target[mask].unsqueeze(-1)).squeeze(-1))
            out_w.append(weights[rows, n + 1:width][mask])
    return TokenLogProbs(torch.cat(out_lp), torch.cat(out_w).to(torch.float32))


def route_through_forward(model) -> None:
    """Make `model(fast_batch=batch)` run `token_log_probs`; any other call is the model's own forward.

    A DDP wrapper syncs gradients only for work that runs through its forward, so the fast path has to be
    reachable from there. A bound method, as accelerate expects of the forward it wraps in autocast (and
    unwraps again when the model is saved)."""
    def forward(self, *args, fast_batch: dict | None = None, **kwargs):
        if fast_batch is not None:
            return token_log_probs(self, fast_batch)
        return type(self).forward(self, *args, **kwargs)

    model.forward = types.MethodType(forward, model)
