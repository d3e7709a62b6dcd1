"""Small WebP thumbnails of stored pictures, made while the picture is still in memory."""
from __future__ import annotations

import io
import threading
from collections import OrderedDict
from pathlib import Path

from PIL import Image

from core.media import DiskImageStore, load_image

THUMB_SIDE = 128


def make_thumb(image: Image.Image, side: int = THUMB_SIDE) -> bytes:
    scale = min(1.0, side / max(image.size))  # resized straight to the small size: no full-size copy
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    thumb = image.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)
    thumb = thumb if thumb.mode == "RGB" else thumb.convert("RGB")
    buf = io.BytesIO()
    thumb.save(buf, format="WEBP", quality=70)
    return buf.getvalue()


class ThumbnailingStore(DiskImageStore):
    """The log's image folder: each new picture's thumbnail is made while it is still in memory,
    so logging its step needs no PNG decode and no image work inside the transaction."""

    def __init__(self, root: str | Path, keep: int = 1024) -> None:
        super().__init__(root)
        self._thumbs: OrderedDict[str, bytes] = OrderedDict()
        self._keep, self._lock = keep, threading.Lock()

    def put(self, image: Image.Image) -> str:
        sha = super().put(image)
        with self._lock:
            if sha in self._thumbs:
                return sha
        thumb = make_thumb(image)
        with self._lock:
            self._thumbs[sha] = thumb
            while len(self._thumbs) > self._keep:
                self._thumbs.popitem(last=False)
        return sha

    def made_here(self, sha: str) -> bytes | None:
        """The thumbnail of a picture this process stored lately (None for others: no decoding)."""
        with self._lock:
            return self._thumbs.get(sha)

    def thumb(self, sha: str) -> bytes:
        """The thumbnail of a stored picture: from memory when this process stored it, else decoded."""
        thumb = self.made_here(sha)
        return thumb if thumb is not None else make_thumb(load_image(self.path(sha)))
