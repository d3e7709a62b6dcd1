"""Messages -> Qwen2.5-VL model inputs, one way for generation, SFT and RL.

The prompt text comes from core.protocol.render_prompt (one pad token per image/video); here each
`<|image_pad|>` / `<|video_pad|>` is expanded into as many copies as the vision tower will emit
features (grid_t * grid_h * grid_w / merge_size**2), the pixels are patchified in the exact
layout of the Qwen2-VL processors, and the tokens of trained assistant turns are marked so that
training computes its loss on them only.

Images arrive already sized by the loop (multiples of 28), so they are never resized again here.
Videos are patchified in numpy (no torchvision): frames brought to one common size, the frame
count padded to a multiple of temporal_patch_size by repeating the last frame.
"""
from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from core import protocol as P
from core.operations import smart_resize

log = logging.getLogger(__name__)

IGNORE_INDEX = -100
PIXEL_CACHE = 64  # pictures whose patches an encoder keeps
DEFAULT_VIDEO_FPS = 2.0  # qwen-vl-utils' default sampling rate: one temporal patch = 1 second


@dataclass
class Encoded:
    """One conversation as token ids plus the pixel tensors its pads stand for."""

    input_ids: list[int]
    pixel_values: torch.Tensor | None = None
    image_grid_thw: torch.Tensor | None = None
    pixel_values_videos: torch.Tensor | None = None
    video_grid_thw: torch.Tensor | None = None
    second_per_grid_ts: torch.Tensor | None = None
    assistant_mask: list[int] = field(default_factory=list)  # 1 on trained assistant tokens (content + <|im_end|>)

    def __len__(self) -> int:
        return len(self.input_ids)


