"""Deterministic test images and file contents that can be far larger than memory.

An emulated file is a real, small encoded image (the *head*) followed by deterministic padding up
to the requested size. JPEG, PNG and WebP decoders stop at the image's own end marker, so padded
files still open as images, yet a 2 GB file costs only its head in memory.
"""

from __future__ import annotations

import hashlib
import io
import random
import threading
from collections.abc import Callable, Iterator
from functools import lru_cache

from PIL import Image, ImageDraw

FORMAT_MIME_TYPES = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}

_PAD_BLOCK_BYTES = 1 << 16
_EXIF_IFD_POINTER = 0x8769
_TAG_MAKE = 0x010F
_TAG_MODEL = 0x0110
_TAG_DATETIME = 0x0132
_TAG_DATETIME_ORIGINAL = 0x9003


def _random_colour(rng: random.Random) -> tuple[int, int, int]:
    return (rng.randrange(256), rng.randrange(256), rng.randrange(256))


@lru_cache(maxsize=256)
def render_image(
    fmt: str,
    width_px: int,
    height_px: int,
    seed: int,
    *,
    taken_time: str | None = None,
    camera_make: str | None = None,
    camera_model: str | None = None,
) -> bytes:
    """Encode a colourful image: a smooth gradient with a few shapes, the same bytes for the same seed.

    Cached, and cheap to recompute, so the emulator keeps only sizes and checksums of many files.
    """
    if fmt not in FORMAT_MIME_TYPES:
        raise ValueError(f"unsupported image format {fmt!r}")
    rng = random.Random(seed)
    corners = Image.new("RGB", (2, 2))
    corners.putdata([_random_colour(rng) for _ in range(4)])
    image = corners.resize((width_px, height_px), Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randint(2, 5)):
        x0, y0 = rng.randrange(width_px), rng.randrange(height_px)
        x1, y1 = x0 + rng.randint(1, max(1, width_px // 2)), y0 + rng.randint(1, max(1, height_px // 2))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape((x0, y0, x1, y1), fill=_random_colour(rng))
    out = io.BytesIO()
    if fmt == "jpeg":
        exif = image.getexif()
        if camera_make:
            exif[_TAG_MAKE] = camera_make
        if camera_model:
            exif[_TAG_MODEL] = camera_model
        if taken_time:
            exif[_TAG_DATETIME] = taken_time
            exif.get_ifd(_EXIF_IFD_POINTER)[_TAG_DATETIME_ORIGINAL] = taken_time
        image.save(out, "JPEG", quality=85, exif=exif.tobytes())
    elif fmt == "png":
        image.save(out, "PNG", compress_level=1)
    else:
        image.save(out, "WEBP", quality=80)
    return out.getvalue()


@lru_cache(maxsize=64)
def _pad_block(pad_seed: int) -> bytes:
    return random.Random(pad_seed).randbytes(_PAD_BLOCK_BYTES)


def padding_bytes(pad_seed: int, offset: int, length: int) -> bytes:
    """Bytes [offset, offset + length) of an endless deterministic padding stream."""
    block = _pad_block(pad_seed)
    parts: list[bytes] = []
    while length > 0:
        start = offset % _PAD_BLOCK_BYTES
        piece = block[start : start + length]
        parts.append(piece)
        offset += len(piece)
        length -= len(piece)
    return b"".join(parts)


class Content:
    """The bytes of one emulated file: a head from `head_factory`, padded to `min_size_bytes`.

    The head is produced on demand (and may be recomputed: factories must be deterministic);
    size and MD5 are computed once, lazily, and cached. Padding never shrinks the head, so the
    real size is max(len(head), min_size_bytes).
    """

    def __init__(self, head_factory: Callable[[], bytes], *, min_size_bytes: int = 0, pad_seed: int = 0) -> None:
        self._head_factory = head_factory
        self._min_size_bytes = min_size_bytes
        self._pad_seed = pad_seed
        self._size_bytes: int | None = None
        self._md5_hex: str | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_bytes(cls, data: bytes) -> Content:
        return cls(lambda: data)

    @property
    def is_computed(self) -> bool:
        return self._size_bytes is not None and self._md5_hex is not None

    @property
    def size_bytes(self) -> int:
        if self._size_bytes is None:
            self._size_bytes = max(len(self._head_factory()), self._min_size_bytes)
        return self._size_bytes

    @property
    def md5_hex(self) -> str:
        # Big files take seconds to hash: the emulator calls this from a thread, hence the lock.
        with self._lock:
            if self._md5_hex is None:
                digest = hashlib.md5(usedforsecurity=False)
                for chunk in self.iter_bytes(0, self.size_bytes):
                    digest.update(chunk)
                self._md5_hex = digest.hexdigest()
            return self._md5_hex

    def iter_bytes(self, start: int, end: int, chunk_size_bytes: int = 1 << 16) -> Iterator[bytes]:
        """Yield bytes [start, end) in chunks of at most chunk_size_bytes."""
        end = min(end, self.size_bytes)
        head = self._head_factory()
        position = start
        while position < end:
            stop = min(end, position + chunk_size_bytes)
            if position < len(head):
                stop = min(stop, len(head))
                yield head[position:stop]
            else:
                yield padding_bytes(self._pad_seed, position - len(head), stop - position)
            position = stop

    def read_all(self) -> bytes:
        return b"".join(self.iter_bytes(0, self.size_bytes))
