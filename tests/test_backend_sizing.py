"""Model sizing before loading: the parameter count from a config (Qwen2.5-VL-7B's own, written
here), the refusal of a model too large for the device in the chosen dtype, and the transformers
backend's loading options on the embedded model."""
from __future__ import annotations

import pytest
import torch

from core.backends import BackendError
from core.backends.hf import TransformersBackend, resolve_attention
from core.backends.sizing import count_parameters, fit_problem

# config.json of Qwen/Qwen2.5-VL-7B-Instruct (the architecture of TIGER-Lab/PixelReasoner-RL-v1)
QWEN25_VL_7B = """{
  "architectures": ["Qwen2_5_VLForConditionalGeneration"], "model_type": "qwen2_5_vl",
  "attention_dropout": 0.0, "bos_token_id": 151643, "eos_token_id": 151645,
  "vision_start_token_id": 151652, "vision_end_token_id": 151653, "vision_token_id": 151654,
  "image_token_id": 151655, "video_token_id": 151656, "hidden_act": "silu", "hidden_size": 3584,
  "initializer_range": 0.02, "intermediate_size": 18944, "max_position_embeddings": 128000,
  "max_window_layers": 28, "num_attention_heads": 28, "num_hidden_layers": 28, "num_key_value_heads": 4,
  "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "sliding_window": 32768, "tie_word_embeddings": false,
  "torch_dtype": "bfloat16", "use_cache": true, "use_sliding_window": false, "vocab_size": 152064,
  "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
  "vision_config": {"depth": 32, "hidden_act": "silu", "hidden_size": 1280, "intermediate_size": 3420,
                    "num_heads": 16, "in_chans": 3, "out_hidden_size": 3584, "patch_size": 14,
                    "spatial_merge_size": 2, "spatial_patch_size": 14, "window_size": 112,
                    "fullatt_block_indexes": [7, 15, 23, 31], "tokens_per_second": 2, "temporal_patch_size": 2}
}"""


@pytest.fixture(scope="module")
def seven_b(tmp_path_factory):
    folder = tmp_path_factory.mktemp("qwen25vl7b")
    (folder / "config.json").write_text(QWEN25_VL_7B)
    return folder


def test_the_7b_config_counts_8_3_billion_parameters(seven_b):
    assert 8.25e9 < count_parameters(str(seven_b)) < 8.35e9


def test_a_model_too_large_for_the_device_is_refused_before_loading(seven_b):
    # the folder has a config and no weights: the refusal comes from the config alone
    with pytest.raises(BackendError, match=r"8\.3B parameters: 33\.2 GB of weights in float32.*24\.0 GB"):
        TransformersBackend(str(seven_b), device="cpu", dtype="float32", max_memory_gb=24)


def test_fit_rules():
    n = 8_292_166_656
    assert fit_problem(n, torch.bfloat16, 80 * 10**9, "cuda:0") is None  # A100 80GB
    t4 = fit_problem(n, torch.bfloat16, 16 * 10**9, "cuda:0")
    assert "16.6 GB of weights in bfloat16" in t4 and "--dtype bfloat16" not in t4
    assert "use bfloat16" in fit_problem(n, torch.float32, 24 * 10**9, "cpu")
    assert fit_problem(n, torch.float32, None, "cuda") is None  # unknown memory: nothing refused


def test_loading_options_on_the_embedded_model(tiny_checkpoint):
    backend = TransformersBackend(str(tiny_checkpoint), device="cpu", attn_implementation="eager")
    assert backend.model.config._attn_implementation == "eager"
    default = TransformersBackend(str(tiny_checkpoint), device_map="cpu", dtype="bfloat16")
    assert default.attn_implementation == "sdpa" and default.device == "cpu"
    assert default.model.dtype == torch.bfloat16
    assert resolve_attention(None, "cpu") == "sdpa" and resolve_attention("eager", "cuda") == "eager"