class VisionTextEncoder:
    """Tokenizer + image processor, with our own pad expansion and video patchify."""

    def __init__(self, tokenizer, image_processor, merge_size: int = 2, temporal_patch_size: int = 2) -> None:
        self.tokenizer, self.image_processor = tokenizer, image_processor
        self.merge_size, self.temporal_patch_size = merge_size, temporal_patch_size
        self.patch_size = int(getattr(image_processor, "patch_size", 14))
        self.factor = self.patch_size * merge_size
        ids = tokenizer.convert_tokens_to_ids
        self.image_token_id, self.video_token_id = ids("<|image_pad|>"), ids("<|video_pad|>")
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else ids(P.ENDOFTEXT)
        scale = float(getattr(image_processor, "rescale_factor", 1 / 255))
        mean = np.asarray(image_processor.image_mean, dtype=np.float32)
        std = np.asarray(image_processor.image_std, dtype=np.float32)
        self._scale, self._mean, self._std = scale, mean, std
        # id(picture) -> (the picture, its patches, its grid); the picture is held so its id stays its own
        self._pixel_cache: OrderedDict[int, tuple] = OrderedDict()
        self._cache_lock = threading.Lock()

    @classmethod
    def from_pretrained(cls, path: str | Path) -> "VisionTextEncoder":
        """AutoTokenizer + the PIL Qwen2-VL image processor (no torchvision needed)."""
        from transformers import AutoTokenizer
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

        tokenizer = AutoTokenizer.from_pretrained(str(path))
        processor = Qwen2VLImageProcessorPil.from_pretrained(str(path))
        return cls(tokenizer, processor, merge_size=int(processor.merge_size),
                   temporal_patch_size=int(processor.temporal_patch_size))

    # ---- text ---------------------------------------------------------------------------------

    def assistant_spans(self, messages: list[dict], train_turns: list[bool] | None = None) -> list[tuple[int, int]]:
        """Character spans [start, end) of the trained assistant turns in render_prompt's text:
        the content and its <|im_end|>, not the role header nor the newline after."""
        n_assistant = sum(1 for m in messages if m["role"] == "assistant")
        if train_turns is not None and len(train_turns) != n_assistant:
            raise ValueError(f"train_turns has {len(train_turns)} entries for {n_assistant} assistant messages")
        spans, k = [], 0
        header = len(f"{P.IM_START}assistant\n")
        for i, m in enumerate(messages):
            if m["role"] != "assistant":
                continue
            if train_turns is None or train_turns[k]:
                start = len(P.render_prompt(messages[:i], add_generation_prompt=False)) + header
                end = len(P.render_prompt(messages[:i + 1], add_generation_prompt=False)) - 1  # drop "\n"
                spans.append((start, end))
            k += 1
        return spans

    def encode(self, messages: list[dict], add_generation_prompt: bool = False,
               train_turns: list[bool] | None = None) -> Encoded:
        """Token ids with expanded vision pads, pixel tensors and the assistant mask."""
        text = P.render_prompt(messages, add_generation_prompt=add_generation_prompt)
        spans = self.assistant_spans(messages, train_turns)
        tok = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = tok["input_ids"], tok["offset_mapping"]
        mask = [int(any(s <= a < e for s, e in spans)) for a, _ in offsets]

        images, videos = P.media_in(messages)
        enc = Encoded(input_ids=[], assistant_mask=[])
        counts: dict[int, list[int]] = {self.image_token_id: [], self.video_token_id: []}
        if images:
            enc.pixel_values, enc.image_grid_thw = self.encode_images(images)
            counts[self.image_token_id] = self._token_counts(enc.image_grid_thw)
        if videos:
            parts = [p for m in messages if not isinstance(m["content"], str)
                     for p in m["content"] if p["type"] == "video"]
            enc.pixel_values_videos, enc.video_grid_thw = self.encode_videos(videos)
            counts[self.video_token_id] = self._token_counts(enc.video_grid_thw)
            enc.second_per_grid_ts = torch.tensor(
                [self.temporal_patch_size / float(p.get("fps") or DEFAULT_VIDEO_FPS) for p in parts],
                dtype=torch.float32)
        for pad, kind in ((self.image_token_id, "image"), (self.video_token_id, "video")):
            found = ids.count(pad)
            if found != len(counts[pad]):
                raise ValueError(f"the conversation text holds {found} <|{kind}_pad|> tokens but "
                                 f"{len(counts[pad])} {kind}s; text may not contain vision pad tokens")
        queues = {pad: iter(c) for pad, c in counts.items()}
        for token, m in zip(ids, mask):
            n = next(queues[token]) if token in queues else 1
            enc.input_ids.extend([token] * n)
            enc.assistant_mask.extend([m] * n)
        return enc

    def count_tokens(self, messages: list[dict], add_generation_prompt: bool = True) -> int:
        """len(encode(messages, add_generation_prompt)) without making a pixel tensor: the text's
        tokens, each vision pad counted as the features its picture or video gives (a backend that
        feeds another engine, vLLM, checks the context with it before the engine prefills)."""
        text = P.render_prompt(messages, add_generation_prompt=add_generation_prompt)
        n = len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        images, videos = P.media_in(messages)
        cell = (self.patch_size * self.merge_size) ** 2
        for image in images:
            h, w = self._model_hw(image)
            n += h * w // cell - 1
        for frames in videos:
            h, w = self._model_hw(frames[0])
            n += -(-len(frames) // self.temporal_patch_size) * (h * w // cell) - 1
        return n

    def _model_hw(self, image: Image.Image) -> tuple[int, int]:
        """The (height, width) `_model_size` gives a picture, without resizing it."""
        if image.width % self.factor == 0 and image.height % self.factor == 0:
            return image.height, image.width
        size = self.image_processor.size
        return smart_resize(image.height, image.width, size.shortest_edge, size.longest_edge, self.factor)

    def _token_counts(self, grid_thw: torch.Tensor) -> list[int]:
        return (grid_thw.prod(-1) // self.merge_size ** 2).tolist()

    # ---- pixels -------------------------------------------------------------------------------

    def _model_size(self, image: Image.Image) -> Image.Image:
        """The image unchanged when its sides are multiples of 28, else resized by the processor's
        own policy (a safety net: the loop sizes images before they get here)."""
        image = image.convert("RGB") if image.mode != "RGB" else image
        if image.width % self.factor == 0 and image.height % self.factor == 0:
            return image
        size = self.image_processor.size
        h, w = smart_resize(image.height, image.width, size.shortest_edge, size.longest_edge, self.factor)
        log.warning("image %dx%d is not sized for the model; resizing to %dx%d", image.width, image.height, w, h)
        return image.resize((w, h), Image.Resampling.BICUBIC)

    def encode_images(self, images: list[Image.Image]) -> tuple[torch.Tensor, torch.Tensor]:
        """pixel_values (sum of patches, C*T*14*14) and image_grid_thw, through the HF processor
        with resizing off. Each picture is processed once: a conversation re-encoded turn after
        turn reuses its earlier pictures' patches (kept for the last PIXEL_CACHE pictures)."""
        with self._cache_lock:
            found = {id(im): self._pixel_cache.get(id(im)) for im in images}
        found = {k: v for k, v in found.items() if v is not None and v[0] is not None}
        missing = list({id(im): im for im in images if id(im) not in found}.values())
        if missing:
            out = self.image_processor(images=[self._model_size(im) for im in missing], do_resize=False,
                                       return_tensors="pt")
            grids = out["image_grid_thw"].long()
            chunks = out["pixel_values"].split(grids.prod(-1).tolist())
            with self._cache_lock:
                for im, pixels, grid in zip(missing, chunks, grids):
                    found[id(im)] = self._pixel_cache[id(im)] = (im, pixels, grid)
                while len(self._pixel_cache) > PIXEL_CACHE:
                    self._pixel_cache.popitem(last=False)
        parts = [found[id(im)] for im in images]
        return torch.cat([p[1] for p in parts]), torch.stack([p[2] for p in parts])

    def encode_videos(self, videos: list[list[Image.Image]]) -> tuple[torch.Tensor, torch.Tensor]:
        patches, grids = [], []
        for frames in videos:
            p, grid = self.patchify_video(frames)
            patches.append(p)
            grids.append(grid)
        return torch.from_numpy(np.concatenate(patches)), torch.tensor(grids, dtype=torch.long)

    def patchify_video(self, frames: list[Image.Image]) -> tuple[np.ndarray, list[int]]:
        """One video as (grid_t*grid_h*grid_w, C*T*ps*ps) patches in Qwen2VLVideoProcessor's layout."""
        if not frames:
            raise ValueError("a video needs at least one frame")
        first = self._model_size(frames[0])
        w, h = first.size
        frames = [first] + [f.convert("RGB").resize((w, h), Image.Resampling.BICUBIC)
                            if f.size != (w, h) or f.mode != "RGB" else f for f in frames[1:]]
        arr = np.stack([np.asarray(f, dtype=np.float32) for f in frames])  # (T, H, W, C)
        arr = (arr * self._scale - self._mean) / self._std
        arr = arr.transpose(0, 3, 1, 2)  # (T, C, H, W)
        tps, ps, m = self.temporal_patch_size, self.patch_size, self.merge_size
        if pad := -len(arr) % tps:
            arr = np.concatenate([arr, np.repeat(arr[-1:], pad, axis=0)])
        t, c = arr.shape[:2]
        gt, gh, gw = t // tps, h // ps, w // ps
        x = arr.reshape(gt, tps, c, gh // m, m, ps, gw // m, m, ps)
        x = x.transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)
        return np.ascontiguousarray(x.reshape(gt * gh * gw, c * tps * ps * ps), dtype=np.float32), [gt, gh, gw]

    # ---- batches ------------------------------------------------------------------------------

    def collate(self, batch: list[Encoded], pad_left: bool = False) -> dict[str, torch.Tensor]:
        """Model kwargs for a batch, plus `labels` (input ids on trained tokens, -100 elsewhere).

        Left padding for generation (new tokens append on the right), right padding for training.
        """
        if not batch:
            raise ValueError("collate needs at least one encoded conversation")
        width = max(len(e) for e in batch)
        rows, attn, labels = [], [], []
        for e in batch:
            pad = width - len(e)
            ids = e.input_ids
            lab = [t if m else IGNORE_INDEX for t, m in zip(ids, e.assistant_mask)]
            if pad_left:
                rows.append([self.pad_token_id] * pad + ids)
                attn.append([0] * pad + [1] * len(ids))
                labels.append([IGNORE_INDEX] * pad + lab)
            else:
                rows.append(ids + [self.pad_token_id] * pad)
                attn.append([1] * len(ids) + [0] * pad)
                labels.append(lab + [IGNORE_INDEX] * pad)
        input_ids = torch.tensor(rows, dtype=torch.long)
        attention_mask = torch.tensor(attn, dtype=torch.long)
        mm = torch.zeros_like(input_ids, dtype=torch.int32)
        mm[(input_ids == self.image_token_id) & (attention_mask == 1)] = 1
        mm[(input_ids == self.video_token_id) & (attention_mask == 1)] = 2
        out = {"input_ids": input_ids, "attention_mask": attention_mask, "mm_token_type_ids": mm,
               "labels": torch.tensor(labels, dtype=torch.long)}
        for key in ("pixel_values", "image_grid_thw", "pixel_values_videos", "video_grid_thw", "second_per_grid_ts"):
            parts = [getattr(e, key) for e in batch if getattr(e, key) is not None]
            if parts:
                out[key] = torch.cat(parts)
        return out
