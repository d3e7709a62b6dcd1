"""Frames of a video file by number, decoded with PyAV (the project's one video library).

Frame k is the k-th frame in presentation order, as a frame-accurate reader counts them. A request
decodes forward from the keyframe before each wanted frame and keeps decoding while the next wanted
frame lies in the same group of pictures, so 8 frames of a 60 s clip cost 8 short decodes instead
of the whole file (bench/perf.py: 2.5x a sequential decode with x264's default GOP, 7x with 2 s).
"""
from __future__ import annotations

import bisect
import threading
from typing import Sequence

import numpy as np


class FrameReader:
    """An open video file: its frame count, rate and size, and frames by 0-based number."""

    def __init__(self, path: str) -> None:
        import av

        self._container = av.open(path)
        try:
            self._stream = self._container.streams.video[0]
        except IndexError:
            self._container.close()
            raise ValueError("no video stream") from None
        packets, keys = [], []
        for packet in self._container.demux(self._stream):  # packet headers only: no decoding
            if packet.pts is None or not packet.size:
                continue
            packets.append(packet.pts)
            if packet.is_keyframe:
                keys.append(packet.pts)
        self._pts = sorted(packets)
        self._keys = sorted(keys) or self._pts[:1]
        self._lock = threading.Lock()
        rate = self._stream.average_rate or self._stream.guessed_rate
        self.fps = float(rate) if rate else 0.0
        ctx = self._stream.codec_context
        self.width, self.height = ctx.width, ctx.height

    def __len__(self) -> int:
        return len(self._pts)

    def get(self, numbers: Sequence[int]) -> list[np.ndarray]:
        """RGB arrays (H, W, 3) of the given 0-based frames, in the order asked."""
        got: dict[int, np.ndarray] = {}
        with self._lock:
            frames, last = None, None
            for i in sorted(set(numbers)):
                target = self._pts[i]
                key = self._keys[max(0, bisect.bisect_right(self._keys, target) - 1)]
                if frames is None or last is None or target <= last or key > last:
                    self._container.seek(key, stream=self._stream, backward=True, any_frame=False)
                    frames = self._container.decode(self._stream)
                for frame in frames:
                    last = frame.pts if frame.pts is not None else frame.dts
                    if last is not None and last >= target:
                        got[i] = frame.to_ndarray(format="rgb24")
                        break
                else:
                    raise ValueError(f"frame {i} could not be decoded (truncated file?)")
        return [got[i] for i in numbers]

    def close(self) -> None:
        self._container.close()
