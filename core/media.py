"""Reading images and videos safely, and a content-addressed store for the images a trajectory holds.

I/O lives here so that operations.py stays pure. Every failure becomes a `MediaError` whose
message a user can act on (corrupt file, too many pixels, unreadable video).
"""
from __future__ import annotations

import hashlib
import io
import os
import re
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from struct import error as struct_error
from typing import Protocol, Sequence

import numpy as np
from PIL import Image, ImageOps

from core.paths import check_sha

DEFAULT_MAX_IMAGE_PIXELS = 40_000_000
"""Decoded pictures cost 3-4 bytes a pixel, more while converting: 40 MP is ~120 MB per upload.
The app's --max-megapixels changes it."""
MAX_ASPECT = 200  # Qwen2.5-VL's processor refuses longer/shorter ratios
DEFAULT_OVERVIEW_FRAMES = 16


class MediaError(ValueError):
    """An input image or video that cannot be used, with a message for the user."""


def _display_name(source) -> str:
    """A file's own name (never its folder: messages must not show server paths)."""
    return Path(source).name if isinstance(source, (str, Path)) else "the image"


def check_size(name: str, w: int, h: int, max_pixels: int) -> None:
    """Refuse a picture by its header size: too many pixels, or too thin for the model."""
    if w <= 0 or h <= 0:
        raise MediaError(f"{name} has no pixels ({w}x{h})")
    if w * h > max_pixels:
        raise MediaError(f"{name} is {w}x{h} ({w * h / 1e6:.1f} megapixels); the limit is "
                         f"{max_pixels / 1e6:.0f} megapixels. Downscale it first.")
    if max(w, h) / min(w, h) > MAX_ASPECT:
        raise MediaError(f"{name} is {w}x{h}: sides more than {MAX_ASPECT} times apart cannot be shown to "
                         "the model. Crop it to a less extreme shape first.")


def to_rgb(img: Image.Image) -> Image.Image:
    """RGB pixels as a viewer shows them: 16/32-bit grey scaled (not clipped to white), alpha and
    palette transparency over white, CMYK and others through PIL's conversion."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img.convert("I"), dtype=np.int64)
        peak = 65535 if img.mode.startswith("I;16") or arr.max(initial=0) > 255 else 255
        grey = np.clip(arr * 255 // max(peak, 1), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if img.mode == "F":
        arr = np.nan_to_num(np.asarray(img, dtype=np.float64))
        top = arr.max(initial=0.0)
        scale = 255.0 if top <= 1.0 else 255.0 / top
        return Image.fromarray(np.clip(arr * scale, 0, 255).astype(np.uint8), "L").convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        base = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(base, rgba).convert("RGB")
    return img if img.mode == "RGB" else img.convert("RGB")


def load_image(source, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> Image.Image:
    """Open an image file (path, bytes or file object) fully decoded as upright RGB.

    The pixel count and shape are checked from the header before decoding, so a decompression
    bomb or a 1x60000 strip is refused without allocating it. EXIF orientation is applied.
    """
    name = _display_name(source)
    if isinstance(source, bytes):
        source = io.BytesIO(source)
    try:
        with warnings.catch_warnings():
            # our own limit below replaces PIL's warning; PIL still raises above twice its limit
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(source)
            check_size(name, *img.size, max_pixels)
            img.load()
            ImageOps.exif_transpose(img, in_place=True)  # no copy of an upright picture
            return to_rgb(img)
    except MediaError:
        raise
    except Image.DecompressionBombError:
        raise MediaError(f"{name} is too large to decode safely") from None
    except FileNotFoundError:
        raise MediaError(f"{name}: no such file") from None
    except MemoryError:
        raise MediaError(f"{name} needs more memory to decode than this server has") from None
    except (OSError, SyntaxError, ValueError, TypeError, struct_error, EOFError) as e:
        raise MediaError(f"{name} is not a readable image (corrupt or truncated?): {_short(e)}") from None


def _short(e: Exception, limit: int = 160) -> str:
    """An exception's first line without file paths, for a user-facing message."""
    text = (str(e).splitlines() or [type(e).__name__])[0]
    text = re.sub(r"/(?:[^\s'\"/]*/)+", "", text)  # keep file names, drop folders
    return text[:limit]


# ---- video -----------------------------------------------------------------------------------

def overview_indices(n_total: int, n: int = DEFAULT_OVERVIEW_FRAMES) -> list[int]:
    """Uniformly spaced 0-based frame indices of the overview (all frames when fewer than n)."""
    if n_total <= n:
        return list(range(n_total))
    return [int(round(i)) for i in np.linspace(0, n_total - 1, n)]


