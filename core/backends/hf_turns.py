"""Multi-turn batched generation whose cost grows with each turn's new tokens (the transformers backend).

`TurnEngine.generate(batch, params)` takes the same conversations as `generate_batch` and returns
the same `Generation`s, but each conversation keeps its key/value cache between turns: a turn
feeds only the tokens after the longest prefix already cached (the observation, the new crop's
vision pads), with Qwen2.5-VL's M-RoPE positions taken from the whole conversation
(`get_rope_index`), so they continue exactly where the cached part ended. The system/tools prefix
shared by the batch is computed once. Rows leave the batch as they stop. Rows are laid out as
[pad][cached][pad][new][decoded], the pads masked out, so one batched forward serves caches of
any lengths.

A cached prefix is reused only where its token ids and its pictures (the same image objects) match
the new encoding, so a re-tokenized assistant turn or another conversation never reads stale state.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from transformers.cache_utils import Cache, DynamicLayer

from core.backends.base import Generation, GenerationParams, check_batch, cut_at_stop
from core.backends.stopping import StopCriteria
from core.backends.tokenprobs import token_pieces
from core.encoding import Encoded
from core.runtime import parallel_map, torch_threads

MIN_SHARED_PREFIX = 16  # tokens; shorter common prefixes are not worth a separate forward
GROW_TOKENS = 128  # a batch's key/value buffers grow by this many positions at a time
# Decoding steps are many small operations: a second OpenMP thread brings less than its fork/join
# costs, and on a shared CPU each step waits for the slower thread (docs/performance.md).
DECODE_THREADS = 1


class BufferedLayer(DynamicLayer):
    """transformers' DynamicLayer over a buffer with room to grow: a decoding step writes its
    token's states in place instead of copying the whole cache (`torch.cat`) every step.
    `keys`/`values` are views of the filled part, so attention reads exactly what DynamicLayer holds."""

    def __init__(self, room: int = GROW_TOKENS) -> None:
        super().__init__()
        self.room = room
        self.filled = 0
        self.buffers: tuple[torch.Tensor, torch.Tensor] | None = None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self.filled + key_states.shape[-2]
        if self.buffers is None or end > self.buffers[0].shape[-2]:
            grown = []
            for old, new in zip(self.buffers or (None, None), (key_states, value_states)):
                b, h, _, d = new.shape
                buf = new.new_empty(b, h, end + self.room, d)
                if old is not None:
                    buf[:, :, :self.filled] = old[:, :, :self.filled]
                grown.append(buf)
            self.buffers = (grown[0], grown[1])
        keys, values = self.buffers
        keys[:, :, self.filled:end] = key_states
        values[:, :, self.filled:end] = value_states
        self.filled = end
        self.keys, self.values = keys[:, :, :end], values[:, :, :end]
        return self.keys, self.values

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.buffers is not None:
            self.buffers = (self.buffers[0][indices], self.buffers[1][indices])
            self.keys, self.values = self.buffers[0][:, :, :self.filled], self.buffers[1][:, :, :self.filled]


@dataclass
class TurnCache:
    """The key/value states of one token sequence (batch 1), and the pictures its vision pads hold."""

    ids: list[int]
    keys: list[torch.Tensor]  # per layer, (1, heads, len(ids), head_dim)
    values: list[torch.Tensor]
    media: list[tuple] = field(default_factory=list)  # fingerprints of the vision runs, in order
    pictures: list = field(default_factory=list)  # the pictures themselves, so their ids stay theirs


@dataclass
class Row:
    """One conversation's turn in flight."""

    key: int
    enc: Encoded
    media: list[tuple]
    pictures: list
    positions: torch.Tensor  # (3, len) M-RoPE positions of the whole conversation
    next_pos: int  # position of the first generated token (all three axes)
    cut: int  # tokens reused from `base`
    base: TurnCache | None
    new: list[int] = field(default_factory=list)  # generated tokens
    logprobs: list[float] = field(default_factory=list)
    stopped_at: int | None = None


def media_fingerprints(messages: list[dict]) -> tuple[list[tuple], list]:
    """One entry per vision run, in the order their pads appear: ('image'|'video', ids of the PIL
    objects); and the objects, which a cache holds so that no other picture can take their ids."""
    out, pictures = [], []
    for m in messages:
        if isinstance(m["content"], str):
            continue
        for part in m["content"]:
            if part["type"] == "image":
                out.append(("image", id(part["image"])))
                pictures.append(part["image"])
            elif part["type"] == "video":
                out.append(("video", tuple(id(f) for f in part["video"])))
                pictures.extend(part["video"])
    return out, pictures


