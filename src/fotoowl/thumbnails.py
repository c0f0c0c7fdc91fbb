"""Small WebP previews for the gallery, made by the worker right after an upload."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import IO

from PIL import Image, ImageOps

# Decompression bombs: refuse to decode anything claiming more pixels than a large camera sensor.
Image.MAX_IMAGE_PIXELS = 200_000_000


@dataclass(frozen=True, slots=True)
class Thumbnail:
    data: bytes
    width: int  # of the original image
    height: int


def make_thumbnail(source: bytes | IO[bytes], max_px: int) -> Thumbnail | None:
    """A WebP no larger than max_px on its long side, or None when Pillow cannot decode the image.

    CPU-bound: call it in a thread.
    """
    fp = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        with warnings.catch_warnings():
            # A truncated or odd file is a per-file outcome, not a process-wide warning.
            warnings.simplefilter("ignore")
            with Image.open(fp) as opened:
                width, height = opened.size
                # JPEG can decode at 1/2, 1/4 or 1/8 scale: much less work for a preview.
                opened.draft("RGB", (max_px, max_px))
                img: Image.Image = ImageOps.exif_transpose(opened) or opened
                if img.mode not in ("RGB", "RGBA"):
                    img = img.convert("RGBA" if "transparency" in img.info or img.mode in ("LA", "PA")
                                      else "RGB")
                img.thumbnail((max_px, max_px))
                out = io.BytesIO()
                img.save(out, "WEBP", quality=80, method=2)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None
    return Thumbnail(out.getvalue(), width, height)