@dataclass
class Video:
    """A video as the model sees it: an overview of N frames, each selectable at full resolution.

    Built from a file (decoded with PyAV, core/frames.py) or from a list of pre-extracted frames (the released
    MVBench eval data ships frames). `frame(k)` returns overview frame k (1-based) at full
    resolution from the file.
    """

    overview: list[Image.Image]
    times: list[float]  # seconds of each overview frame
    path: str | None = None
    source_indices: list[int] = field(default_factory=list)  # 0-based frame numbers in the file
    fps: float = 0.0
    n_source_frames: int = 0
    _reader: object = field(default=None, repr=False)  # a core.frames.FrameReader (it serialises its own reads)

    @property
    def n_frames(self) -> int:
        return len(self.overview)

    @property
    def size(self) -> tuple[int, int]:
        return self.overview[0].size

    def frames(self, numbers: Sequence[int]) -> list[Image.Image]:
        """Overview frames by 1-based number, decoded at full resolution when there is a file."""
        if self._reader is None:
            return [self.overview[k - 1] for k in numbers]
        batch = self._reader.get([self.source_indices[k - 1] for k in numbers])
        return [Image.fromarray(a) for a in batch]

    @classmethod
    def from_frames(cls, frames: Sequence[Image.Image], fps: float = 1.0) -> "Video":
        frames = [f.convert("RGB") for f in frames]
        if not frames:
            raise MediaError("a video needs at least one frame")
        return cls(overview=frames, times=[i / fps for i in range(len(frames))], fps=fps,
                   source_indices=list(range(len(frames))), n_source_frames=len(frames))

    @classmethod
    def from_frame_files(cls, paths: Sequence[str | Path], n: int | None = None, fps: float = 1.0) -> "Video":
        paths = list(paths)
        if n is not None and len(paths) > n:
            paths = [paths[i] for i in overview_indices(len(paths), n)]
        return cls.from_frames([load_image(p) for p in paths], fps=fps)

    @classmethod
    def from_file(cls, path: str | Path, n: int = DEFAULT_OVERVIEW_FRAMES, limits=None) -> "Video":
        """Open a video within `limits` (a core.frames.VideoLimits; its defaults when None)."""
        path = str(path)
        name = _display_name(path)
        if not os.path.exists(path):
            raise MediaError(f"{name}: no such file")
        from core.frames import FrameReader, VideoLimitError, VideoLimits

        try:
            reader = FrameReader(path, limits or VideoLimits())
            total, w, h = len(reader), reader.width, reader.height
            if total == 0:
                raise MediaError(f"{name} has no frames")
            check_size(name, w, h, reader.limits.max_pixels)
            idx = overview_indices(total, n)
            arrays = reader.get(idx)
            frames = [Image.fromarray(arrays.pop(0)) for _ in idx]  # each array freed as its image is made
            fps = reader.fps or 1.0
        except MediaError:
            raise
        except VideoLimitError as e:
            raise MediaError(f"{name} is refused: {e}") from None
        except Exception as e:  # FFmpeg's errors (av.FFmpegError) and ours; av's messages name the path
            reason = (getattr(e, "strerror", None) or _short(e)).split(": ")[0]  # no ": '<path>'" tail
            raise MediaError(f"{name} is not a readable video (corrupt or truncated?): {reason}") from None
        return cls(overview=frames, times=[i / fps for i in idx], path=path, source_indices=idx,
                   fps=fps, n_source_frames=total, _reader=reader)


# ---- content-addressed images ----------------------------------------------------------------

def image_sha(image: Image.Image) -> str:
    """sha256 of the decoded pixels (mode, size, bytes): equal pictures share one key."""
    h = hashlib.sha256(f"{image.mode}:{image.width}x{image.height}:".encode())
    rows = max(1, (8 << 20) // max(1, image.width * len(image.getbands())))  # ~8 MB bands, not one full copy
    for y in range(0, image.height, rows):
        h.update(image.crop((0, y, image.width, min(image.height, y + rows))).tobytes())
    return h.hexdigest()


class ImageStore(Protocol):
    def put(self, image: Image.Image) -> str: ...
    def get(self, sha: str) -> Image.Image: ...


class MemoryImageStore:
    """Images kept in memory by sha; the default for the CLI and tests."""

    def __init__(self) -> None:
        self._images: dict[str, Image.Image] = {}

    def put(self, image: Image.Image) -> str:
        sha = image_sha(image)
        self._images.setdefault(sha, image)
        return sha

    def get(self, sha: str) -> Image.Image:
        return self._images[sha]


class DiskImageStore:
    """PNG files under root/ab/<sha>.png; writing is atomic so readers never see half a file.

    `compress_level` is zlib's (PNG is lossless at every level): 1 writes ~7x faster for ~13% more
    bytes, which is what generated datasets take; the session store keeps PIL's default."""

    def __init__(self, root: str | Path, compress_level: int = 6) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.compress_level = compress_level

    def path(self, sha: str) -> Path:
        """The file of a stored image; a name that is not a sha256 hex digest raises PathError."""
        sha = check_sha(sha)
        return self.root / sha[:2] / f"{sha}.png"

    def put(self, image: Image.Image) -> str:
        sha = image_sha(image)
        path = self.path(sha)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
            try:
                image.save(tmp, format="PNG", compress_level=self.compress_level)
                os.replace(tmp, path)
            except BaseException:  # a full disk: leave no half-written file behind
                tmp.unlink(missing_ok=True)
                raise
        return sha

    def get(self, sha: str) -> Image.Image:
        return load_image(self.path(sha))


def write_video(frames, path: str | Path, fps: float = 8.0, qp: int = 23) -> Path:
    """Encode frames (PIL images or HxWx3 uint8 arrays, even sides) as an H.264 mp4 with PyAV.

    Constant quantiser (qp), one thread: x264's CRF rate control gives different bytes from run to
    run, and generated datasets must be identical for a given seed.
    """
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = None
        for i, frame in enumerate(frames):
            arr = np.asarray(frame.convert("RGB") if isinstance(frame, Image.Image) else frame, dtype=np.uint8)
            if stream is None:
                from fractions import Fraction

                stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
                stream.height, stream.width = arr.shape[:2]
                stream.pix_fmt = "yuv420p"
                stream.options = {"qp": str(qp), "preset": "veryfast"}
                stream.codec_context.thread_count = 1
            vf = av.VideoFrame.from_ndarray(arr, format="rgb24")
            vf.pts = i
            for packet in stream.encode(vf):
                container.mux(packet)
        if stream is not None:
            for packet in stream.encode():
                container.mux(packet)
    return path
