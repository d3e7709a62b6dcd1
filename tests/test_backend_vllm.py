"""The vllm backend: a clear message when vLLM is missing (it is, here), and the pure request
building it shares with the other backends."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from core import protocol as P
from core.backends import BackendError, GenerationParams, load_backend
from core.backends.vllm import INSTALL_HINT, sampling_kwargs, vllm_prompt
from tests.conftest import numbered_frames, photo_like


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_missing_vllm_is_a_clear_error():
    with pytest.raises(BackendError, match="pip install -r requirements-gpu.txt"):
        load_backend("vllm", model="TIGER-Lab/PixelReasoner-RL-v1")


def test_the_install_hint_names_an_existing_file():
    from pathlib import Path

    assert "requirements-gpu.txt" in INSTALL_HINT
    text = (Path(__file__).resolve().parents[1] / "requirements-gpu.txt").read_text()
    assert any(line.strip().startswith("vllm") for line in text.splitlines())


def test_prompt_carries_rendered_text_and_media_in_order():
    a, b = photo_like(112, 84, seed=1), photo_like(140, 112, seed=2)
    messages = [{"role": "user", "content": [{"type": "image", "image": a}, {"type": "text", "text": "q"}]},
                {"role": "assistant", "content": [{"type": "text", "text": "zoom"}]},
                {"role": "user", "content": [{"type": "text", "text": "crop:"}, {"type": "image", "image": b}]}]
    prompt = vllm_prompt(messages)
    assert prompt["prompt"] == P.render_prompt(messages) and prompt["prompt"].count("<|image_pad|>") == 2
    assert [im.size for im in prompt["multi_modal_data"]["image"]] == [a.size, b.size]
    assert "multi_modal_data" not in vllm_prompt([{"role": "user", "content": "text only"}])


def test_prompt_passes_video_frames_as_one_array():
    frames = list(numbered_frames(5, 56, 56))
    prompt = vllm_prompt([{"role": "user", "content": [{"type": "video", "video": frames},
                                                       {"type": "text", "text": "q"}]}])
    video = prompt["multi_modal_data"]["video"]
    assert isinstance(video, np.ndarray) and video.shape == (5, 56, 56, 3)
    assert (video[3] == np.asarray(frames[3])).all()


def test_sampling_kwargs_keep_stop_strings_for_cut_at_stop():
    kw = sampling_kwargs(GenerationParams(max_new_tokens=64, temperature=0.0, logprobs=True, seed=3))
    assert kw["stop"] == list(P.STOP_STRINGS) and kw["include_stop_str_in_output"] is True
    assert kw["temperature"] == 0.0 and kw["top_k"] == -1 and kw["logprobs"] == 0 and kw["seed"] == 3


def test_each_sample_of_a_seeded_batch_gets_its_own_seed():
    """`--samples K --seed S`: K conversations in one batch, seeds S..S+K-1, so the samples differ."""
    from core.backends.vllm import batch_sampling_kwargs

    kws = batch_sampling_kwargs(GenerationParams(temperature=0.6, seed=7), 4)
    assert [kw["seed"] for kw in kws] == [7, 8, 9, 10]
    assert all(kw["temperature"] == 0.6 and kw["stop"] == list(P.STOP_STRINGS) for kw in kws)
    assert [kw["seed"] for kw in batch_sampling_kwargs(GenerationParams(), 3)] == [None, None, None]


def test_the_app_says_vllm_shows_whole_turns():
    from app.ask.session import running_status
    from core.backends.replay import ReplayBackend
    from core.backends.vllm import VLLMBackend

    assert VLLMBackend.streams is False and ReplayBackend.streams is True
    assert running_status(ReplayBackend.__new__(ReplayBackend), "s1") == "running · session `s1`"
    backend = VLLMBackend.__new__(VLLMBackend)  # no engine needed for the status line
    assert running_status(backend, "s1") == "running · session `s1` · vllm shows whole turns (no token streaming)"
