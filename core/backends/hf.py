"""Transformers backend: any Qwen2.5-VL checkpoint (hub id or folder), CPU or GPU, fp32/bf16.

No AutoProcessor (it needs torchvision): the tokenizer and the PIL image processor are loaded
separately and core.encoding expands the vision pads. Streaming runs `generate` in a thread with a
TextIteratorStreamer; a StoppingCriteria ends each sequence at a protocol stop string or when the
caller's cancel event is set, so batched generation stops every row on its own.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Iterator

import torch

from core.backends.base import (Backend, BackendError, Generation, GenerationParams, check_batch, cut_at_stop,
                                fit_context)
from core.backends.stopping import PrefillCancelled, StopCriteria
from core.backends.tokenprobs import TokenLogprobs, token_pieces
from core.encoding import VisionTextEncoder
from core.familiarity import load_reference, picture_features

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


def in_worker_thread(fn):
    """fn() run in a fresh thread, its result or exception handed back.

    OpenMP workers of a non-main thread do not spin-wait between parallel regions: on a shared
    CPU a batched generate in the main thread ran several times slower (docs/performance.md).
    """
    result: dict = {}

    def work() -> None:
        try:
            result["out"] = fn()
        except BaseException as e:  # re-raised in the caller's thread
            result["error"] = e

    thread = threading.Thread(target=work, name="hf-generate", daemon=True)
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["out"]


def turn_engine_supports(config) -> bool:
    """Whether greedy/sampled decoding under this generation config is what hf_turns implements
    (temperature, top-k, top-p): no repetition penalty, n-gram ban, bad words or forced tokens."""
    return (getattr(config, "repetition_penalty", None) in (None, 1.0)
            and not getattr(config, "no_repeat_ngram_size", None)
            and not getattr(config, "bad_words_ids", None)
            and not getattr(config, "suppress_tokens", None)
            and not getattr(config, "begin_suppress_tokens", None)
            and not getattr(config, "forced_bos_token_id", None)
            and getattr(config, "min_new_tokens", None) in (None, 0)
            and getattr(config, "min_length", None) in (None, 0))


def resolve_device(device: str | None) -> str:
    if device:
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(dtype: str | torch.dtype | None, device: str) -> torch.dtype:
    """fp32 on CPU, bf16 on a GPU that has it, unless asked otherwise."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        if device.startswith("cuda") and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if dtype not in DTYPES:
        raise BackendError(f"unknown dtype {dtype!r}; choose float32, bfloat16 or float16")
    return DTYPES[dtype]


def read_pixel_preset(model: str) -> str | None:
    """The resolution preset a checkpoint of ours declares in studio.json (None for others)."""
    path = Path(model) / "studio.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("pixel_preset")
    except (OSError, ValueError, AttributeError) as e:
        log.warning("ignoring unreadable %s: %s", path, e)
        return None


def resolve_attention(attn: str | None, device: str) -> str:
    """sdpa unless asked; flash_attention_2 on a GPU when flash-attn is installed."""
    if attn not in (None, "auto"):
        return attn
    import importlib.util

    if device.startswith("cuda") and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"


def looks_like_path(model: str) -> bool:
    return model.startswith((".", "/", "~")) or "\\" in model or model.count("/") != 1 or Path(model).exists()


