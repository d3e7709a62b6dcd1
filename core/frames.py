"""Frames of a video file by number, decoded with PyAV (the project's one video library).

Frame k is the k-th frame in presentation order, as a frame-accurate reader counts them. A request
decodes forward from the keyframe before each wanted frame and keeps decoding while the next wanted
frame lies in the same group of pictures, so 8 frames of a 60 s clip cost 8 short decodes instead
of the whole file (bench/perf.py: 2.5x a sequential decode with x264's default GOP, 7x with 2 s).

A file's header can lie, so `VideoLimits` are enforced on what is read, not on what is declared:
the packet count and the timestamps while demuxing (the scan stops at the first packet over a cap),
and every decoded frame's size (FFmpeg's own `max_pixels` refuses to allocate a larger frame, and
each frame is checked again before it becomes an array).
"""
from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class VideoLimits:
    """What one video may cost; a file over any cap is refused with a VideoLimitError."""

    max_pixels: int = field(default=4096 * 2304, metadata={"help": "pixels of every decoded frame (not only the header's)"})
    max_frames: int = field(default=18_000, metadata={"help": "frames (packets) in the file: 10 min at 30 fps"})
    max_seconds: float = field(default=600.0, metadata={"help": "duration, from the header and every packet's time"})


class VideoLimitError(ValueError):
    """A video over one of its VideoLimits; the message says which and the limit."""


class FrameReader:
    """An open video file: its frame count, rate and size, and frames by 0-based number."""

    def __init__(self, path: str, limits: VideoLimits = VideoLimits()) -> None:
        import av

        self.limits = limits
        self._container = av.open(path)
        try:
            self._stream = self._container.streams.video[0]
            self._check_header()
            self._pts, self._keys = self._scan()
        except BaseException:
            self._container.close()
            raise
        self._lock = threading.Lock()
        rate = self._stream.average_rate or self._stream.guessed_rate
        self.fps = float(rate) if rate else 0.0
        ctx = self._stream.codec_context
        self.width, self.height = ctx.width, ctx.height
        ctx.options = {"max_pixels": str(limits.max_pixels)}  # the decoder refuses larger frames itself

    def _check_header(self) -> None:
        lim, stream = self.limits, self._stream
        ctx = stream.codec_context
        check_frame_size(ctx.width, ctx.height, lim.max_pixels)
        if stream.frames and stream.frames > lim.max_frames:
            raise VideoLimitError(f"it has {stream.frames} frames; the limit is {lim.max_frames}")
        seconds = float(stream.duration * stream.time_base) if stream.duration and stream.time_base else 0.0
        seconds = max(seconds, (self._container.duration or 0) / 1e6)
        if seconds > lim.max_seconds:
            raise VideoLimitError(f"it lasts {seconds:.0f} s; the limit is {lim.max_seconds:.0f} s")

    def _scan(self) -> tuple[list[int], list[int]]:
        """Every frame's and keyframe's timestamp, from packet headers (no decoding), within the caps."""
        lim, stream = self.limits, self._stream
        base = float(stream.time_base or 0)
        packets, keys, first = [], [], None
        for packet in self._container.demux(stream):
            if packet.pts is None or not packet.size:
                continue
            packets.append(packet.pts)
            if len(packets) > lim.max_frames:
                raise VideoLimitError(f"it has more than {lim.max_frames} frames; the limit is {lim.max_frames}")
            first = packet.pts if first is None else min(first, packet.pts)
            if base and (packet.pts - first) * base > lim.max_seconds:
                raise VideoLimitError(f"it lasts more than {lim.max_seconds:.0f} s; the limit is "
                                      f"{lim.max_seconds:.0f} s")
            if packet.is_keyframe:
                keys.append(packet.pts)
        pts = sorted(packets)
        return pts, sorted(keys) or pts[:1]

    def __len__(self) -> int:
        return len(self._pts)

    def get(self, numbers: Sequence[int]) -> list[np.ndarray]:
        """RGB arrays (H, W, 3) of the given 0-based frames, in the order asked."""
        import av

        try:
            with self._lock:
                return self._get(numbers)
        except av.error.InvalidDataError:  # what the decoder says when max_pixels refuses a frame
            raise VideoLimitError(f"a frame could not be decoded (corrupt, or over "
                                  f"{self.limits.max_pixels / 1e6:.1f} megapixels)") from None

    def _get(self, numbers: Sequence[int]) -> list[np.ndarray]:
        got: dict[int, np.ndarray] = {}
        frames, last = None, None
        for i in sorted(set(numbers)):
            target = self._pts[i]
            key = self._keys[max(0, bisect.bisect_right(self._keys, target) - 1)]
            if frames is None or last is None or target <= last or key > last:
                self._container.seek(key, stream=self._stream, backward=True, any_frame=False)
                frames = self._container.decode(self._stream)
            for frame in frames:
                check_frame_size(frame.width, frame.height, self.limits.max_pixels)
                last = frame.pts if frame.pts is not None else frame.dts
                if last is not None and last >= target:
                    got[i] = frame.to_ndarray(format="rgb24")
                    break
            else:
                raise ValueError(f"frame {i} could not be decoded (truncated file?)")
        return [got[i] for i in numbers]

    def close(self) -> None:
        self._container.close()


def check_frame_size(w: int, h: int, max_pixels: int) -> None:
    """Refuse a frame (declared or decoded) with more pixels than the cap."""
    if w * h > max_pixels:
        raise VideoLimitError(f"a frame is {w}x{h}; videos above {max_pixels / 1e6:.1f} megapixels per frame "
                              "are refused")
