"""The two visual operations, crop and select_frames, plus the resize policy for what the model sees.

Box maths are pure functions (`crop_box`), applied to PIL images by `crop`. The rules follow the
released implementation (docs/protocol.md, section 1):

* normalized when all four values are < 1, else absolute pixels of the target image;
* padding 0.1 on each side; `zoom_in` caps it at min(0.1, 600/W) and min(0.1, 600/H);
* clamp to [0, 1], then to pixels: `crop_image_normalized` (and `crop_image`) hand the float box
  (x1*W, y1*H, x2*W, y2*H) to PIL's crop, which rounds each value; `zoom_in` truncates with int();
* a crop of 28 px or less in either side is an error;
* what the model sees is the crop at the target's own resolution, then one bicubic resize to
  `smart_resize`'s size (`crop_view`), byte for byte (tests/test_release_golden.py).

Where we are stricter than the release (it would silently crop): raw boxes that are inverted,
zero-area, negative, or wholly outside an absolute-pixel image are errors fed back to the model.
"""
from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from PIL import Image

from core.protocol import FRAMES_TOOL, ToolCallError, require_number

PATCH = 28  # Qwen2.5-VL: 14-px patches merged 2x2
MIN_CROP_SIDE = 28
MAX_FRAMES_PER_CALL = 8


@dataclass(frozen=True)
class PixelLimits:
    """Min/max pixel counts of what the model sees, per kind of image (multiples of 28x28)."""

    first_min: int = 4 * PATCH * PATCH
    first_max: int = 2000 * PATCH * PATCH
    crop_min: int = 4 * PATCH * PATCH
    crop_max: int = 1000 * PATCH * PATCH
    frame_min: int = 4 * PATCH * PATCH
    frame_max: int = 400 * PATCH * PATCH
    video_frame_max: int = 512 * PATCH * PATCH  # each overview frame (the release sets 512 on every video)
    # the operations work on the images as the model was shown them, as the release does: a crop cuts
    # the first view, an earlier crop's view or an overview frame; select_frames resizes overview
    # frames. False: they read the full-resolution picture and decode frames at full resolution
    # (the embedded model is trained that way)
    from_view: bool = True

    @classmethod
    def preset(cls, name: str) -> "PixelLimits":
        return PIXEL_PRESETS[name]


PIXEL_PRESETS = {
    # the release's RL training settings
    "train": PixelLimits(),
    # the release's evaluation settings: MIN_PIXELS 512*28*28, MAX_PIXELS 5120*28*28
    "eval": PixelLimits(
        first_min=512 * PATCH * PATCH, first_max=5120 * PATCH * PATCH,
        crop_min=256 * PATCH * PATCH, crop_max=5120 * PATCH * PATCH,
        frame_min=256 * PATCH * PATCH, frame_max=5120 * PATCH * PATCH,
    ),
    # the embedded tiny model: a 224x224-class overview, so small text is unreadable until zoomed
    "tiny": PixelLimits(
        first_min=4 * PATCH * PATCH, first_max=64 * PATCH * PATCH,
        crop_min=4 * PATCH * PATCH, crop_max=64 * PATCH * PATCH,
        frame_min=4 * PATCH * PATCH, frame_max=64 * PATCH * PATCH,
        video_frame_max=16 * PATCH * PATCH, from_view=False,
    ),
}


def resolve_pixel_preset(explicit: str | None = None, model: str | None = None, default: str = "train") -> str:
    """The preset a run uses: the one asked for, else the model's own (its studio.json, read into
    `Backend.pixel_preset`), else the default ("train"; evaluation's reproduction uses "eval")."""
    name = explicit or model or default
    if name not in PIXEL_PRESETS:
        raise ValueError(f"unknown pixel preset {name!r}; choose one of {', '.join(sorted(PIXEL_PRESETS))}")
    return name


def smart_resize(height: int, width: int, min_pixels: int, max_pixels: int, factor: int = PATCH) -> tuple[int, int]:
    """Qwen2.5-VL's resize target: sides multiples of `factor`, area within [min_pixels, max_pixels]."""
    if min(height, width) <= 0:
        raise ValueError(f"image has no pixels: {width}x{height}")
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"aspect ratio must be under 200, got {width}x{height}")
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def resize_for_model(image: Image.Image, min_pixels: int, max_pixels: int) -> Image.Image:
    """The image as the model sees it (RGB, smart-resized with bicubic like the processor)."""
    image = image if image.mode == "RGB" else image.convert("RGB")
    h, w = smart_resize(image.height, image.width, min_pixels, max_pixels)
    if (w, h) == image.size:
        return image
    return resample(image, (w, h))


