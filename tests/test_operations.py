"""Visual operations: the release's crop rule per tool name, resize policy, and every bad box."""
import math

import numpy as np
import pytest
from PIL import Image, ImageFilter

from core import operations as ops
from core.protocol import ToolCallError

def release_crop_px(bbox, w, h, pad_x=0.1, pad_y=0.1, to_px=round):
    """The released crop arithmetic, written out independently: normalize, pad, clamp, then PIL's
    rounding of the float box (`crop_image_normalized`) or int() (`zoom_in`)."""
    if all(v < 1 for v in bbox):
        x1, y1, x2, y2 = bbox
    else:
        x1, y1, x2, y2 = bbox[0] / w, bbox[1] / h, bbox[2] / w, bbox[3] / h
    c = lambda v: min(max(0, v), 1)
    return (to_px(c(x1 - pad_x) * w), to_px(c(y1 - pad_y) * h), to_px(c(x2 + pad_x) * w), to_px(c(y2 + pad_y) * h))


@pytest.mark.parametrize("bbox", [[0.1, 0.2, 0.3, 0.4], [0.0, 0.0, 0.05, 0.05], [0.55, 0.61, 0.97, 0.99],
                                  [120, 45, 400, 380], [0.33, 0.1, 0.34, 0.9]])
@pytest.mark.parametrize("size", [(800, 600), (1333, 777), (4000, 3000)])
def test_crop_normalized_matches_release_pixel_exact(bbox, size):
    w, h = size
    box = ops.crop_box(bbox, w, h, "crop_image_normalized")
    assert box.px == release_crop_px(bbox, w, h)


def test_zoom_in_caps_padding_at_600_px_for_large_images():
    w, h = 12000, 9000
    zoom = ops.crop_box([0.5, 0.5, 0.6, 0.6], w, h, "zoom_in")
    flat = ops.crop_box([0.5, 0.5, 0.6, 0.6], w, h, "crop_image_normalized")
    assert zoom.px == release_crop_px([0.5, 0.5, 0.6, 0.6], w, h, 600 / w, 600 / h, int)
    assert zoom.px == (5400, 3900, 7800, 6000)  # 0.5*12000-600 .. 0.6*12000+600 ; 4500-600 .. 5400+600
    assert flat.px == (4800, 3600, 8400, 6300)  # the flat 0.1 rule pads 1200 and 900 px
    small = ops.crop_box([0.5, 0.5, 0.6, 0.6], 800, 600, "zoom_in")
    assert small.px == ops.crop_box([0.5, 0.5, 0.6, 0.6], 800, 600, "crop_image").px  # cap inactive below 6000 px
    # the rules round differently: 0.32 * 1600 is 511.99999999999994 (PIL's crop rounds, zoom_in truncates)
    assert ops.crop_box([0.42, 0.33, 0.47, 0.41], 1600, 900, "zoom_in").px == (511, 207, 911, 459)
    assert ops.crop_box([0.42, 0.33, 0.47, 0.41], 1600, 900).px == (512, 207, 912, 459)


def test_crop_returns_the_pixels_of_the_box(tmp_path):
    from tests.conftest import photo_like
    img = photo_like(640, 480)
    cropped, box = ops.crop(img, [0.2, 0.2, 0.5, 0.6])
    assert cropped.tobytes() == img.crop(box.px).tobytes()
    assert cropped.size == (box.px[2] - box.px[0], box.px[3] - box.px[1])


def test_too_small_crop_is_an_error():
    with pytest.raises(ToolCallError, match=r"Cropped image is too small: 28x"):
        ops.crop_box([0.0, 0.0, 0.0001, 0.5], 280, 300)  # x2 = (0.0001 + 0.1) * 280 -> 28: too small
    assert ops.crop_box([0.0, 0.0, 0.01, 0.5], 280, 300).px[2] == 31  # (0.01 + 0.1) * 280 = 30.8 -> 31: fine


@pytest.mark.parametrize("bbox,fragment", [
    ([0.1, 0.1, float("nan"), 0.5], "finite"),
    (["0.1", 0.1, 0.2, 0.5], "must be a number"),
    ([0.5, 0.5, 0.2, 0.9], "x1 < x2"),
    ([0.1, 0.7, 0.3, 0.45], "x1 < x2"),  # inverted by more than the two paddings
    ([-0.2, 0.1, 0.3, 0.4], ">= 0"),
    ([900, 700, 1200, 900], "outside the image"),
    ([0.1, 0.2, 0.3], "list of 4"),
    ("0.1,0.2,0.3,0.4", "list of 4"),
    ([True, 0.1, 0.3, 0.4], "must be a number"),
    ([0.1, 0.1, float("inf"), 0.4], "finite"),
])
def test_bad_boxes_give_clear_errors(bbox, fragment):
    with pytest.raises(ToolCallError, match=fragment):
        ops.crop_box(bbox, 800, 600)


@pytest.mark.parametrize("bbox", [[0.54, 0.66, 0.69, 0.61], [0.5, 0.5, 0.5, 0.5], [0.3, 0.2, 0.25, 0.4]])
def test_slightly_inverted_or_point_boxes_crop_the_padded_region_like_the_release(bbox):
    """The release pads first and crops what that gives: order is judged on the padded box."""
    box = ops.crop_box(bbox, 800, 600)
    assert box.px == release_crop_px(bbox, 800, 600)
    assert box.px[2] > box.px[0] and box.px[3] > box.px[1]


