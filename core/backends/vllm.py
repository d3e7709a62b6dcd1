"""vLLM offline engine backend: batched generation on a GPU (evaluation, RL rollouts).

vLLM is optional (requirements-gpu.txt); without it this backend says how to install it. Prompts
are render_prompt's text (one pad per image/video: vLLM expands them itself) with the images and
video frames passed as multi_modal_data, so the model sees exactly what the other backends send.
"""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import numpy as np

from core import protocol as P
from core.backends.base import Backend, BackendError, Generation, GenerationParams, check_batch, cut_at_stop
from core.backends.hf import read_pixel_preset

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install -r requirements-gpu.txt (vLLM needs a CUDA GPU)"


def vllm_prompt(messages: list[dict]) -> dict:
    """One vLLM prompt: the rendered text plus its images/videos in prompt order."""
    images, videos = P.media_in(messages)
    prompt: dict = {"prompt": P.render_prompt(messages, add_generation_prompt=True)}
    data: dict = {}
    if images:
        data["image"] = [im.convert("RGB") for im in images]
    if videos:
        arrays = [np.stack([np.asarray(f.convert("RGB")) for f in frames]) for frames in videos]
        data["video"] = arrays[0] if len(arrays) == 1 else arrays
    if data:
        prompt["multi_modal_data"] = data
    return prompt


def sampling_kwargs(params: GenerationParams, index: int = 0) -> dict:
    """SamplingParams arguments for the batch's `index`-th conversation: stop strings kept in the
    output so cut_at_stop decides (it keeps </tool_call> and drops the others), greedy at
    temperature 0, seed + index so the samples of one seeded batch differ (and repeat run to run)."""
    seed = None if params.seed is None else params.seed + index
    kw = dict(max_tokens=params.max_new_tokens, temperature=max(params.temperature, 0.0), top_p=params.top_p,
              top_k=params.top_k if params.top_k > 0 else -1, stop=list(params.stop),
              include_stop_str_in_output=True, skip_special_tokens=True, seed=seed)
    if params.logprobs or params.confidence:
        kw["logprobs"] = 0  # the sampled token's own log-probability
    return kw


def batch_sampling_kwargs(params: GenerationParams, n: int) -> list[dict]:
    """One SamplingParams per conversation (vLLM takes a list matching the prompts)."""
    return [sampling_kwargs(params, i) for i in range(n)]


def to_generation(output, params: GenerationParams, seconds: float) -> Generation:
    """A vLLM RequestOutput -> Generation."""
    completion = output.outputs[0]
    text, hit = cut_at_stop(completion.text, params.stop)
    token_ids = list(completion.token_ids)
    logprobs = tokens = None
    if (params.logprobs or params.confidence) and completion.logprobs:
        chosen = [step[tok] for tok, step in zip(token_ids, completion.logprobs)]
        logprobs = [float(c.logprob) for c in chosen]
        tokens = [c.decoded_token or "" for c in chosen]
    reason = "length" if completion.finish_reason == "length" and not hit else "stop"
    return Generation(text=text, tokens_in=len(output.prompt_token_ids or []), tokens_out=len(token_ids),
                      finish_reason=reason, seconds=seconds, token_ids=token_ids, logprobs=logprobs, tokens=tokens)


class VLLMBackend(Backend):
    """The offline engine returns whole turns: the app shows each turn when it is done."""

    name = "vllm"
    streams = False

    def __init__(self, model: str, device: str | None = None, dtype: str | None = None,
                 max_model_len: int = 16384, gpu_memory_utilization: float = 0.85,
                 tensor_parallel_size: int = 1, max_images: int = 40) -> None:
        try:
            import vllm
        except ImportError:
            raise BackendError(f"the vllm backend needs vLLM, which is not installed: {INSTALL_HINT}") from None
        self.model_id = str(model)
        if self.model_id.startswith((".", "/")) and not Path(self.model_id).exists():
            raise BackendError(f"model folder {self.model_id} does not exist")
        try:
            self.llm = vllm.LLM(model=self.model_id, dtype=dtype or "auto", max_model_len=max_model_len,
                                gpu_memory_utilization=gpu_memory_utilization,
                                tensor_parallel_size=tensor_parallel_size,
                                limit_mm_per_prompt={"image": max_images, "video": 1})
        except Exception as e:  # vLLM raises many kinds (no GPU, OOM, bad config)
            raise BackendError(f"vLLM could not load {self.model_id!r}: {type(e).__name__}: {e}") from None
        self._vllm = vllm
        self.pixel_preset = read_pixel_preset(self.model_id)
        self._lock = threading.Lock()
        self._encoder = None

    def prompt_tokens(self, messages: list[dict]) -> int | None:
        """The prompt's token count as the engine will expand it (the checkpoint's own tokenizer and
        Qwen2-VL image processor, core.encoding); None where the checkpoint has no such processor."""
        if self._encoder is None:
            from core.encoding import VisionTextEncoder

            try:
                self._encoder = VisionTextEncoder.from_pretrained(self.model_id)
            except Exception as e:  # noqa: BLE001 - another model family: vLLM checks its own limit
                log.warning("cannot count %s's prompt tokens (%s); vLLM's max_model_len applies", self.model_id, e)
                self._encoder = False
        return self._encoder.count_tokens(messages) if self._encoder else None

    def generate(self, messages: list[dict], params: GenerationParams,
                 cancel: threading.Event | None = None) -> Generation:
        """One conversation (no token streaming: the offline engine returns whole turns)."""
        if cancel is not None and cancel.is_set():
            return Generation(text="", finish_reason="cancelled")
        return self.generate_batch([messages], params)[0]

    def generate_batch(self, batch: list[list[dict]], params: GenerationParams) -> list[Generation]:
        if not batch:
            return []
        if params.max_context_tokens is not None:  # before the engine sees any prompt
            check_batch([self.prompt_tokens(m) for m in batch], params)
        t0 = time.perf_counter()
        sampling = [self._vllm.SamplingParams(**kw) for kw in batch_sampling_kwargs(params, len(batch))]
        with self._lock:
            outputs = self.llm.generate([vllm_prompt(m) for m in batch], sampling, use_tqdm=False)
        seconds = time.perf_counter() - t0
        return [to_generation(o, params, seconds) for o in outputs]
