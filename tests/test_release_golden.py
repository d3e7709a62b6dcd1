"""The observation path against the release, byte for byte.

The release's formulas are written out here, apart from core/: its crop (`crop_image_normalized` hands
the padded, clamped float box to PIL's crop, which rounds; `zoom_in` caps the padding at 600 px and
truncates with int()), Qwen's smart_resize, one PIL bicubic resize of the crop to that size, and the
observation text. The release crops the images as it showed them (the first view, an earlier crop's
view, an overview frame); so do the `train` and `eval` presets, while `tiny` crops the full-resolution
picture (docs/protocol.md, section 7). Every case runs the loop's own `Episode` and compares the box,
the text and the view's bytes.
"""
import math

import numpy as np
import pytest
from PIL import Image

from core import operations as ops
from core.backends.base import Generation
from core.loop import Episode, LoopConfig, Task
from core.media import Video
from core.protocol import format_tool_call
from tests.conftest import photo_like

PRESETS = ("train", "eval", "tiny")


# ---- the release, written out ------------------------------------------------------------------

def release_box(bbox, width, height, tool="crop_image_normalized"):
    pad_x, pad_y = (min(0.1, 600.0 / width), min(0.1, 600.0 / height)) if tool == "zoom_in" else (0.1, 0.1)
    if bbox[0] < 1 and bbox[1] < 1 and bbox[2] < 1 and bbox[3] < 1:
        x1, y1, x2, y2 = bbox[0] - pad_x, bbox[1] - pad_y, bbox[2] + pad_x, bbox[3] + pad_y
    else:
        x1, y1 = bbox[0] / width - pad_x, bbox[1] / height - pad_y
        x2, y2 = bbox[2] / width + pad_x, bbox[3] / height + pad_y
    x1, y1, x2, y2 = (min(max(0, v), 1) for v in (x1, y1, x2, y2))
    if tool == "zoom_in":
        return int(x1 * width), int(y1 * height), int(x2 * width), int(y2 * height)
    return tuple(int(round(v)) for v in (x1 * width, y1 * height, x2 * width, y2 * height))  # PIL's crop


def release_smart_resize(height, width, min_pixels, max_pixels, factor=28):
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = math.floor(height / beta / factor) * factor
        w_bar = math.floor(width / beta / factor) * factor
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def release_view(image, min_pixels, max_pixels):
    """The release's resize of a crop (and, with the first image's limits, of the input picture)."""
    image = image.convert("RGB")
    h, w = release_smart_resize(image.height, image.width, min_pixels, max_pixels)
    return image.resize((w, h), Image.Resampling.BICUBIC)


def release_text(view):
    return "\nHere is the cropped image (Image Size: {}x{}):".format(view.size[0], view.size[1])


# ---- the loop, one call at a time ----------------------------------------------------------------

def call(bbox, target, tool):
    return "Let me look closer.\n\n" + format_tool_call(tool, {"bbox_2d": bbox, "target_image": target})


def check_crop(episode, targets, bbox, target, tool, px):
    """One crop through the loop against the release; what a later crop cuts joins `targets`: the
    view the model was shown, as in the release (the `tiny` preset keeps the full-resolution crop)."""
    step = episode.advance(Generation(text=call(bbox, target, tool)))
    assert step.error is None, step.error
    source = targets[target - 1]
    box = release_box(bbox, source.width, source.height, tool)
    cropped = source.crop(box)
    view = release_view(cropped, px.crop_min, px.crop_max)
    got = episode.last_images[0]
    assert tuple(step.box_px) == box
    assert step.observation == release_text(view)
    assert got.size == view.size
    assert got.tobytes() == view.tobytes()
    targets.append(view if px.from_view else cropped)


def picture(width, height, seed=0):
    return photo_like(width, height, seed)


# tall, wide (past zoom_in's 600-px cap), tiny, a photo, huge
PICTURES = {"tall": (700, 2900), "wide": (7000, 1100), "tiny": (120, 90), "photo": (1000, 750),
            "huge": (4000, 3000)}


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("name", list(PICTURES))
def test_crops_and_crops_of_crops_are_the_release_s(preset, name):
    width, height = PICTURES[name]
    image = picture(width, height)
    px = ops.PixelLimits.preset(preset)
    episode = Episode(Task(question="Q", image=image), LoopConfig(pixels=px))
    first = episode.messages[1]["content"][0]["image"]
    shown = release_view(image, px.first_min, px.first_max)
    assert first.tobytes() == shown.tobytes()
    targets = [shown if px.from_view else image]
    absolute = [round(0.31 * width) + 0.5, round(0.27 * height), round(0.62 * width), round(0.71 * height)]
    check_crop(episode, targets, [0.40, 0.30, 0.55, 0.50], 1, "crop_image_normalized", px)
    check_crop(episode, targets, absolute, 1, "zoom_in", px)
    check_crop(episode, targets, [0.05, 0.02, 0.93, 0.97], 1, "crop_image_normalized", px)  # near-whole
    check_crop(episode, targets, [0.25, 0.3, 0.8, 0.75], 3, "zoom_in", px)  # a crop of a crop


