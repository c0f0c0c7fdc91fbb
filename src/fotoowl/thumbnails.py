"""Small JPEG previews for the gallery, made by the workers' preview lanes once an image is recorded."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import IO

from PIL import Image, ImageOps

# Decompression bombs: refuse to decode anything claiming more pixels than a large camera sensor.
Image.MAX_IMAGE_PIXELS = 200_000_000
CONTENT_TYPE = "image/jpeg"
# Transparent images are flattened onto the gallery's neutral background.
_BACKGROUND = (246, 246, 248)
_ORIENTATION = 0x0112


@dataclass(frozen=True, slots=True)
class Thumbnail:
    data: bytes
    width: int  # of the original image
    height: int


def make_thumbnail(source: bytes | IO[bytes], max_px: int) -> Thumbnail | None:
    """A JPEG no larger than max_px on its long side, or None when Pillow cannot decode the image.

    CPU-bound (a 24 MP photo costs tens of milliseconds): call it in a thread.
    """
    fp = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        with warnings.catch_warnings():
            # A truncated or odd file is a per-file outcome, not a process-wide warning.
            warnings.simplefilter("ignore")
            with Image.open(fp) as opened:
                width, height = opened.size
                # JPEG can decode at 1/2, 1/4 or 1/8 scale: most of the saving for a preview. Ask
                # for the preview's own box, not a square, or the short side decodes too large.
                scale = min(1.0, max_px / max(width, height, 1))
                opened.draft("RGB", (max(1, round(width * scale)), max(1, round(height * scale))))
                img: Image.Image = opened
                # exif_transpose copies the image even when there is nothing to turn.
                if opened.getexif().get(_ORIENTATION, 1) != 1:
                    img = ImageOps.exif_transpose(opened) or opened
                # After draft a JPEG is under twice the target, where an area average looks as
                # good as bilinear at two thirds of the cost.
                img.thumbnail((max_px, max_px), Image.Resampling.BOX, reducing_gap=2.0)
                if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
                    rgba = img.convert("RGBA")
                    flat = Image.new("RGB", rgba.size, _BACKGROUND)
                    flat.paste(rgba, mask=rgba.getchannel("A"))
                    img = flat
                elif img.mode != "RGB":
                    img = img.convert("RGB")
                out = io.BytesIO()
                # JPEG encodes a preview in well under a millisecond; WebP took ten times longer.
                img.save(out, "JPEG", quality=82, optimize=False)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None
    return Thumbnail(out.getvalue(), width, height)
