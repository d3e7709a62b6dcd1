"""Crafted video files that lie in their headers (for the limit tests and bench/video_bench.py).

Made with PyAV, as an attacker would make them with ffmpeg: MPEG-TS segments concatenated byte by
byte (a valid stream whose first header describes only the first segment), and streams of many tiny
frames or far-apart timestamps.
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np


def _ts_segment(w: int, h: int, n: int, fps: int = 8, pts_step: int = 1, start: int = 0) -> bytes:
    """n frames of an H.264 MPEG-TS stream at w x h, as bytes."""
    import io

    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="mpegts") as c:
        s = c.add_stream("libx264", rate=Fraction(fps))
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.options = {"preset": "ultrafast", "qp": "35"}
        s.codec_context.thread_count = 1
        s.codec_context.time_base = Fraction(1, fps)
        for i in range(n):
            arr = np.zeros((h, w, 3), np.uint8)
            arr[: h // 4, : w // 4] = (i * 37) % 255
            frame = av.VideoFrame.from_ndarray(arr, format="rgb24")
            frame.pts = start + i * pts_step
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return buf.getvalue()


def growing_video(path: Path, small=(320, 240), big=(1280, 720), n_small: int = 8, n_big: int = 8) -> Path:
    """A video whose header says `small` while its second half is `big` per frame."""
    path.write_bytes(_ts_segment(*small, n_small) + _ts_segment(*big, n_big, start=n_small))
    return path


def many_frames_video(path: Path, n: int, side: int = 16, fps: int = 60) -> Path:
    """n tiny frames (a few bytes each): cheap to upload, costly to index frame by frame."""
    path.write_bytes(_ts_segment(side, side, n, fps=fps))
    return path


def long_video(path: Path, seconds: int, n: int = 4) -> Path:
    """n frames spread over `seconds` (one every seconds/n)."""
    path.write_bytes(_ts_segment(32, 32, n, fps=1, pts_step=max(1, seconds // max(1, n - 1))))
    return path