@pytest.mark.parametrize("preset", PRESETS)
def test_absolute_boxes_and_crops_of_crops_with_both_rules(preset):
    image = picture(1600, 900, seed=1)
    px = ops.PixelLimits.preset(preset)
    episode = Episode(Task(question="Q", image=image), LoopConfig(pixels=px))
    targets = [release_view(image, px.first_min, px.first_max) if px.from_view else image]
    check_crop(episode, targets, [100, 150, 700, 600], 1, "crop_image_normalized", px)
    check_crop(episode, targets, [0.1, 0.1, 0.7, 0.8], 2, "crop_image_normalized", px)
    check_crop(episode, targets, [30, 20, 200, 150], 3, "zoom_in", px)
    check_crop(episode, targets, [0.5, 0.5, 0.95, 0.9], 2, "crop_image", px)


def video_episode(n, width, height, preset):
    """An episode on n frames; the frames, and each as the overview showed it (checked here)."""
    frames = [picture(width, height, seed=i) for i in range(n)]
    px = ops.PixelLimits.preset(preset)
    episode = Episode(Task(question="Q", video=Video.from_frames(frames)), LoopConfig(pixels=px))
    shown = [release_view(frame, px.frame_min, px.video_frame_max) for frame in frames]
    overview = episode.messages[1]["content"][0]["video"]
    assert [f.tobytes() for f in overview] == [f.tobytes() for f in shown]
    return episode, px, frames, shown


@pytest.mark.parametrize("preset", PRESETS)
def test_crops_of_video_frames_are_the_release_s(preset):
    episode, px, frames, shown = video_episode(4, 640, 360, preset)
    # on a video, target_image picks a frame until something is added; then the added images count
    # from 2 (the release's image list is [video, added...])
    targets = list(shown if px.from_view else frames)
    check_crop(episode, targets, [0.3, 0.2, 0.6, 0.7], 3, "crop_image_normalized", px)
    targets = [None, targets[-1]]
    check_crop(episode, targets, [0.2, 0.1, 0.7, 0.6], 2, "zoom_in", px)


@pytest.mark.parametrize("preset", PRESETS)
def test_selected_frames_and_their_crops_are_the_release_s(preset):
    episode, px, frames, overview = video_episode(16, 480, 270, preset)
    step = episode.advance(Generation(text=format_tool_call("select_frames", {"target_frames": [2, 5]})))
    sources = overview if px.from_view else frames
    shown = [release_view(sources[k - 1], px.frame_min, px.frame_max) for k in (2, 5)]
    assert [f.tobytes() for f in episode.last_images] == [f.tobytes() for f in shown]
    w, h = shown[0].size
    assert step.observation == f"\nHere are the selected frames (Frame Size: {w}x{h}, Numbered 1 to 2):"
    targets = [None] + (shown if px.from_view else [frames[1], frames[4]])
    check_crop(episode, targets, [0.1, 0.2, 0.6, 0.7], 3, "crop_image_normalized", px)  # frame 5's


@pytest.mark.parametrize("tool,bbox,size,expected", [
    # the table of issue 27: the release's example call replayed, its box on the picture that is cut
    ("crop_image_normalized", [100, 150, 300, 400], (1000, 750), (0, 75, 400, 475)),
    ("crop_image_normalized", [0.5, 0.5, 0.95, 0.9], (1000, 750), (400, 300, 1000, 750)),
    # 0.32 * 1600 is 511.99999999999994 in floating point: PIL's crop rounds it, zoom_in's int() truncates
    ("crop_image_normalized", [0.42, 0.33, 0.47, 0.41], (1600, 900), (512, 207, 912, 459)),
    ("zoom_in", [0.42, 0.33, 0.47, 0.41], (1600, 900), (511, 207, 911, 459)),
])
def test_the_issue_table_gives_the_release_s_boxes(tool, bbox, size, expected):
    image = picture(*size, seed=2)
    px = ops.PixelLimits.preset("tiny")  # the picture itself is cut (the release cuts its shown copy)
    episode = Episode(Task(question="Q", image=image), LoopConfig(pixels=px))
    assert release_box(bbox, *size, tool) == expected
    check_crop(episode, [image], bbox, 1, tool, px)


