"""RL rollouts through the core tool loop, recorded token by token as the policy saw them.

`core.loop.run_batch` drives the episodes (generate -> parse -> execute -> observe), exactly as in
the app and evaluation. The backend it is given here is the policy itself, with one difference
from the serving backends: it keeps, per conversation, a `Ledger` of the tokens the policy was
conditioned on and the tokens it sampled (token-in, token-out). A later turn is conditioned on the
earlier turns' *sampled* ids, never on a re-tokenization of their text, so that

* the training sequence is exactly the sequence the policy generated in (same ids, same images:
  the first image, each crop, each selected frame), and
* the log-probabilities recomputed by one forward pass over the whole conversation equal the
  sampling-time ones (tests/test_logprob_agreement.py).

Masks: the sampled ids of assistant turns are trained (mask 1); everything else — the prompt,
the observation turns (text and image pads), the chat-format tokens between turns, and an
`<|im_end|>` the policy did not sample itself (a turn stopped at `</tool_call>`) — is masked.

Two generators: `PolicyBackend` (batched through core.backends.hf_turns, each conversation's key/value
cache kept between turns; transformers `generate` for scripted turns; CPU or GPU) and
`VLLMPolicyBackend` (TRL's vLLM integration, colocate mode; optional import, image tasks).
"""
from __future__ import annotations

import copy
import logging
import threading
import time
from dataclasses import dataclass, field

import torch
from PIL import Image

from core import protocol as P
from core.backends.base import Backend, BackendError, Generation, GenerationParams, cut_at_stop
from core.backends.hf import TransformersBackend, turn_engine_supports
from core.encoding import Encoded, VisionTextEncoder
from core.loop import Episode, LoopConfig, Task, run_batch
from core.media import ImageStore, MemoryImageStore
from core.trajectory import Trajectory

log = logging.getLogger(__name__)


@dataclass
class Ledger:
    """One conversation's tokens: prompt, then sampled turns and observation suffixes."""

    ids: list[int]
    mask: list[int]  # 1 on sampled assistant tokens
    logprobs: list[float]  # sampling-time log-prob of each sampled token (0.0 elsewhere)
    prompt_len: int
    image_pixels: list[torch.Tensor] = field(default_factory=list)
    image_grids: list[torch.Tensor] = field(default_factory=list)
    images: list[Image.Image] = field(default_factory=list)  # as the model saw them, in prompt order
    video: tuple | None = None  # (pixel_values_videos, video_grid_thw, second_per_grid_ts) of the prompt
    n_messages: int = 0  # messages of the conversation already accounted for in ids
    ended_with_im_end: bool = False

    def encoded(self) -> Encoded:
        enc = Encoded(input_ids=list(self.ids), assistant_mask=list(self.mask))
        if self.image_pixels:
            enc.pixel_values, enc.image_grid_thw = torch.cat(self.image_pixels), torch.cat(self.image_grids)
        if self.video is not None:
            enc.pixel_values_videos, enc.video_grid_thw, enc.second_per_grid_ts = self.video
        return enc

    @property
    def completion_ids(self) -> list[int]:
        return self.ids[self.prompt_len:]

    @property
    def completion_mask(self) -> list[int]:
        return self.mask[self.prompt_len:]

    @property
    def completion_logprobs(self) -> list[float]:
        return self.logprobs[self.prompt_len:]

    def mm_inputs(self) -> dict[str, torch.Tensor]:
        """The model's vision kwargs for this conversation alone."""
        enc = self.encoded()
        return {k: getattr(enc, k) for k in ("pixel_values", "image_grid_thw", "pixel_values_videos",
                                              "video_grid_thw", "second_per_grid_ts") if getattr(enc, k) is not None}