def vision_runs(ids: list[int], pad_ids: set[int]) -> list[tuple[int, int]]:
    """[start, end) of each run of vision pad tokens."""
    runs, start = [], None
    for i, t in enumerate(ids):
        if t in pad_ids and start is None:
            start = i
        elif t not in pad_ids and start is not None:
            runs.append((start, i))
            start = None
    if start is not None:
        runs.append((start, len(ids)))
    return runs


def reusable_prefix(cache: TurnCache | None, ids: list[int], media: list[tuple], runs: list[tuple[int, int]]) -> int:
    """How many leading tokens of `ids` the cache holds exactly: equal ids, never cutting a vision
    run, every run inside showing the same picture; at least one token is left to feed."""
    if cache is None:
        return 0
    n = 0
    for a, b in zip(cache.ids, ids[:len(ids) - 1]):
        if a != b:
            break
        n += 1
    for j, (start, end) in enumerate(runs):
        if start >= n:
            break
        if end > n or j >= len(cache.media) or cache.media[j] != media[j]:
            return start
    return n


class TurnEngine:
    """Per-conversation caches kept between `generate` calls of one backend (see the module doc)."""

    def __init__(self, backend) -> None:
        self.backend = backend
        self.model = backend.model
        self.encoder = backend.encoder
        self.caches: dict[int, TurnCache] = {}
        self.prefix: TurnCache | None = None
        enc = self.encoder
        self.pad_ids = {enc.image_token_id, enc.video_token_id}
        layer_types = getattr(self.model.config.text_config, "layer_types", None) or ["full_attention"]
        self.full_attention_only = set(layer_types) == {"full_attention"}  # decoding hands over a ready mask

    def forget(self) -> None:
        self.caches.clear()

    # ---- one call --------------------------------------------------------------------------

    @torch.inference_mode()
    def generate(self, batch: list[list[dict]], params: GenerationParams) -> list[Generation]:
        t0 = time.perf_counter()
        keys = [id(m) for m in batch]
        self.caches = {k: c for k, c in self.caches.items() if k in keys}  # ended conversations go
        encoded = parallel_map(self.backend._encode_prompt, batch)  # tokenizer, image processor: GIL released
        check_batch([len(e) for e in encoded], params)  # before any prefill, the shared prefix's included
        self._share_prefix(encoded)
        rows = [self._row(k, m, e) for k, m, e in zip(keys, batch, encoded)]
        if params.seed is not None:
            torch.manual_seed(params.seed)
        criteria = StopCriteria(self.backend.tokenizer, params.stop, self.backend.stop_ids, 0, len(rows))
        self._run(rows, params, criteria.row_done)
        seconds = time.perf_counter() - t0
        return [self._generation(r, params, seconds) for r in rows]

    def _row(self, key: int, messages: list[dict], enc: Encoded) -> Row:
        media, pictures = media_fingerprints(messages)
        runs = vision_runs(enc.input_ids, self.pad_ids)
        candidates = [c for c in (self.caches.get(key), self.prefix) if c is not None]
        cut, base = 0, None
        for c in candidates:
            n = reusable_prefix(c, enc.input_ids, media, runs)
            if n > cut:
                cut, base = n, c
        positions, next_pos = self._positions(enc)
        return Row(key=key, enc=enc, media=media, pictures=pictures, positions=positions, next_pos=next_pos,
                   cut=cut, base=base)

    def _positions(self, enc: Encoded) -> tuple[torch.Tensor, int]:
        ids = torch.tensor([enc.input_ids], dtype=torch.long)
        if enc.image_grid_thw is None and enc.video_grid_thw is None:
            pos = torch.arange(len(enc.input_ids)).view(1, -1).expand(3, -1)
            return pos, len(enc.input_ids)
        mm = torch.zeros_like(ids, dtype=torch.int32)
        mm[ids == self.encoder.image_token_id] = 1
        mm[ids == self.encoder.video_token_id] = 2
        pos, _ = self.model.model.get_rope_index(
            ids, mm, image_grid_thw=enc.image_grid_thw, video_grid_thw=enc.video_grid_thw,
            second_per_grid_ts=enc.second_per_grid_ts)
        return pos[:, 0], int(pos.max()) + 1

    def _share_prefix(self, encoded: list[Encoded]) -> None:
        """Compute the batch's common text prefix once (the system prompt and tools), unless cached."""
        first = encoded[0].input_ids
        n = len(first)
        for e in encoded[1:]:
            n = min(n, next((i for i, (a, b) in enumerate(zip(first, e.input_ids)) if a != b), len(e.input_ids)))
        runs = vision_runs(first, self.pad_ids)
        if runs:
            n = min(n, runs[0][0])
        n = min(n, min(len(e) for e in encoded) - 1)
        held = self.prefix.ids if self.prefix is not None else None
        if n < MIN_SHARED_PREFIX or (held is not None and len(held) <= n and first[:len(held)] == held):
            return  # too short to pay, or already held
        ids = torch.tensor([first[:n]], device=self.backend.device)
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        pos = torch.arange(n, device=ids.device).view(1, 1, -1).expand(3, 1, -1)
        self.model(input_ids=ids, position_ids=pos, past_key_values=cache, use_cache=True, logits_to_keep=1)
        self.prefix = TurnCache(ids=first[:n], keys=[layer.keys for layer in cache.layers],
                                values=[layer.values for layer in cache.layers])

    # ---- the batched forward passes ----------------------------------------------------------

    def _run(self, rows: list[Row], params: GenerationParams, row_done) -> None:
        device, b = self.backend.device, len(rows)
        n_layers = self.model.config.text_config.num_hidden_layers
        lmax = max(r.cut for r in rows)
        suffix = [r.enc.input_ids[r.cut:] for r in rows]
        smax = max(len(s) for s in suffix)
        mask = torch.zeros(b, lmax + smax, dtype=torch.long)
        input_ids = torch.full((b, smax), self.encoder.pad_token_id, dtype=torch.long)
        pos = torch.zeros(3, b, smax, dtype=torch.long)
        for i, (r, s) in enumerate(zip(rows, suffix)):
            mask[i, lmax - r.cut:lmax] = 1
            mask[i, lmax + smax - len(s):] = 1
            input_ids[i, smax - len(s):] = torch.tensor(s)
            pos[:, i, smax - len(s):] = r.positions[:, r.cut:]
        room = smax + min(GROW_TOKENS, params.max_new_tokens)  # this turn's prompt and first tokens
        cache = Cache(layers=[BufferedLayer(room) for _ in range(n_layers)])
        if lmax:
            for layer in range(n_layers):
                ref = next(r.base.keys[layer] for r in rows if r.base is not None)
                k = ref.new_zeros(b, ref.shape[1], lmax, ref.shape[3])
                v = k.clone()
                for i, r in enumerate(rows):
                    if r.cut:
                        k[i, :, lmax - r.cut:] = r.base.keys[layer][0, :, :r.cut]
                        v[i, :, lmax - r.cut:] = r.base.values[layer][0, :, :r.cut]
                cache.update(k, v, layer)
        vision = self._new_vision(rows)
        out = self.model(input_ids=input_ids.to(device), attention_mask=mask.to(device), position_ids=pos.to(device),
                         past_key_values=cache, use_cache=True, logits_to_keep=1, **vision)
        with torch_threads(DECODE_THREADS if str(device).startswith("cpu") else None):
            self._decode(rows, out, cache, mask, params, row_done)

    def _decode(self, rows: list[Row], out, cache: Cache, mask: torch.Tensor, params: GenerationParams,
                row_done) -> None:
        """One token per live row per step; a row that stops keeps its states and leaves the batch."""
        device = self.backend.device
        alive = list(range(len(rows)))  # batch row -> index in rows
        while True:
            logits = out.logits[:, -1].float()
            tokens = self._pick(logits, params)
            chosen = self._chosen_logprobs(logits, tokens, params)
            keep = []
            for j, (i, tok) in enumerate(zip(alive, tokens.tolist())):
                r = rows[i]
                r.new.append(tok)
                if chosen is not None:
                    r.logprobs.append(chosen[j])
                if row_done(r.new) or len(r.new) >= params.max_new_tokens:
                    r.stopped_at = len(r.new)
                    self._keep_cache(r, cache, mask, j)
                else:
                    keep.append(j)
            if not keep:
                return
            if len(keep) < len(alive):
                index = torch.tensor(keep, device=device)
                cache.batch_select_indices(index)
                mask, tokens = mask[keep], tokens[keep]
                alive = [alive[j] for j in keep]
            mask = torch.cat([mask, torch.ones(len(alive), 1, dtype=torch.long)], 1)
            step_pos = torch.tensor([rows[i].next_pos + len(rows[i].new) - 1 for i in alive])
            # One query per row sees every unmasked column: the 4-D mask is the padding mask itself,
            # handed over ready so transformers does not rebuild it every step (~6% of a step).
            attend = mask.to(device)
            if self.full_attention_only:
                attend = {"full_attention": attend.bool()[:, None, None, :]}
            out = self.model(input_ids=tokens.view(-1, 1).to(device), attention_mask=attend,
                             position_ids=step_pos.view(1, -1, 1).expand(3, -1, -1).to(device),
                             past_key_values=cache, use_cache=True)

    def _new_vision(self, rows: list[Row]) -> dict[str, torch.Tensor]:
        """Pixel inputs of the vision runs each row feeds this turn (those after its cut)."""
        kinds = {self.encoder.image_token_id: ("pixel_values", "image_grid_thw"),
                 self.encoder.video_token_id: ("pixel_values_videos", "video_grid_thw")}
        parts: dict[str, list[torch.Tensor]] = {}
        for r in rows:
            seen = {token: [0, 0] for token in kinds}  # per kind: runs passed, patch rows passed
            for start, _ in vision_runs(r.enc.input_ids, self.pad_ids):
                token = r.enc.input_ids[start]
                pixels_key, grid_key = kinds[token]
                i, offset = seen[token]
                grid = getattr(r.enc, grid_key)[i]
                n = int(grid.prod())
                if start >= r.cut:
                    parts.setdefault(pixels_key, []).append(getattr(r.enc, pixels_key)[offset:offset + n])
                    parts.setdefault(grid_key, []).append(grid.view(1, 3))
                seen[token] = [i + 1, offset + n]
        out = {}
        for key, values in parts.items():
            value = torch.cat(values).to(self.backend.device)
            out[key] = value.to(self.backend.dtype) if key.startswith("pixel") else value
        return out

    @staticmethod
    def _chosen_logprobs(logits: torch.Tensor, tokens: torch.Tensor, params: GenerationParams) -> list[float] | None:
        """Each row's log-probability of its chosen token (temperature applied), one transfer for the batch."""
        if not (params.logprobs or params.confidence):
            return None
        t = params.temperature if params.temperature > 0 else 1.0
        return torch.log_softmax(logits / t, -1).gather(1, tokens.view(-1, 1)).view(-1).tolist()

    def _pick(self, logits: torch.Tensor, params: GenerationParams) -> torch.Tensor:
        if params.temperature <= 0:
            return logits.argmax(-1)
        scores = logits / params.temperature
        if params.top_k:
            kth = torch.topk(scores, min(params.top_k, scores.shape[-1]), -1).values[:, -1:]
            scores = scores.masked_fill(scores < kth, float("-inf"))
        if params.top_p < 1.0:
            sorted_scores, order = torch.sort(scores, descending=False)
            cum = sorted_scores.softmax(-1).cumsum(-1)
            drop = cum <= 1 - params.top_p
            drop[:, -1] = False
            scores = scores.masked_fill(drop.scatter(1, order, drop), float("-inf"))
        return torch.multinomial(scores.softmax(-1), 1).view(-1)

    def _keep_cache(self, r: Row, cache, mask: torch.Tensor, j: int) -> None:
        """Store a stopped row's states: the conversation so far and all but its last token."""
        cols = mask[j].nonzero().view(-1).to(self.backend.device)
        n_fed = len(cols)
        keys = [layer.keys[j:j + 1].index_select(2, cols) for layer in cache.layers]
        values = [layer.values[j:j + 1].index_select(2, cols) for layer in cache.layers]
        ids = r.enc.input_ids + r.new[:-1]
        assert keys[0].shape[2] == n_fed == len(ids), (keys[0].shape, n_fed, len(ids))
        self.caches[r.key] = TurnCache(ids=ids, keys=keys, values=values, media=r.media, pictures=r.pictures)

    def _generation(self, r: Row, params: GenerationParams, seconds: float) -> Generation:
        tok = self.backend.tokenizer
        new = r.new
        raw = tok.decode(new, skip_special_tokens=False)
        text, hit = cut_at_stop(tok.decode(new, skip_special_tokens=True), params.stop)
        stopped = bool(new) and (new[-1] in self.backend.stop_ids or any(s in raw for s in params.stop))
        reason = "stop" if stopped or hit else ("length" if len(new) >= params.max_new_tokens else "stop")
        gen = Generation(text=text, tokens_in=len(r.enc.input_ids), tokens_out=len(new), finish_reason=reason,
                         seconds=seconds, token_ids=new, extra={"cached_tokens": r.cut})
        if params.logprobs or params.confidence:
            gen.logprobs = r.logprobs
            gen.tokens = token_pieces(tok, new)
        return gen


