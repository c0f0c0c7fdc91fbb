"""Both storage backends against real servers: SeaweedFS for S3, a temp folder for files."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fotoowl.config import AppSettings
from fotoowl.file_storage import FileStorage
from fotoowl.storage import ChecksumMismatch, ObjectNotFound, S3Storage, Storage, part_size_for

MiB = 1024 * 1024


async def chunks_of(data: bytes, size: int = 256 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


@pytest.fixture(params=["s3", "file"])
async def any_storage(request: pytest.FixtureRequest, storage: Storage, tmp_path: Path) -> Storage:
    if request.param == "file":
        return FileStorage(tmp_path / "objects")
    return storage


async def test_small_upload_is_one_put_and_reads_back(any_storage: Storage, s3_prefix: str) -> None:
    data = os.urandom(300_000)
    stored = await any_storage.upload(
        s3_prefix + "small.jpg", chunks_of(data), content_type="image/jpeg", expected_md5=hashlib.md5(data).hexdigest()
    )
    assert stored.size_bytes == len(data)
    assert not stored.multipart
    assert await any_storage.read_bytes(s3_prefix + "small.jpg") == data
    assert await any_storage.size(s3_prefix + "small.jpg") == len(data)


async def test_large_upload_goes_multipart_byte_for_byte(storage: Storage, s3_prefix: str) -> None:
    assert isinstance(storage, S3Storage)
    data = os.urandom(19 * MiB + 12345)
    started: list[str] = []

    async def record(upload_id: str) -> None:
        started.append(upload_id)

    stored = await storage.upload(
        s3_prefix + "big.jpg",
        chunks_of(data, MiB),
        content_type="image/jpeg",
        expected_md5=hashlib.md5(data).hexdigest(),
        size_hint_bytes=len(data),
        on_multipart_start=record,
    )
    assert stored.multipart and len(started) == 1
    assert stored.md5_hex == hashlib.md5(data).hexdigest()
    assert await storage.read_bytes(s3_prefix + "big.jpg") == data
    assert await storage.open_uploads(s3_prefix) == []


async def test_md5_mismatch_leaves_nothing(any_storage: Storage, s3_prefix: str) -> None:
    for size in (1000, 17 * MiB):
        key = f"{s3_prefix}bad-{size}.png"
        with pytest.raises(ChecksumMismatch):
            await any_storage.upload(
                key,
                chunks_of(os.urandom(size), MiB),
                content_type="image/png",
                expected_md5="0" * 32,
                size_hint_bytes=size,
            )
        with pytest.raises(ObjectNotFound):
            await any_storage.size(key)
    assert await any_storage.open_uploads(s3_prefix) == []


async def test_cancelled_multipart_upload_is_aborted(storage: Storage, s3_prefix: str) -> None:
    gate = asyncio.Event()

    async def slow() -> AsyncIterator[bytes]:
        yield os.urandom(9 * MiB)
        gate.set()
        await asyncio.sleep(60)
        yield b"never"

    task = asyncio.create_task(storage.upload(s3_prefix + "cancel.jpg", slow(), content_type="image/jpeg"))
    await gate.wait()
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await storage.open_uploads(s3_prefix) == []


async def test_file_storage_refuses_keys_outside_its_root(tmp_path: Path) -> None:
    files = FileStorage(tmp_path / "root")
    with pytest.raises(ValueError, match="escapes"):
        await files.put_bytes("../outside.jpg", b"x", content_type="image/jpeg")


def test_part_size_stays_under_ten_thousand_parts(settings: AppSettings) -> None:
    assert part_size_for(None, 8 * MiB) == 8 * MiB
    size = 200 * 1024 * MiB  # 200 GiB
    part = part_size_for(size, 8 * MiB)
    assert part >= 8 * MiB and -(-size // part) <= 10_000