def test_parallel_strips_give_the_whole_image_pass_s_bytes():
    """The loop resizes large pictures in strips on a few threads: the same bytes as one PIL resize."""
    rng = np.random.default_rng(3)
    image = Image.fromarray(rng.integers(0, 256, (1900, 2600, 3), dtype=np.uint8))
    for size in [(2296, 1708), (1008, 756), (224, 168), (2604, 1904)]:
        whole = image.resize(size, Image.Resampling.BICUBIC)
        for threads in (2, 3, 4):
            assert ops.resample(image, size, threads=threads).tobytes() == whole.tobytes()


def error_turn(episode, text):
    return episode.advance(Generation(text=text)).observation


def test_error_observations_are_the_release_s():
    image = picture(250, 200, seed=4)
    ep = Episode(Task(question="Q", image=image), LoopConfig())
    head = "\nExecution error:\nExecution Error: Incorrect `target_image` argument in `crop_image_normalized` operation. "
    assert error_turn(ep, call([0.1, 0.1, 0.5, 0.5], 2, "zoom_in")) == head + "You can only pick an image within [1,1]\n"
    assert error_turn(ep, call([0.0, 0.0, 0.0001, 0.5], 1, "crop_image_normalized")) == \
        "\nExecution error:\nCropped image is too small: 25x118\n"  # of the 252x196 view
    assert error_turn(ep, format_tool_call("select_frames", {"target_frames": [1]})) == (
        "\nExecution error:\nExecution Error: You attempted to `select_frames` from **image** not **video**. "
        "You should use `crop_image_normalized` instead for inspecting **image**.\n")
    video = Video.from_frames([picture(320, 240, seed=i) for i in range(16)])
    ep = Episode(Task(question="Q", video=video), LoopConfig())
    assert error_turn(ep, call([0.1, 0.1, 0.5, 0.5], 17, "crop_image_normalized")) == head + (
        "You can only pick an image **from** the video within [1,16], but the current argument `target_image=17`.\n")
    assert error_turn(ep, format_tool_call("select_frames", {"target_frames": list(range(1, 10))})) == (
        "\nExecution error:\nExecution Error: You have selected 9 frames in total. Think again which frames you "
        "need to check in details (no more than 8 frames)\n")
    assert error_turn(ep, format_tool_call("select_frames", {"target_frames": [3, 17]})) == (
        "\nExecution error:\nExecution Error: There are 16 frames numbered in range [1,16]. Your selection "
        "`target_frames=[3, 17]` is out of range.\n")
    ep.advance(Generation(text=call([0.1, 0.1, 0.5, 0.5], 4, "crop_image_normalized")))
    assert error_turn(ep, call([0.1, 0.1, 0.5, 0.5], 1, "crop_image_normalized")) == head + (
        "You can only pick an image within range [2,2], but the current argument `target_image=1`.\n")


def test_the_issue_table_under_the_default_preset_crops_the_shown_picture():
    """`python -m core ask --backend replay` on a 1000x750 picture (preset `train`): the model was shown
    it at 1008x756, and the release's box is on that view."""
    image = picture(1000, 750, seed=2)
    px = ops.PixelLimits.preset("train")
    episode = Episode(Task(question="Q", image=image), LoopConfig(pixels=px))
    shown = episode.messages[1]["content"][0]["image"]
    assert shown.size == (1008, 756) and release_box([100, 150, 300, 400], 1008, 756) == (0, 74, 401, 476)
    check_crop(episode, [shown], [100, 150, 300, 400], 1, "crop_image_normalized", px)
    assert episode.trajectory.steps[-1].source_box_px == [0, 73, 398, 472]  # on the picture


def test_the_ask_tab_names_the_original_s_pixels_when_image_1_was_shown_resized():
    from app.ask.session import call_markdown

    image = picture(1000, 750, seed=2)
    px = ops.PixelLimits.preset("train")
    episode = Episode(Task(question="Q", image=image), LoopConfig(pixels=px))
    check_crop(episode, [episode.messages[1]["content"][0]["image"]], [100, 150, 300, 400], 1,
               "crop_image_normalized", px)
    text = call_markdown(episode.trajectory.steps[-1])
    assert "= pixels [0, 74, 401, 476] of image 1 = [0, 73, 398, 472] of the original" in text