class LedgerBook:
    """Ledgers of the conversations in flight, keyed by their message list (the Episode's own list)."""

    def __init__(self, encoder: VisionTextEncoder) -> None:
        self.encoder = encoder
        self._book: dict[int, tuple[list, Ledger]] = {}
        ids = encoder.tokenizer.convert_tokens_to_ids
        self.im_end_id = ids(P.IM_END)

    def get(self, messages: list[dict]) -> Ledger | None:
        hit = self._book.get(id(messages))
        return hit[1] if hit is not None and hit[0] is messages else None

    def for_generation(self, messages: list[dict]) -> Ledger:
        """The ledger of `messages`, created from the prompt or extended by the new observation."""
        ledger = self.get(messages)
        if ledger is None:
            enc = self.encoder.encode(messages, add_generation_prompt=True)
            ledger = Ledger(ids=list(enc.input_ids), mask=[0] * len(enc), logprobs=[0.0] * len(enc),
                            prompt_len=len(enc), n_messages=len(messages))
            if enc.pixel_values is not None:
                ledger.image_pixels, ledger.image_grids = [enc.pixel_values], [enc.image_grid_thw]
            ledger.images = list(P.media_in(messages)[0])
            if enc.pixel_values_videos is not None:
                ledger.video = (enc.pixel_values_videos, enc.video_grid_thw, enc.second_per_grid_ts)
            self._book[id(messages)] = (messages, ledger)
            return ledger
        new = messages[ledger.n_messages:]
        if not new or new[0]["role"] != "assistant" or any(m["role"] != "user" for m in new[1:]):
            raise BackendError("a ledger expects its own assistant turn followed by observation turns")
        self._append_observations(ledger, new[1:])
        ledger.n_messages = len(messages)
        return ledger

    def _append_observations(self, ledger: Ledger, observations: list[dict]) -> None:
        text = "" if ledger.ended_with_im_end else P.IM_END
        text += "\n" + "".join(f"{P.IM_START}user\n{P.render_content(m['content'])}{P.IM_END}\n" for m in observations)
        text += f"{P.IM_START}assistant\n"
        images = [p["image"] for m in observations if not isinstance(m["content"], str)
                  for p in m["content"] if p["type"] == "image"]
        tokens = self.encoder.tokenizer(text, add_special_tokens=False)["input_ids"]
        counts: list[int] = []
        if images:
            pixels, grid = self.encoder.encode_images(images)
            ledger.image_pixels.append(pixels)
            ledger.image_grids.append(grid)
            ledger.images.extend(images)
            counts = (grid.prod(-1) // self.encoder.merge_size ** 2).tolist()
        pad = self.encoder.image_token_id
        if tokens.count(pad) != len(counts):
            raise BackendError(f"observation text holds {tokens.count(pad)} image pads for {len(counts)} images")
        queue = iter(counts)
        for t in tokens:
            n = next(queue) if t == pad else 1
            ledger.ids.extend([t] * n)
        added = len(ledger.ids) - len(ledger.mask)
        ledger.mask.extend([0] * added)
        ledger.logprobs.extend([0.0] * added)

    def record(self, messages: list[dict], gen: Generation) -> None:
        """Append a sampled turn (its ids and sampling-time log-probs) to the conversation's ledger."""
        ledger = self.get(messages)
        ids = list(gen.token_ids or [])
        lps = list(gen.logprobs) if gen.logprobs is not None else [0.0] * len(ids)
        if len(lps) != len(ids):
            raise BackendError(f"{len(ids)} sampled tokens but {len(lps)} log-probs")
        ledger.ids.extend(ids)
        ledger.mask.extend([1] * len(ids))
        ledger.logprobs.extend(lps)
        ledger.ended_with_im_end = bool(ids) and ids[-1] == self.im_end_id
        ledger.n_messages = len(messages)  # the loop appends this turn's assistant message next


class ForcedTurns:
    """A logits processor that makes `generate` emit scripted token ids row by row (tests, demos).

    Only the processed scores are forced: the raw logits (and so the recorded log-probs) remain the
    model's own, which is what the log-prob agreement test needs.
    """

    def __init__(self, scripts: list[list[int] | None], prompt_len: int, fill_id: int) -> None:
        self.scripts, self.prompt_len, self.fill_id = scripts, prompt_len, fill_id

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        k = input_ids.shape[1] - self.prompt_len
        forced = torch.full_like(scores, float("-inf"))
        for row, script in enumerate(self.scripts):
            if script is None:
                forced[row] = scores[row]
            else:
                forced[row, script[k] if k < len(script) else self.fill_id] = 0.0
        return forced


class PolicyBackend(TransformersBackend):
    """The policy being trained, as a loop backend: batched transformers generation from ledgers.

    Built around a live model (no loading); `script(messages) -> str | None` optionally forces a
    turn's text (tests), the model still scoring every token.
    """

    name = "policy"

    def __init__(self, model, encoder: VisionTextEncoder, model_id: str = "policy", script=None) -> None:
        self.model, self.encoder, self.tokenizer = model, encoder, encoder.tokenizer
        self.model_id, self.pixel_preset = model_id, None
        self.device = str(next(model.parameters()).device)
        self.dtype = next(model.parameters()).dtype
        ids = self.tokenizer.convert_tokens_to_ids
        self.stop_ids = {ids(P.IM_END), ids(P.ENDOFTEXT)}
        self._lock = threading.Lock()
        self.book = LedgerBook(encoder)
        self.script = script
        self._forced: list[list[int] | None] | None = None
        # batched turns through the turn engine (each conversation's cache kept between turns, fed
        # from its ledger); scripted turns need generate's logits processor
        self.cache_turns = script is None and turn_engine_supports(model.generation_config)
        self._turns = None

    def _encode_prompt(self, messages: list[dict]):
        return self.book.for_generation(messages).encoded()

    def _inputs(self, batch: list[list[dict]]) -> dict[str, torch.Tensor]:
        if self.script is not None:
            self._forced = [self._script_ids(m) for m in batch]
        return super()._inputs(batch)

    def _script_ids(self, messages: list[dict]) -> list[int] | None:
        text = self.script(messages)
        if text is None:
            return None
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids if text.rstrip().endswith(P.TOOL_CALL_END) else ids + [self.tokenizer.convert_tokens_to_ids(P.IM_END)]

    def _run_generate(self, inputs: dict, params: GenerationParams, criteria, streamer=None, probs=None):
        from transformers import LogitsProcessorList, StoppingCriteriaList

        kw = self._generate_kwargs(params)
        processors = [probs] if probs is not None else []  # None here: RL asks for logprobs, kept as logits
        if self._forced is not None and any(s is not None for s in self._forced):
            processors.insert(0, ForcedTurns(self._forced, inputs["input_ids"].shape[1], self.encoder.pad_token_id))
        if processors:
            kw["logits_processor"] = LogitsProcessorList(processors)
        with self._lock, torch.inference_mode():
            if params.seed is not None:
                torch.manual_seed(params.seed)
            return self.model.generate(**inputs, **kw, stopping_criteria=StoppingCriteriaList([criteria]))

    def stream(self, messages, params, cancel=None):
        yield self.generate_batch([messages], params)[0]

    def generate_batch(self, batch: list[list[dict]], params: GenerationParams) -> list[Generation]:
        params = _with_logprobs(params)
        gens = super().generate_batch(batch, params)
        for messages, gen in zip(batch, gens):
            self.book.record(messages, gen)
        return gens


def _with_logprobs(params: GenerationParams) -> GenerationParams:
    p = copy.copy(params)
    p.logprobs = True
    return p


class VLLMPolicyBackend(Backend):
    """Rollout turns generated by TRL's vLLM integration (`trainer.vllm_generation`, colocate mode).

    Prompts go to vLLM as token ids (one pad per image: vLLM expands them) with the images, so
    vLLM continues from the same ids the ledger holds. Sampling parameters (temperature, top-p,
    stop strings) are TRL's, set from the RL config. Video tasks need the transformers path.
    """

    name = "vllm-policy"

    def __init__(self, vllm_generation, encoder: VisionTextEncoder, model_id: str = "policy") -> None:
        self.vllm, self.encoder, self.model_id = vllm_generation, encoder, model_id
        self.book = LedgerBook(encoder)

    def _collapsed(self, ledger: Ledger) -> list[int]:
        out, pad = [], self.encoder.image_token_id
        for t in ledger.ids:
            if t == pad and out and out[-1] == pad:
                continue
            out.append(t)
        return out

    def generate_batch(self, batch: list[list[dict]], params: GenerationParams) -> list[Generation]:
        if not batch:
            return []
        ledgers = [self.book.for_generation(m) for m in batch]
        if any(ld.video is not None for ld in ledgers):
            raise BackendError("vLLM rollouts take image tasks; run video tasks with use_vllm=false")
        t0 = time.perf_counter()
        prompts = [self._collapsed(ld) for ld in ledgers]
        images = [list(ld.images) or None for ld in ledgers]
        _, completion_ids, logprobs, _ = self.vllm.generate(prompts=prompts, images=images, num_generations=1)
        seconds = time.perf_counter() - t0
        tok = self.encoder.tokenizer
        gens = []
        for messages, ids, lps, ld in zip(batch, completion_ids, logprobs, ledgers):
            text, hit = cut_at_stop(tok.decode(ids, skip_special_tokens=True), params.stop)
            reason = "length" if len(ids) >= params.max_new_tokens and not hit else "stop"
            gen = Generation(text=text, tokens_in=len(ld.ids), tokens_out=len(ids), finish_reason=reason,
                             seconds=seconds, token_ids=list(ids),
                             logprobs=[float("nan") if lp[0] is None else float(lp[0]) for lp in lps])
            self.book.record(messages, gen)
            gens.append(gen)
        return gens


@dataclass
class Rollout:
    trajectory: Trajectory
    ledger: Ledger


def rollout(backend: PolicyBackend | VLLMPolicyBackend, tasks: list[Task], config: LoopConfig,
            params: GenerationParams, store: ImageStore | None = None) -> list[Rollout]:
    """Run the episodes through core.loop.run_batch; return each trajectory with its ledger."""
    store = store if store is not None else MemoryImageStore()
    episodes = [Episode(t, config, store, backend.name, backend.model_id) for t in tasks]
    run_batch(backend, tasks, config, params, store, episodes=episodes)
    out = []
    for ep in episodes:
        ledger = backend.book.get(ep.messages)
        if ledger is None:  # the episode failed before its first turn
            ledger = backend.book.for_generation(ep.messages)
        out.append(Rollout(ep.trajectory, ledger))
    backend.book = LedgerBook(backend.encoder)  # ledgers belong to their rollouts now
    return out


# ---- from rollouts to training tensors ---------------------------------------------------------

MM_KEYS = ("pixel_values", "image_grid_thw", "pixel_values_videos", "video_grid_thw", "second_per_grid_ts")


def _pad(rows: list[list], value, left: bool = False, dtype=torch.long) -> torch.Tensor:
    width = max([len(r) for r in rows] + [1])
    return torch.tensor([([value] * (width - len(r)) + list(r)) if left else (list(r) + [value] * (width - len(r)))
                         for r in rows], dtype=dtype)


def training_batch(ledgers: list[Ledger], encoder: VisionTextEncoder) -> dict:
    """TRL's GRPO layout: left-padded prompts, right-padded completions, and

    * `tool_mask` (B, C): 1 on sampled assistant tokens, 0 on observations and format tokens;
    * `mm_token_type_ids` (B, P + C): 1 on image pads, 2 on video pads (Qwen2.5-VL's rope index);
    * `mm`: per-sample vision tensors (the images the policy saw), kept as a list so TRL's
      shuffle/split of the generation batch moves them with their rows;
    * `sampling_per_token_logps` (B, C): the log-probs recorded while sampling.
    """
    pad = encoder.pad_token_id
    prompt_ids = _pad([ld.ids[:ld.prompt_len] for ld in ledgers], pad, left=True)
    prompt_mask = _pad([[1] * ld.prompt_len for ld in ledgers], 0, left=True)
    completion_ids = _pad([ld.completion_ids for ld in ledgers], pad)
    completion_mask = _pad([[1] * len(ld.completion_ids) for ld in ledgers], 0)
    tool_mask = _pad([ld.completion_mask for ld in ledgers], 0)
    logps = _pad([ld.completion_logprobs for ld in ledgers], 0.0, dtype=torch.float32)
    ids = torch.cat([prompt_ids, completion_ids], 1)
    attn = torch.cat([prompt_mask, completion_mask], 1)
    mm = torch.zeros_like(ids)
    mm[(ids == encoder.image_token_id) & (attn == 1)] = 1
    mm[(ids == encoder.video_token_id) & (attn == 1)] = 2
    return {"prompt_ids": prompt_ids, "prompt_mask": prompt_mask, "completion_ids": completion_ids,
            "completion_mask": completion_mask, "tool_mask": tool_mask, "mm_token_type_ids": mm,
            "sampling_per_token_logps": logps, "mm": [ld.mm_inputs() for ld in ledgers]}


def merge_mm(rows: list[dict], device, dtype) -> dict[str, torch.Tensor]:
    """Concatenate per-sample vision tensors in row order, on the model's device and dtype."""
    out = {}
    for key in MM_KEYS:
        parts = [r[key] for r in rows if r.get(key) is not None]
        if parts:
            value = torch.cat(parts).to(device)
            out[key] = value.to(dtype) if key.startswith("pixel_values") else value
    return out


def forward_logps(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, logits_to_keep: int,
                  mm_rows: list[dict], mm_token_type_ids: torch.Tensor | None, batch_size: int | None = None,
                  compute_entropy: bool = False, temperature: float = 1.0, fused: bool = True):
    """Per-token log-probs (and entropies) of the last `logits_to_keep` tokens, in chunks of
    `batch_size` rows, each row seeing its own images and videos.

    `fused=True` uses TRL's fused LM head (the model patched by GRPOTrainer: no full logits);
    `fused=False` is a plain forward with logits / temperature (an unpatched model).
    """
    batch_size = batch_size or input_ids.size(0)
    dtype = next(model.parameters()).dtype
    all_logps, all_ent = [], []
    for start in range(0, input_ids.size(0), batch_size):
        end = min(start + batch_size, input_ids.size(0))
        ids, attn = input_ids[start:end], attention_mask[start:end]
        kwargs = dict(input_ids=ids, attention_mask=attn, **merge_mm(mm_rows[start:end], ids.device, dtype))
        if mm_token_type_ids is not None:
            kwargs["mm_token_type_ids"] = mm_token_type_ids[start:end]
        if fused:
            labels = ids.masked_fill(attn == 0, -100)
            labels[:, :-logits_to_keep] = -100
            out = model(**kwargs, labels=labels, fused_lm_head=True)
            all_logps.append(out.log_probs[:, -logits_to_keep:])
            if compute_entropy:
                all_ent.append(out.entropy[:, -logits_to_keep:])
        else:
            logits = model(**kwargs, use_cache=False).logits[:, -logits_to_keep - 1:-1].float() / temperature
            lsm = torch.log_softmax(logits, -1)
            all_logps.append(lsm.gather(-1, ids[:, -logits_to_keep:].unsqueeze(-1)).squeeze(-1))
            if compute_entropy:
                all_ent.append(-(lsm.exp() * lsm).sum(-1))
    return torch.cat(all_logps), (torch.cat(all_ent) if compute_entropy else None)
