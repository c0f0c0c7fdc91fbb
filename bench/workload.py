"""Deterministic workloads: which files, in which folders, of which sizes, from a seed.

Shared by the emulator process (which serves them) and the harness (which names them). File
contents are generated images padded to the target size (fotoowl.testing.images); the image part
comes from a small pool of head variants so the emulator renders each head once, while padding
and size make every file's bytes and MD5 its own.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Literal

KIB = 1024
MIB = 1024 * KIB

Profile = Literal["mixed", "tiny", "single", "photos"]
HEAD_VARIANTS = 48  # fits the image and padding caches of fotoowl.testing.images (256 and 64)
ROOT_NAME = "Bench shoot"


@dataclass(frozen=True, slots=True)
class FileSpec:
    folder: str  # "" for the root, else "Day 1/Camera A"
    name: str
    size_bytes: int  # the padded size; a head larger than this makes the file larger
    variant: int


@dataclass(frozen=True, slots=True)
class HeadSpec:
    fmt: str
    width: int
    height: int
    image_seed: int


def head_spec(profile: Profile, variant: int) -> HeadSpec:
    """The generated image at the start of a file: mostly JPEG, some PNG and WebP, photo-like sizes."""
    rng = random.Random(10_000 + variant)
    if profile == "tiny":
        return HeadSpec("jpeg", 64, 48, rng.getrandbits(32))
    fmt = "png" if variant % 10 == 7 else "webp" if variant % 10 == 3 else "jpeg"
    long_side = rng.randint(480, 960) if fmt == "jpeg" else rng.randint(240, 480)
    short_side = long_side * 3 // 4
    width, height = (long_side, short_side) if variant % 3 else (short_side, long_side)
    return HeadSpec(fmt, width, height, rng.getrandbits(32))


def extension(fmt: str) -> str:
    return {"jpeg": "jpg", "png": "png", "webp": "webp"}[fmt]


def _folders(days: int) -> list[str]:
    folders = [""]
    for day in range(1, days + 1):
        folders += [f"Day {day}", f"Day {day}/Camera A", f"Day {day}/Camera B"]
    return folders


def _log_uniform(rng: random.Random, low: int, high: int) -> int:
    return int(math.exp(rng.uniform(math.log(low), math.log(high))))


def mixed(n_images: int, seed: int) -> list[FileSpec]:
    """Photo-shoot sizes: most 90 KiB-5 MiB (0.1 % 20-50 MiB), about 200 KiB on average: 10,000 = ~2 GiB."""
    rng = random.Random(seed)
    n_big = max(1, round(n_images / 1000))
    n_mid = max(2, round(n_images * 15 / 1000))
    kinds = ["big"] * n_big + ["mid"] * n_mid + ["small"] * (n_images - n_big - n_mid)
    rng.shuffle(kinds)
    folders = _folders(max(2, n_images // 2000))
    files = []
    for index, kind in enumerate(kinds):
        if kind == "big":
            size = rng.randint(20 * MIB, 50 * MIB)
        elif kind == "mid":
            size = _log_uniform(rng, 1 * MIB, 5 * MIB)
        else:
            size = _log_uniform(rng, 90 * KIB, 180 * KIB)
        variant = rng.randrange(HEAD_VARIANTS)
        name = f"IMG_{index + 1:06d}.{extension(head_spec('mixed', variant).fmt)}"
        files.append(FileSpec(folders[index % len(folders)], name, size, variant))
    return files


def tiny(n_images: int, seed: int) -> list[FileSpec]:
    """Many small thumbnails-as-photos (2-12 KiB each), ~660 per folder."""
    rng = random.Random(seed)
    folders = _folders(max(2, n_images // 2000))
    return [
        FileSpec(
            folders[index % len(folders)],
            f"TINY_{index + 1:07d}.jpg",
            rng.randint(2 * KIB, 12 * KIB),
            rng.randrange(HEAD_VARIANTS),
        )
        for index in range(n_images)
    ]


def photos(n_images: int, seed: int) -> list[FileSpec]:
    """Camera JPEGs just under fotoowl's 8 MiB part size (7-8 MiB): the worst case for buffered bytes."""
    rng = random.Random(seed)
    folders = _folders(max(2, n_images // 2000))
    return [
        FileSpec(
            folders[index % len(folders)],
            f"DSC_{index + 1:05d}.jpg",
            rng.randint(7 * MIB, 8 * MIB - 64 * KIB),
            rng.randrange(0, HEAD_VARIANTS, 10),
        )
        for index in range(n_images)
    ]


def single(size_bytes: int) -> list[FileSpec]:
    """One large photo (a panorama or a RAW export), in a subfolder."""
    return [FileSpec("Day 1", "PANORAMA_0001.jpg", size_bytes, 0)]


def plan(profile: Profile, *, n_images: int, seed: int, size_bytes: int) -> list[FileSpec]:
    if profile == "mixed":
        return mixed(n_images, seed)
    if profile == "tiny":
        return tiny(n_images, seed)
    if profile == "photos":
        return photos(n_images, seed)
    return single(size_bytes)
