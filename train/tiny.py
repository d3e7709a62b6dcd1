"""A tiny Qwen2.5-VL: tokenizer, config and checkpoint folder, small enough for CPU tests.

The model is architecturally the real Qwen2.5-VL (same vision tower, 3D RoPE, pad tokens,
chat template), only narrow and shallow, so every code path that serves the 7B release
(encoding, generation, SFT, RL) runs on it in seconds. The tokenizer is a byte-level BPE trained
on our own protocol texts, with the Qwen2.5-VL special tokens.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Iterable

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

log = logging.getLogger(__name__)

SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>",
    "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>", "<|box_end|>",
    "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
]
"""Qwen2.5-VL's special tokens, in the release's order (ids differ: ours start at 0)."""
ADDED_TOKENS = ["<tool_call>", "</tool_call>"]
"""Added but not special: they survive `skip_special_tokens=True`, as in Qwen2.5."""

# Qwen2's pre-tokenizer split pattern (tokenizer.json of Qwen2.5-VL).
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")

# The Qwen2.5-VL chat template, byte for byte (TRL recognises it by equality, see
# trl/chat_templates/qwen2_5_vl.jinja); it renders exactly like core.protocol.render_prompt.
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}<|im_start|>system\n"
    "You are a helpful assistant.<|im_end|>\n"
    "{% endif %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: "
    "{% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

IMAGE_PROCESSOR_CONFIG = {
    "image_processor_type": "Qwen2VLImageProcessor",
    "do_resize": True, "do_rescale": True, "do_normalize": True, "do_convert_rgb": True,
    "rescale_factor": 1 / 255,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "patch_size": 14, "temporal_patch_size": 2, "merge_size": 2,
    "min_pixels": 4 * 28 * 28, "max_pixels": 2000 * 28 * 28,
    "size": {"shortest_edge": 4 * 28 * 28, "longest_edge": 2000 * 28 * 28},
    "resample": 3,
}


def default_corpus() -> list[str]:
    """Texts the tiny tokenizer is trained on: the protocol's own prompts, calls and observations."""
    from core import protocol as P

    texts = [
        P.system_prompt(P.tools_for(True, "rl")), P.system_prompt(P.tools_for(False, "legacy")),
        *P.GUIDELINES.values(), P.crop_observation(224, 168), P.frames_observation(224, 168, 2, 5),
        P.error_observation("Cropped image is too small: 12x40"),
        P.format_tool_call(P.CROP_TOOL, {"bbox_2d": [0.1, 0.2, 0.35, 0.48], "target_image": 1}),
        P.format_tool_call(P.FRAMES_TOOL, {"target_frames": [3, 7, 12]}),
        "The image shows a street with shops and a sign. To read the sign I will zoom in on it.",
        "The answer is \\boxed{B}. The answer is \\boxed{42}. The text reads WOOLSHOPS.",
        "What color is the car? How many people are in the frame? What is written on the sign?",
        "choices:\nA: red\nB: blue\nC: green\nD: yellow\nE: white",
        "0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 0.0 0.25 0.5 0.75 1.0",
    ]
    return texts


def build_tokenizer(texts: Iterable[str] | None = None, vocab_size: int = 2000):
    """A byte-level BPE tokenizer with Qwen2.5-VL's special tokens and chat template."""
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=1, special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(list(texts if texts is not None else default_corpus()), trainer=trainer)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in ADDED_TOKENS])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token=None,
        bos_token=None, model_max_length=32768, padding_side="left", clean_up_tokenization_spaces=False)
    fast.chat_template = CHAT_TEMPLATE
    return fast


def tiny_config(tokenizer, **overrides):
    """A Qwen2_5_VLConfig of a few million parameters. `overrides` go to the text config
    (hidden_size, num_hidden_layers, ...) or, prefixed `vision_`, to the vision config."""
    from transformers import Qwen2_5_VLConfig

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    text = dict(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=192, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32768, rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3]},
        bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
        tie_word_embeddings=False, use_cache=True,
    )
    vision = dict(depth=2, hidden_size=64, intermediate_size=128, num_heads=2, patch_size=14,
                  spatial_merge_size=2, temporal_patch_size=2, window_size=112, tokens_per_second=2)
    for key, value in overrides.items():
        if key.startswith("vision_"):
            vision[key[len("vision_"):]] = value
        else:
            text[key] = value
    vision.setdefault("fullatt_block_indexes", [vision["depth"] - 1])  # last block full attention, as in Qwen
    head_dim = text["hidden_size"] // text["num_attention_heads"]
    if sum(text["rope_parameters"]["mrope_section"]) != head_dim // 2:
        half = head_dim // 2  # split the rotary half-dims over (t, h, w) like Qwen's [16, 24, 24]
        t = half // 4
        text["rope_parameters"] = {**text["rope_parameters"],
                                   "mrope_section": [t, (half - t) // 2, half - t - (half - t) // 2]}
    vision["out_hidden_size"] = text["hidden_size"]  # the merger projects into the text width
    return Qwen2_5_VLConfig(
        text_config=text, vision_config=vision,
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )


def save_checkpoint(model, tokenizer, out_dir: str | Path, pixel_preset: str | None = "tiny") -> Path:
    """Write a plain Hugging Face folder that `from_pretrained` (and vLLM) loads.

    Besides weights, config and tokenizer: preprocessor_config.json and
    video_preprocessor_config.json (the real ones' fields), generation_config.json with both
    stop ids, and studio.json {"pixel_preset": ...} telling our tools which resolution it expects.
    """
    from transformers import GenerationConfig

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    (out / "chat_template.jinja").write_text(CHAT_TEMPLATE, encoding="utf-8")
    end, eot = tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.convert_tokens_to_ids("<|endoftext|>")
    GenerationConfig(eos_token_id=[end, eot], pad_token_id=eot, bos_token_id=eot, do_sample=False,
                     temperature=None, top_p=None, top_k=None).save_pretrained(out)
    image_cfg = dict(IMAGE_PROCESSOR_CONFIG, processor_class="Qwen2_5_VLProcessor")
    (out / "preprocessor_config.json").write_text(json.dumps(image_cfg, indent=2), encoding="utf-8")
    video_cfg = dict(IMAGE_PROCESSOR_CONFIG, video_processor_type="Qwen2VLVideoProcessor",
                     processor_class="Qwen2_5_VLProcessor", min_pixels=4 * 28 * 28, max_pixels=768 * 28 * 28,
                     size={"shortest_edge": 4 * 28 * 28, "longest_edge": 768 * 28 * 28})
    video_cfg.pop("image_processor_type")
    (out / "video_preprocessor_config.json").write_text(json.dumps(video_cfg, indent=2), encoding="utf-8")
    (out / "studio.json").write_text(json.dumps({"pixel_preset": pixel_preset}, indent=2), encoding="utf-8")
    return out


def build_random_checkpoint(out_dir: str | Path, seed: int = 0, **overrides) -> Path:
    """A randomly initialised tiny checkpoint (deterministic for a seed): for tests and as SFT's start."""
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    tokenizer = build_tokenizer()
    config = tiny_config(tokenizer, **overrides)
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    n = sum(p.numel() for p in model.parameters())
    log.info("tiny Qwen2.5-VL: %.2fM parameters, vocab %d", n / 1e6, len(tokenizer))
    return save_checkpoint(model, tokenizer, out_dir)
