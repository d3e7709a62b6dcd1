"""Shared fixtures: real generated images and videos (no mocks)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from core.media import write_video


def photo_like(width: int = 800, height: int = 600, seed: int = 0) -> Image.Image:
    """A photo-like picture: sky/ground gradient, shapes, a sign with text, sensor noise."""
    rng = np.random.default_rng(seed)
    y = np.linspace(0, 1, height)[:, None, None]
    sky = np.array([110, 160, 230]) * (1 - y) + np.array([70, 120, 60]) * y
    arr = np.broadcast_to(sky, (height, width, 3)).copy()
    img = Image.fromarray(arr.astype(np.uint8))
    d = ImageDraw.Draw(img)
    for _ in range(25):
        x0, y0 = rng.integers(0, width - 40), rng.integers(height // 3, height - 40)
        d.rectangle([x0, y0, x0 + rng.integers(20, 120), y0 + rng.integers(20, 90)],
                    fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
    d.rectangle([int(width * 0.12), int(height * 0.22), int(width * 0.28), int(height * 0.38)], fill=(240, 230, 200))
    d.text((int(width * 0.14), int(height * 0.28)), "WOOLSHOPS", fill=(20, 20, 20))
    noisy = np.asarray(img).astype(np.int16) + rng.integers(-8, 9, (height, width, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def numbered_frames(n: int, width: int = 320, height: int = 240):
    """Frames that each show their own number, so a test can tell which frame came back."""
    for i in range(n):
        img = Image.new("RGB", (width, height), (i * 5 % 255, 80, 160))
        ImageDraw.Draw(img).rectangle([10 + (i * 7) % (width - 60), 10, 50 + (i * 7) % (width - 60), 50], fill=(255, 255, 0))
        ImageDraw.Draw(img).text((width // 2, height // 2), str(i), fill=(255, 255, 255))
        yield img


@pytest.fixture(scope="session")
def photo_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("media") / "street.jpg"
    photo_like().save(path, quality=92)
    return path


@pytest.fixture(scope="session")
def video_path(tmp_path_factory):
    """A real 4-second H.264 mp4, 8 fps, 320x240, 32 numbered frames."""
    return write_video(numbered_frames(32), tmp_path_factory.mktemp("media") / "clip.mp4", fps=8)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A randomly initialised tiny Qwen2.5-VL checkpoint folder, built once per test session."""
    from train.tiny import build_random_checkpoint

    return build_random_checkpoint(tmp_path_factory.mktemp("tiny") / "pixel-reasoner-tiny", seed=0)
