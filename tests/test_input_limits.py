"""Caps that hold against what a file or a question really holds, not what it declares: every
decoded video frame's size, the packet count and timestamps while demuxing, and the prompt's token
count before the model reads it (real crafted videos, the real tiny checkpoint on CPU)."""
from __future__ import annotations

import time

import pytest

from core.backends.hf import TransformersBackend
from core.frames import FrameReader, VideoLimitError, VideoLimits
from core.loop import LoopConfig, Task, run_to_end
from core.media import MediaError, Video
from tests.conftest import photo_like
from tests.hostile_media import growing_video, long_video, many_frames_video


def test_a_frame_larger_than_the_header_says_is_refused(tmp_path):
    path = growing_video(tmp_path / "grows.ts", small=(320, 240), big=(1280, 720))
    assert Video.from_file(path).n_source_frames == 16  # fine under the default 9.4 MP cap
    with pytest.raises(MediaError, match="0.5 megapixels"):
        Video.from_file(path, limits=VideoLimits(max_pixels=500_000))  # the header says 0.08 MP


def test_each_decoded_frame_is_checked_not_only_the_first(tmp_path):
    path = growing_video(tmp_path / "grows.ts", small=(320, 240), big=(1280, 720))
    reader = FrameReader(str(path), VideoLimits(max_pixels=500_000))
    assert reader.get([0])[0].shape == (240, 320, 3)
    with pytest.raises(VideoLimitError, match="0.5 megapixels"):
        reader.get([12])


def test_the_packet_count_is_capped_while_demuxing(tmp_path):
    path = many_frames_video(tmp_path / "many.ts", 3000)
    t0 = time.perf_counter()
    with pytest.raises(MediaError, match="more than 1000 frames"):
        Video.from_file(path, limits=VideoLimits(max_frames=1000))
    assert time.perf_counter() - t0 < 5


def test_the_duration_is_capped_from_the_timestamps(tmp_path):
    path = long_video(tmp_path / "long.ts", seconds=3600)
    with pytest.raises(MediaError, match="600 s"):
        Video.from_file(path)
    assert Video.from_file(path, limits=VideoLimits(max_seconds=7200)).n_source_frames == 4


def test_a_prompt_over_the_context_is_refused_before_prefill(tiny_checkpoint):
    backend = TransformersBackend(str(tiny_checkpoint), device="cpu")
    task = Task(question="why? " * 3000, image=photo_like(112, 84))
    traj = run_to_end(backend, task, config=LoopConfig(max_context_tokens=2000))
    assert traj.status == "max_tokens" and not traj.steps
    assert "the context holds 2000" in traj.error


def test_new_tokens_stop_at_the_context_left(tiny_checkpoint):
    backend = TransformersBackend(str(tiny_checkpoint), device="cpu")
    task = Task(question="What is written?", image=photo_like(112, 84))
    traj = run_to_end(backend, task, config=LoopConfig(max_context_tokens=400, tools=False))
    step = traj.steps[0]
    assert step.tokens_in + step.tokens_out <= 400
