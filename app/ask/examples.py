"""The Ask tab's examples: assets/examples/examples.json (or two generated ones), their thumbnails,
and their known answers (so an answer can be marked ✅ or ❌)."""
from __future__ import annotations

import json
import logging
from pathlib import Path

from PIL import Image, ImageDraw

from app import ROOT, Studio
from core.media import DiskImageStore, Video, load_image, write_video

logger = logging.getLogger(__name__)

VIDEO_SUFFIXES = {".mp4", ".webm", ".mov", ".mkv", ".avi", ".m4v"}


def _example_picture(width: int = 800, height: int = 600) -> Image.Image:
    """A street-like picture with a small sign, for the built-in examples when assets/ has none."""
    img = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(img)
    for y in range(height):
        t = y / height
        draw.line([(0, y), (width, y)], fill=(int(110 - 40 * t), int(160 - 40 * t), int(230 - 170 * t)))
    for i in range(12):
        x, y = 40 + i * 63, 330 + (i * 37) % 160
        draw.rectangle([x, y, x + 50, y + 70], fill=((i * 70) % 255, (i * 40) % 255, (i * 90) % 255))
    draw.rectangle([96, 132, 224, 228], fill=(240, 230, 200))
    draw.text((110, 170), "WOOLSHOPS", fill=(20, 20, 20))
    return img


def _example_frames(n: int = 24, width: int = 320, height: int = 240):
    for i in range(n):
        img = Image.new("RGB", (width, height), (i * 9 % 255, 80, 160))
        d = ImageDraw.Draw(img)
        d.ellipse([10 + i * 11, 100, 50 + i * 11, 140], fill=(255, 220, 0))
        d.text((width // 2, 20), f"frame {i}", fill=(255, 255, 255))
        yield img


def load_examples(studio: Studio) -> list[dict]:
    """Examples from assets/examples/examples.json, else two generated ones in the data folder.

    Each is {"media": absolute path, "question": str, "label": str}.
    """
    index = ROOT / "assets" / "examples" / "examples.json"
    if index.exists():
        try:
            items = json.loads(index.read_text(encoding="utf-8"))
            out = []
            for it in items if isinstance(items, list) else items.get("examples", []):
                media = it.get("media") or it.get("image") or it.get("video")
                if media and it.get("question"):
                    path = (index.parent / media) if not Path(media).is_absolute() else Path(media)
                    if path.exists():
                        out.append({"media": str(path), "question": it["question"],
                                    "label": it.get("label") or it.get("id") or path.name,
                                    "answer": it.get("answer")})
            if out:
                return out
        except (OSError, ValueError, AttributeError) as e:
            logger.warning("cannot read %s: %s; using generated examples", index, e)
    folder = studio.data_dir / "examples"
    folder.mkdir(parents=True, exist_ok=True)
    image, video = folder / "street.png", folder / "ball.mp4"
    if not image.exists():
        _example_picture().save(image)
    if not video.exists():
        write_video(_example_frames(), video, fps=8)
    return [{"media": str(image), "question": "What is written on the small sign?", "label": "street sign"},
            {"media": str(video), "question": "Where is the yellow ball at the end of the clip?", "label": "ball"}]


def thumbnail(studio: Studio, media: str, side: int = 160) -> str:
    """A small picture of an example (a video's first frame), stored with the app's views."""
    path = Path(media)
    image = Video.from_file(path, n=1).frames([1])[0] if path.suffix.lower() in VIDEO_SUFFIXES else load_image(path)
    image = image.convert("RGB")
    image.thumbnail((side, side))
    store = DiskImageStore(studio.static_dir())
    return str(store.path(store.put(image)))


def expected_answer(examples: list[dict], media_path: str | None) -> str | None:
    """The known answer when the media is one of the examples (same file name and size), else None."""
    if not media_path or not Path(media_path).exists():
        return None
    p = Path(media_path)
    for e in examples:
        src = Path(e["media"])
        if e.get("answer") is not None and src.name == p.name and src.stat().st_size == p.stat().st_size:
            return str(e["answer"])
    return None
