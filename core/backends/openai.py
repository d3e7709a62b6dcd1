"""OpenAI-compatible chat endpoint backend (`vllm serve`, `transformers serve`, SGLang, ...).

The system prompt goes as text, images as data:image/png;base64 URLs (PNG: lossless, so the
server sees the exact pixels the loop produced), a video as its overview frames, one image part
each. Generation stops at </tool_call>; servers drop the stop string from the text, so it is put
back when the turn ends inside an open tool call. Servers that parse tool calls (vLLM's hermes
parser, `transformers serve`) move the call out of the text into structured `tool_calls`, even
though no `tools` are sent; the call is written back as the protocol's <tool_call> block, so the
loop and the log see the same text whichever form the server chose.
"""
from __future__ import annotations

import base64
import io
import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Iterator

from PIL import Image

from core import protocol as P
from core.backends.base import (Backend, BackendError, Generation, GenerationParams, check_batch, cut_at_stop,
                                fit_context)

log = logging.getLogger(__name__)

MAX_PARALLEL = 8  # concurrent requests of generate_batch; the server batches them


def image_data_url(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def to_openai_messages(messages: list[dict]) -> list[dict]:
    """HF-style messages -> chat.completions messages (content parts for user turns)."""
    out = []
    for m in messages:
        content = m["content"]
        if isinstance(content, str):
            out.append({"role": m["role"], "content": content})
            continue
        if m["role"] in ("assistant", "system"):
            out.append({"role": m["role"], "content": P.render_content(
                [p for p in content if p["type"] == "text"])})
            continue
        parts = []
        for part in content:
            if part["type"] == "text":
                parts.append({"type": "text", "text": part["text"]})
            elif part["type"] == "image":
                parts.append({"type": "image_url", "image_url": {"url": image_data_url(part["image"])}})
            elif part["type"] == "video":
                parts.extend({"type": "image_url", "image_url": {"url": image_data_url(f)}} for f in part["video"])
            else:
                raise ValueError(f"unknown content part type {part['type']!r}")
        out.append({"role": m["role"], "content": parts})
    return out


def close_tool_call(text: str, finish_reason: str | None, stop_reason: object = None) -> str:
    """Re-append </tool_call> that the server stripped as a stop string."""
    open_call = text.rfind(P.TOOL_CALL_START) > text.rfind(P.TOOL_CALL_END)
    if finish_reason == "stop" and (stop_reason == P.TOOL_CALL_END or (stop_reason is None and open_call)):
        return text + P.TOOL_CALL_END
    return text


def tool_call_text(name: str, arguments: object) -> str:
    """One structured tool call as the protocol block the model wrote (core.protocol.format_tool_call)."""
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except ValueError:  # malformed JSON stays as written, so the loop reports it to the model
            return f'{P.TOOL_CALL_START}\n{{"name": {json.dumps(name)}, "arguments": {arguments}}}\n{P.TOOL_CALL_END}'
    return P.format_tool_call(name, arguments)


class ToolCalls:
    """Structured tool calls gathered from a response: whole (non-streamed) or in deltas by index."""

    def __init__(self) -> None:
        self.calls: dict[int, dict] = {}

    def add(self, tool_calls) -> None:
        for n, call in enumerate(tool_calls or []):
            index = getattr(call, "index", None)
            entry = self.calls.setdefault(n if index is None else index, {"name": "", "arguments": ""})
            function = call.function
            if function is None:
                continue
            if function.name and not entry["name"]:
                entry["name"] = function.name
            args = function.arguments
            if isinstance(args, str):
                entry["arguments"] += args
            elif args is not None:  # a server that sends the arguments as an object
                entry["arguments"] = args

    def text(self) -> str:
        return "\n".join(tool_call_text(c["name"], c["arguments"]) for _, c in sorted(self.calls.items()))


class OpenAIBackend(Backend):
    name = "openai"

    def __init__(self, base_url: str, model_name: str | None = None, api_key: str = "EMPTY",
                 timeout: float = 600.0, stream: bool = True) -> None:
        """`model_name`: the served model name (`--served-model-name`), asked from /models when None;
        `stream`: token streaming (False sends one request and gets the whole turn)."""
        import openai

        self.base_url = base_url.rstrip("/")
        self.streaming = stream
        self.client = openai.OpenAI(base_url=self.base_url, api_key=api_key, timeout=timeout, max_retries=1)
        self._model_name = model_name
        self.model_id = f"{model_name}@{self.base_url}" if model_name else self.base_url
        self.pixel_preset = None
        self.refuses_logprobs = False  # the server answered a request for logprobs with an error
        self.counts_tokens = True  # the server answers /tokenize (set False once it does not)
        self.timeout = timeout
        if model_name is None:
            try:  # name the served model now, so trajectories record it; a server still down fails later
                self.model_name
            except BackendError as e:
                log.warning("%s", e)

    @property
    def model_name(self) -> str:
        """The served model; asked from /models when not given."""
        if self._model_name is None:
            with self._errors():
                models = self.client.models.list().data
            if not models:
                raise BackendError(f"{self.base_url} lists no model at /models; name the served model "
                                   "with --served-model-name")
            if len(models) > 1:
                names = ", ".join(m.id for m in models[:8])
                raise BackendError(f"{self.base_url} lists {len(models)} models ({names}); name the one to use "
                                   "with --served-model-name")
            self._model_name = models[0].id
            self.model_id = f"{self._model_name}@{self.base_url}"
        return self._model_name

    def _errors(self):
        return _OpenAIErrors(self.base_url)

    def _request(self, messages: list[dict], params: GenerationParams) -> dict:
        request = dict(
            model=self.model_name, messages=to_openai_messages(messages), stream=self.streaming,
            max_tokens=params.max_new_tokens, temperature=params.temperature, top_p=params.top_p,
            stop=list(params.stop)[:4])
        if self.streaming:
            request["stream_options"] = {"include_usage": True}
        if params.seed is not None:
            request["seed"] = params.seed
        if params.logprobs or (params.confidence and not self.refuses_logprobs):
            request["logprobs"] = True
        if params.top_k:
            request["extra_body"] = {"top_k": params.top_k}
        return request

    def stream(self, messages: list[dict], params: GenerationParams,
               cancel: threading.Event | None = None) -> Iterator[str | Generation]:
        t0 = time.perf_counter()
        request = self._request(messages, params)
        if params.max_context_tokens is not None:
            count = self.prompt_tokens(request["messages"])
            if count is not None:  # refused before any generation request, as the other backends do
                params = fit_context(count, params)
                request["max_tokens"] = params.max_new_tokens
        text, finish, stop_reason, usage, logprobs, calls = "", None, None, None, [], ToolCalls()
        pieces: list[str] = []
        with self._errors():
            response = self._create(request, params)
            if not self.streaming:
                response = [response]
            try:
                for chunk in response:
                    if cancel is not None and cancel.is_set():
                        finish = "cancelled"
                        break
                    if chunk.usage is not None:
                        usage = chunk.usage
                    if not chunk.choices:
                        continue
                    choice = chunk.choices[0]
                    part = choice.delta if self.streaming else choice.message
                    delta = (part.content or "") if part else ""
                    if part is not None:
                        calls.add(part.tool_calls)
                    if choice.logprobs is not None and choice.logprobs.content:
                        logprobs.extend(t.logprob for t in choice.logprobs.content)
                        pieces.extend(t.token for t in choice.logprobs.content)
                    if choice.finish_reason:
                        finish = choice.finish_reason
                        stop_reason = getattr(choice, "stop_reason", None) or \
                            (choice.model_extra or {}).get("stop_reason")
                    if delta:
                        cut, hit = cut_at_stop(text + delta, params.stop)  # a server that ignores `stop`
                        if len(cut) > len(text):
                            yield cut[len(text):]
                        text = cut
                        if hit:
                            finish = "stop"
                            break
            finally:
                if self.streaming:
                    response.close()
        if calls.calls and finish != "cancelled":  # the server parsed the call out of the text
            closed, finish = text + calls.text(), "stop"
        else:
            closed = close_tool_call(text, finish, stop_reason)
        if closed != text:
            yield closed[len(text):]
        reason = finish if finish in ("stop", "length", "cancelled") else "stop"
        yield Generation(
            text=closed, tokens_in=getattr(usage, "prompt_tokens", 0) or 0,
            tokens_out=getattr(usage, "completion_tokens", 0) or len(logprobs), finish_reason=reason,
            seconds=time.perf_counter() - t0, logprobs=logprobs or None,
            tokens=pieces if logprobs and len(pieces) == len(logprobs) else None)

    def _create(self, request: dict, params: GenerationParams):
        """The completion; a server that refuses `logprobs` asked only for confidence is asked again
        without them (and never again)."""
        import openai

        try:
            return self.client.chat.completions.create(**request)
        except openai.BadRequestError:
            if params.logprobs or not request.pop("logprobs", False):
                raise
            log.warning("%s refused logprobs; answers from it carry no confidence", self.base_url)
            self.refuses_logprobs = True
            return self.client.chat.completions.create(**request)

    def generate_batch(self, batch: list[list[dict]], params: GenerationParams) -> list[Generation]:
        """Concurrent requests; the server's own batching does the rest. Every prompt is counted
        first: one over the context refuses the batch (ContextFull names it) before any generation."""
        if not batch:
            return []
        with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, len(batch))) as pool:
            if params.max_context_tokens is not None:
                check_batch(list(pool.map(lambda m: self.prompt_tokens(to_openai_messages(m)), batch)), params)
                params = replace(params, max_context_tokens=None)  # counted once
            return list(pool.map(lambda m: self.generate(m, params), batch))

    def prompt_tokens(self, messages: list[dict]) -> int | None:
        """The prompt's token count as the server counts it, pictures included: `POST /tokenize` beside
        /v1, which vLLM (0.17 and later count the pictures' tokens too) and SGLang serve. None from a
        server without it (asked once; the context is then checked by the server, at its own limit)."""
        if not self.counts_tokens:
            return None
        import httpx

        body = {"model": self.model_name, "messages": messages, "add_generation_prompt": True}
        try:
            r = httpx.post(self.base_url.removesuffix("/v1") + "/tokenize", json=body, timeout=self.timeout)
        except httpx.HTTPError:
            return None  # the generation request reports an unreachable server
        try:
            count = r.json().get("count") if r.status_code == 200 else None
        except (ValueError, AttributeError):  # not the JSON object vLLM sends
            count = None
        if r.status_code in (404, 405, 501) or (r.status_code == 200 and not isinstance(count, int)):
            log.info("%s does not count prompt tokens (/tokenize); the server's own limit applies", self.base_url)
            self.counts_tokens = False
        return count if isinstance(count, int) else None


class _OpenAIErrors:
    """Turn the client's exceptions into BackendError messages naming the server."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    def __enter__(self):
        return self

    def __exit__(self, kind, error, tb) -> bool:
        import openai

        if error is None or isinstance(error, BackendError):
            return False
        if isinstance(error, openai.APIConnectionError):
            raise BackendError(f"cannot reach the OpenAI-compatible server at {self.base_url}: {error}. "
                               "Is it running (e.g. `vllm serve MODEL`)?") from None
        if isinstance(error, openai.APIStatusError):
            raise BackendError(f"{self.base_url} answered HTTP {error.status_code}: {error.message}") from None
        if isinstance(error, openai.OpenAIError):
            raise BackendError(f"{self.base_url}: {error}") from None
        return False
