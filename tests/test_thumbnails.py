"""Previews: size, orientation, transparency, and what happens with bytes Pillow cannot read."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from fotoowl.testing.images import render_image
from fotoowl.thumbnails import make_thumbnail


def _decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    assert image.format == "JPEG"
    return image


@pytest.mark.parametrize(
    ("fmt", "width", "height"),
    [
        ("jpeg", 1280, 960),
        ("jpeg", 931, 698),
        ("jpeg", 700, 1400),
        ("png", 480, 360),
        ("webp", 360, 480),
        ("jpeg", 200, 100),
    ],
)
def test_preview_fits_the_box_and_keeps_the_aspect(fmt: str, width: int, height: int) -> None:
    thumb = make_thumbnail(render_image(fmt, width, height, seed=3), 320)
    assert thumb is not None
    assert (thumb.width, thumb.height) == (width, height)  # the original's size, for the metadata
    preview = _decoded(thumb.data)
    long_side = min(320, max(width, height))  # never enlarged
    assert max(preview.size) == long_side
    assert preview.size[0] / preview.size[1] == pytest.approx(width / height, rel=0.02)


def test_preview_of_a_large_jpeg_decodes_at_a_reduced_scale() -> None:
    # 4:3 at 2560 px: a 1/8 decode (320x240) is already the preview; a square request would decode 1/4.
    thumb = make_thumbnail(render_image("jpeg", 2560, 1920, seed=4), 320)
    assert thumb is not None and _decoded(thumb.data).size == (320, 240)


def test_preview_follows_exif_orientation() -> None:
    image = Image.new("RGB", (400, 200), (200, 30, 30))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    out = io.BytesIO()
    image.save(out, "JPEG", exif=exif.tobytes())
    thumb = make_thumbnail(out.getvalue(), 320)
    assert thumb is not None
    assert _decoded(thumb.data).size == (160, 320)


def test_transparent_png_is_flattened_onto_the_background() -> None:
    image = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    out = io.BytesIO()
    image.save(out, "PNG")
    thumb = make_thumbnail(out.getvalue(), 320)
    assert thumb is not None
    preview = _decoded(thumb.data).convert("RGB")
    red, green, blue = preview.getpixel((32, 32))  # type: ignore[misc]
    assert min(red, green, blue) > 230  # the light background, not black


@pytest.mark.parametrize("data", [b"", b"not an image", b"\xff\xd8\xff\xe0" + b"\x00" * 64])
def test_bytes_pillow_cannot_read_give_no_preview(data: bytes) -> None:
    assert make_thumbnail(data, 320) is None