STRIP_MIN_PIXELS = 400_000  # source box + output pixels from which resampling runs in parallel strips
_STRIP_THREADS = max(1, min(4, os.cpu_count() or 1))
_strip_pool: ThreadPoolExecutor | None = None


def _forget_strip_pool() -> None:
    """A forked child has none of the parent's threads: it starts a pool of its own when needed."""
    global _strip_pool
    _strip_pool = None


os.register_at_fork(after_in_child=_forget_strip_pool)


def resample(image: Image.Image, size: tuple[int, int], box: tuple[float, float, float, float] | None = None,
             threads: int | None = None) -> Image.Image:
    """Bicubic resize of `box` (default: the whole image) to `size`: PIL's own result, pixel for pixel.

    Large resizes run PIL's two passes by hand, each cut into strips resized in parallel (PIL
    releases the GIL): the horizontal pass by source rows, the vertical one by output columns
    (an identity horizontally). Every strip reads its whole filter support, so nothing changes.
    """
    global _strip_pool
    w, h = size
    x0, y0, x1, y1 = box if box is not None else (0, 0, image.width, image.height)
    n = min(threads or _STRIP_THREADS, w, h)
    if n < 2 or w * h + (x1 - x0) * (y1 - y0) < STRIP_MIN_PIXELS:
        return image.resize(size, Image.Resampling.BICUBIC, box=(x0, y0, x1, y1))
    if _strip_pool is None:
        _strip_pool = ThreadPoolExecutor(max_workers=_STRIP_THREADS, thread_name_prefix="resample")
    support = 2.0 * max((y1 - y0) / h, 1.0)  # bicubic reaches 2 source rows, widened when shrinking
    r0, r1 = max(0, math.floor(y0 - support) - 1), min(image.height, math.ceil(y1 + support) + 1)
    rows = [r0 + round((r1 - r0) * i / n) for i in range(n + 1)]
    cols = [round(w * i / n) for i in range(n + 1)]
    # each strip is cut out first so that PIL runs only the one pass asked of it (a box that starts
    # inside the image would add an identity pass along the other axis)
    def across(i: int) -> Image.Image:
        band = image.crop((0, rows[i], image.width, rows[i + 1]))
        return band.resize((w, band.height), Image.Resampling.BICUBIC, box=(x0, 0, x1, band.height))

    def down(i: int) -> Image.Image:
        band = middle.crop((cols[i], 0, cols[i + 1], middle.height))
        return band.resize((band.width, h), Image.Resampling.BICUBIC, box=(0, y0 - r0, band.width, y1 - r0))

    middle = Image.new(image.mode, (w, r1 - r0))
    for i, part in enumerate(_strip_pool.map(across, range(n))):
        middle.paste(part, (0, rows[i] - r0))
    out = Image.new(image.mode, size)
    for i, part in enumerate(_strip_pool.map(down, range(n))):
        out.paste(part, (cols[i], 0))
    return out


# ---- crop ------------------------------------------------------------------------------------

def parse_bbox(value) -> tuple[float, float, float, float]:
    """Validate `bbox_2d`: four finite non-negative numbers. Their order is judged after padding
    (crop_box), as the release does: [0.5, 0.66, 0.6, 0.61] pads to a valid 0.2-tall region there."""
    if not isinstance(value, (list, tuple)) or len(value) != 4:
        raise ToolCallError(f"`bbox_2d` must be a list of 4 numbers [x1, y1, x2, y2], got {str(value)[:80]}.")
    x1, y1, x2, y2 = (require_number(v, "bbox_2d") for v in value)
    if min(x1, y1, x2, y2) < 0:
        raise ToolCallError(f"`bbox_2d` coordinates must be >= 0, got {list(value)}.")
    return x1, y1, x2, y2


def crop_padding(tool_name: str, width: int, height: int) -> tuple[float, float]:
    """Flat 0.1 for crop_image_normalized/crop_image; zoom_in caps it at 600 px per side."""
    if tool_name == "zoom_in":
        return min(0.1, 600.0 / width), min(0.1, 600.0 / height)
    return 0.1, 0.1


@dataclass(frozen=True)
class CropBox:
    norm: tuple[float, float, float, float]  # after padding and clamping, in [0, 1]
    px: tuple[int, int, int, int]  # in the target image's pixels