class TransformersBackend(Backend):
    name = "transformers"

    def __init__(self, model: str, device: str | None = None, dtype: str | torch.dtype | None = None,
                 device_map: str | None = None, attn_implementation: str | None = None,
                 max_memory_gb: float | None = None, cache_turns: bool = True) -> None:
        """`device_map` ('auto') spreads a large model over the GPUs; `attn_implementation`: sdpa,
        flash_attention_2 or eager (default: flash-attention when installed on a GPU, else sdpa);
        `max_memory_gb`: the memory the weights may use (default: what the device has);
        `cache_turns`: batched turns through the turn engine (KV caches kept between turns)."""
        from transformers import Qwen2_5_VLForConditionalGeneration

        from core.backends.sizing import check_fits

        self.model_id = str(model)
        if looks_like_path(self.model_id) and not Path(self.model_id).expanduser().exists():
            raise BackendError(f"model folder {self.model_id} does not exist "
                               "(give a Qwen2.5-VL checkpoint folder or a hub id like TIGER-Lab/PixelReasoner-RL-v1)")
        if Path(self.model_id).is_dir() and not (Path(self.model_id) / "config.json").is_file():
            raise BackendError(f"{self.model_id} is not a checkpoint folder (it has no config.json)")
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.attn_implementation = resolve_attention(attn_implementation, self.device)
        try:
            problem = check_fits(self.model_id, self.dtype, self.device, device_map, max_memory_gb)
            if problem:
                raise BackendError(f"cannot load {self.model_id!r}: {problem}")
            self.encoder = VisionTextEncoder.from_pretrained(self.model_id)
            self.model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
                self.model_id, dtype=self.dtype, device_map=device_map, attn_implementation=self.attn_implementation)
        except (OSError, ValueError, KeyError, ImportError) as e:
            raise BackendError(
                f"cannot load model {self.model_id!r}: {str(e).strip().rstrip('.')}. A hub id needs network "
                "access or a local cache; a folder needs config.json, weights, the tokenizer and "
                "preprocessor_config.json.") from None
        if device_map:
            self.device = str(self.model.get_input_embeddings().weight.device)
        else:
            self.model.to(self.device)
        self.model.eval()
        self.tokenizer = self.encoder.tokenizer
        self.pixel_preset = read_pixel_preset(self.model_id)
        self.reference = load_reference(self.model_id) if Path(self.model_id).is_dir() else None
        ids = self.tokenizer.convert_tokens_to_ids
        self.stop_ids = {ids("<|im_end|>"), ids("<|endoftext|>")}
        self._lock = threading.Lock()  # one generate at a time on one model
        # generate_batch through core.backends.hf_turns (caches kept between turns), where the
        # checkpoint's generation config asks for no logits processing the engine lacks
        self.cache_turns = cache_turns and turn_engine_supports(self.model.generation_config)
        self._turns = None

    # ---- generation ---------------------------------------------------------------------------

    def _encode_prompt(self, messages: list[dict]):
        """The conversation as the model is fed it (RL's policy backend feeds its own token ledger)."""
        return self.encoder.encode(messages, add_generation_prompt=True)

    def _inputs(self, batch: list[list[dict]]) -> dict[str, torch.Tensor]:
        encoded = [self._encode_prompt(m) for m in batch]
        inputs = self.encoder.collate(encoded, pad_left=True)
        inputs.pop("labels")
        for key, value in inputs.items():
            value = value.to(self.device)
            if key in ("pixel_values", "pixel_values_videos"):
                value = value.to(self.dtype)
            inputs[key] = value
        return inputs

    def _generate_kwargs(self, params: GenerationParams) -> dict:
        sample = params.temperature > 0
        kw = dict(max_new_tokens=params.max_new_tokens, do_sample=sample, return_dict_in_generate=True,
                  output_logits=params.logprobs, eos_token_id=sorted(self.stop_ids),
                  pad_token_id=self.encoder.pad_token_id)
        if sample:
            kw.update(temperature=params.temperature, top_p=params.top_p, top_k=params.top_k)  # 0: no top-k
        else:
            kw.update(temperature=None, top_p=None, top_k=None)
        return kw

    def _run_generate(self, inputs: dict, params: GenerationParams, criteria: StopCriteria, streamer=None,
                      probs: TokenLogprobs | None = None):
        from transformers import LogitsProcessorList, StoppingCriteriaList

        watch = criteria.watch_prefill(self.model) if streamer is not None else nullcontext()  # Stop: streams only
        with self._lock, torch.inference_mode(), watch:
            if params.seed is not None:
                torch.manual_seed(params.seed)
            return self.model.generate(**inputs, **self._generate_kwargs(params), streamer=streamer,
                                       stopping_criteria=StoppingCriteriaList([criteria]),
                                       logits_processor=LogitsProcessorList([probs] if probs else []))

    @staticmethod
    def _token_probs(params: GenerationParams) -> TokenLogprobs | None:
        """The recorder of each token's probability, where confidence is asked and RL's logits are not."""
        return TokenLogprobs() if params.confidence and not params.logprobs else None

    def _finish(self, out, row: int, prompt_len: int, tokens_in: int, criteria: StopCriteria,
                params: GenerationParams, seconds: float, probs: TokenLogprobs | None = None) -> Generation:
        new = out.sequences[row, prompt_len:].tolist()
        stopped_at = criteria.lengths[row]
        new = new[:stopped_at] if stopped_at is not None else new
        raw = self.tokenizer.decode(new, skip_special_tokens=False)
        text_full = self.tokenizer.decode(new, skip_special_tokens=True)
        text, hit = cut_at_stop(text_full, params.stop)
        if criteria.cancelled and stopped_at is None:
            reason = "cancelled"
        elif stopped_at is not None or hit or any(s in raw for s in params.stop):
            reason = "stop"
        else:
            reason = "length" if len(new) >= params.max_new_tokens else "stop"
        gen = Generation(text=text, tokens_in=tokens_in, tokens_out=len(new), finish_reason=reason,
                         seconds=seconds, token_ids=new)
        if params.logprobs and out.logits:
            t = params.temperature if params.temperature > 0 else 1.0
            gen.logprobs = [float(torch.log_softmax(out.logits[i][row].float() / t, -1)[tok])
                            for i, tok in enumerate(new)]
        elif probs is not None:
            gen.logprobs = probs.row(row, new)
        if gen.logprobs is not None:
            gen.tokens = token_pieces(self.tokenizer, new)
        return gen

    def stream(self, messages: list[dict], params: GenerationParams,
               cancel: threading.Event | None = None) -> Iterator[str | Generation]:
        from transformers import TextIteratorStreamer

        t0 = time.perf_counter()
        inputs = self._inputs([messages])
        prompt_len = inputs["input_ids"].shape[1]
        params = fit_context(prompt_len, params)
        criteria = StopCriteria(self.tokenizer, params.stop, self.stop_ids, prompt_len, 1, cancel)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        probs = self._token_probs(params)
        result: dict = {}

        def work() -> None:
            try:
                result["out"] = self._run_generate(inputs, params, criteria, streamer, probs)
            except BaseException as e:  # re-raised in the caller's thread below
                result["error"] = e
                streamer.end()

        thread = threading.Thread(target=work, name="hf-generate", daemon=True)
        thread.start()
        sent = ""
        try:
            for chunk in streamer:
                if not chunk:
                    continue
                text, _ = cut_at_stop(sent + chunk, params.stop)
                if len(text) > len(sent):
                    yield text[len(sent):]
                    sent = text
        finally:  # a consumer that stops reading (closed generator) must not leave the model busy
            if thread.is_alive() and "out" not in result:
                criteria.abandoned.set()
            thread.join()
        if isinstance(result.get("error"), PrefillCancelled):  # Stop while the prompt was read
            yield Generation(text="", tokens_in=prompt_len, finish_reason="cancelled", seconds=time.perf_counter() - t0)
            return
        if "error" in result:
            raise BackendError(f"generation failed: {result['error']}") from result["error"]
        gen = self._finish(result["out"], 0, prompt_len, prompt_len, criteria, params, time.perf_counter() - t0,
                           probs)
        if len(gen.text) > len(sent) and gen.text.startswith(sent):
            yield gen.text[len(sent):]  # what the streamer still held back
        yield gen

    def generate_batch(self, batch: list[list[dict]], params: GenerationParams) -> list[Generation]:
        """Left-padded batched generate; each row stops on its own stop string."""
        if not batch:
            return []
        if getattr(self, "cache_turns", False):
            return in_worker_thread(lambda: self._turn_engine_generate(batch, params))
        t0 = time.perf_counter()
        inputs = self._inputs(batch)
        prompt_len = inputs["input_ids"].shape[1]
        lengths = inputs["attention_mask"].sum(-1).tolist()
        check_batch(lengths, params)  # before any prefill
        criteria = StopCriteria(self.tokenizer, params.stop, self.stop_ids, prompt_len, len(batch))
        probs = self._token_probs(params)
        out = in_worker_thread(lambda: self._run_generate(inputs, params, criteria, probs=probs))
        seconds = time.perf_counter() - t0
        return [self._finish(out, row, prompt_len, lengths[row], criteria, params, seconds, probs)
                for row in range(len(batch))]

    def _turn_engine_generate(self, batch: list[list[dict]], params: GenerationParams) -> list[Generation]:
        from core.backends.hf_turns import TurnEngine

        with self._lock:
            if self._turns is None:
                self._turns = TurnEngine(self)
            return self._turns.generate(batch, params)

    def familiarity(self, pictures: list) -> list[tuple[bool, float]] | None:
        """Each picture checked against the checkpoint's familiarity reference (None without one)."""
        if getattr(self, "reference", None) is None or not pictures:
            return None
        with self._lock:
            features = picture_features(self.model, self.encoder, pictures, self.reference.pixel_preset)
        return [self.reference.check(f) for f in features]

    def forget(self) -> None:
        """Drop the conversations' caches kept between turns."""
        if getattr(self, "_turns", None) is not None:
            self._turns.forget()