def test_partially_out_of_range_absolute_box_is_clamped_like_the_release():
    box = ops.crop_box([700, 500, 1000, 900], 800, 600)
    assert box.px == release_crop_px([700, 500, 1000, 900], 800, 600) == (620, 440, 800, 600)


def test_smart_resize_matches_qwen_rules():
    h, w = ops.smart_resize(3000, 4000, 4 * 784, 1000 * 784)
    assert h % 28 == 0 and w % 28 == 0 and h * w <= 1000 * 784
    assert abs((w / h) - 4 / 3) < 0.05
    assert ops.smart_resize(10, 10, 4 * 784, 1000 * 784) == (56, 56)  # upscaled to the minimum
    assert ops.smart_resize(280, 280, 4 * 784, 1000 * 784) == (280, 280)
    with pytest.raises(ValueError, match="aspect ratio"):
        ops.smart_resize(1, 500, 4, 10**9)


def test_smart_resize_agrees_with_transformers():
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize as hf_smart_resize
    for h, w in [(600, 800), (3000, 4000), (29, 1000), (1344, 896), (57, 57)]:
        for lo, hi in [(4 * 784, 1000 * 784), (512 * 784, 5120 * 784), (4 * 784, 64 * 784)]:
            assert ops.smart_resize(h, w, lo, hi) == hf_smart_resize(h, w, min_pixels=lo, max_pixels=hi)


def test_resize_for_model_respects_limits():
    img = Image.new("RGB", (4000, 3000))
    out = ops.resize_for_model(img, 4 * 784, 64 * 784)
    assert out.width % 28 == 0 and out.height % 28 == 0 and out.width * out.height <= 64 * 784


@pytest.mark.parametrize("frames,fragment", [
    ([1, 2, 3, 4, 5, 6, 7, 8, 9], "selected 9 frames in total"),
    ([0, 3], r"range \[1,16\]"),
    ([3, 17], "out of range"),
    ([], "non-empty"),
    ([1.5], "whole frame numbers"),
    (["2"], "must be a number"),
])
def test_bad_frame_selections(frames, fragment):
    with pytest.raises(ToolCallError, match=fragment):
        ops.parse_frames(frames, 16)


def test_frame_selection_accepts_a_single_number_and_float_integers():
    assert ops.parse_frames(3, 16) == [3]
    assert ops.parse_frames([1.0, 16], 16) == [1, 16]


def test_the_pixel_preset_is_the_one_asked_for_else_the_models_else_the_default():
    assert ops.resolve_pixel_preset("eval", "tiny") == "eval"
    assert ops.resolve_pixel_preset(None, "tiny") == "tiny"
    assert ops.resolve_pixel_preset() == "train"
    assert ops.resolve_pixel_preset(None, None, default="eval") == "eval"
    with pytest.raises(ValueError, match="unknown pixel preset 'huge'; choose one of eval, tiny, train"):
        ops.resolve_pixel_preset("huge")


def test_resample_in_strips_equals_one_resize():
    rng = np.random.default_rng(1)
    img = Image.fromarray(rng.integers(0, 256, (900, 1200, 3), dtype=np.uint8))
    box = (101, 37, 1003, 811)
    whole = img.resize((812, 700), Image.Resampling.BICUBIC, box=box)
    assert ops.resample(img, (812, 700), box, threads=3).tobytes() == whole.tobytes()


def test_crop_view_is_the_crop_then_one_bicubic_resize():
    rng = np.random.default_rng(2)
    img = Image.fromarray(rng.integers(0, 256, (600, 800, 3), dtype=np.uint8)).filter(ImageFilter.SMOOTH_MORE)
    box = ops.crop_box([0.2, 0.2, 0.5, 0.6], 800, 600)
    view = ops.crop_view(img, box, 4 * 784, 64 * 784)
    expected = img.crop(box.px).resize(view.size, Image.Resampling.BICUBIC)
    assert view.size == (224, 196) and view.tobytes() == expected.tobytes()
    big = img.resize((1400, 700))
    fits = ops.crop_box([0.2, 0.2, 0.42, 0.56], 1400, 700)  # 588x392: multiples of 28 within the limits
    assert ops.crop_view(big, fits, 4 * 784, 1000 * 784).tobytes() == big.crop(fits.px).tobytes()


def _resample_in_child(queue):
    img = Image.new("RGB", (1200, 1000), (10, 20, 30))
    queue.put(ops.resample(img, (600, 500)).size)


def test_a_forked_child_resamples_in_strips_of_its_own():
    """The strip threads do not survive a fork: a child makes its own pool instead of waiting forever."""
    import multiprocessing
    ops.resample(Image.new("RGB", (1200, 1000)), (600, 500), threads=2)  # the parent's pool exists
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_resample_in_child, args=(queue,))
    child.start()
    child.join(timeout=30)
    if child.is_alive():
        child.kill()
    assert child.exitcode == 0 and queue.get(timeout=1) == (600, 500)