def crop_box(bbox, width: int, height: int, tool_name: str = "crop_image_normalized") -> CropBox:
    """Pure box maths of the released crop: normalize, pad, clamp, to pixels, size check."""
    x1, y1, x2, y2 = parse_bbox(bbox)
    if not (x1 < 1 and y1 < 1 and x2 < 1 and y2 < 1):
        if x1 >= width or y1 >= height:
            raise ToolCallError(
                f"`bbox_2d` {list(bbox)} lies outside the image ({width}x{height} pixels). "
                "Use normalized coordinates within [0.0,1.0]."
            )
        x1, x2, y1, y2 = x1 / width, x2 / width, y1 / height, y2 / height
    px_pad, py_pad = crop_padding(tool_name, width, height)
    nx1, ny1 = (min(max(0.0, v), 1.0) for v in (x1 - px_pad, y1 - py_pad))
    nx2, ny2 = (min(max(0.0, v), 1.0) for v in (x2 + px_pad, y2 + py_pad))
    if nx2 <= nx1 or ny2 <= ny1:
        raise ToolCallError(f"`bbox_2d` must satisfy x1 < x2 and y1 < y2 (each side widened by the "
                            f"{px_pad:g}/{py_pad:g} padding), got {list(bbox)}.")
    to_px = int if tool_name == "zoom_in" else round  # PIL's crop rounds the float box it is given
    px = (to_px(nx1 * width), to_px(ny1 * height), to_px(nx2 * width), to_px(ny2 * height))
    w, h = px[2] - px[0], px[3] - px[1]
    if w <= MIN_CROP_SIDE or h <= MIN_CROP_SIDE:
        raise ToolCallError(f"Cropped image is too small: {max(w, 0)}x{max(h, 0)}")
    return CropBox(norm=(nx1, ny1, nx2, ny2), px=px)


def crop(image: Image.Image, bbox, tool_name: str = "crop_image_normalized") -> tuple[Image.Image, CropBox]:
    """Crop at the image's own (original) resolution; returns the crop and its box."""
    box = crop_box(bbox, image.width, image.height, tool_name)
    return image.crop(box.px), box


def crop_view(image: Image.Image, box: CropBox, min_pixels: int, max_pixels: int) -> Image.Image:
    """What the model sees of a crop, as the release makes it: the box cut out at the image's own
    resolution, then one bicubic resize to `smart_resize`'s size (none when it already fits)."""
    return resize_for_model(image.crop(box.px), min_pixels, max_pixels)


# ---- select_frames ---------------------------------------------------------------------------

RELEASE_ERROR = "Execution Error: "  # the release starts its own operation errors with this
CROP_NAME_IN_ERRORS = "crop_image_normalized"

def parse_frames(value, n_frames: int) -> list[int]:
    """Validate `target_frames` (1-based, at most 8, within the overview) with the release's messages."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value:
        raise ToolCallError(f"`target_frames` must be a non-empty list of frame indices, got {str(value)[:80]}.")
    frames = []
    for v in value:
        f = require_number(v, "target_frames")
        if f != int(f):
            raise ToolCallError(f"`target_frames` must hold whole frame numbers, got {v}.")
        frames.append(int(f))
    if len(frames) > MAX_FRAMES_PER_CALL:
        raise ToolCallError(
            f"{RELEASE_ERROR}You have selected {len(frames)} frames in total. Think again which frames you need to check "
            f"in details (no more than {MAX_FRAMES_PER_CALL} frames)"
        )
    if min(frames) < 1 or max(frames) > n_frames:
        raise ToolCallError(
            f"{RELEASE_ERROR}There are {n_frames} frames numbered in range [1,{n_frames}]. "
            f"Your selection `target_frames={frames}` is out of range."
        )
    return frames


SELECT_ON_IMAGE_ERROR = (
    f"{RELEASE_ERROR}You attempted to `{FRAMES_TOOL}` from **image** not **video**. "
    "You should use `crop_image_normalized` instead for inspecting **image**."
)


def target_index_error(n: int, target, where: str = "image") -> ToolCallError:
    """The release's message for a bad `target_image` (it names `crop_image_normalized` whatever the
    tool): `where` is "image" (an image's list), "frame" (a video's frames) or "added" (the images
    added after a video, numbered from 2)."""
    head = f"{RELEASE_ERROR}Incorrect `target_image` argument in `{CROP_NAME_IN_ERRORS}` operation. "
    if where == "frame":
        return ToolCallError(f"{head}You can only pick an image **from** the video within [1,{n}], "
                             f"but the current argument `target_image={target}`.")
    if where == "added":
        return ToolCallError(f"{head}You can only pick an image within range [2,{n}], "
                             f"but the current argument `target_image={target}`.")
    return ToolCallError(f"{head}You can only pick an image within [1,{n}]")
