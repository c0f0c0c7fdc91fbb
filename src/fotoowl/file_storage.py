"""The local-folder storage backend (aiofiles): objects are files under a root folder.

Like S3Storage it takes the body as an async stream of chunks, computes the MD5 while streaming and
checks it against the source's before the object becomes visible (a mismatch removes the temp file).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from pathlib import Path

import aiofiles
import aiofiles.os

from fotoowl.storage import ObjectNotFound, OnMultipartStart, OpenUpload, Storage, StoredObject, Verify, _check


class FileStorage(Storage):
    """A local folder; objects are written under a temporary name and renamed into place."""

    def __init__(self, root: Path) -> None:
        self.root = root.absolute()

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        # Keys come from ids, but a storage layer must not trust that.
        if not path.is_relative_to(self.root.resolve()):
            raise ValueError(f"object key escapes the storage root: {key!r}")
        return path

    def location(self, key: str) -> str:
        return self._path(key).as_uri()

    async def upload(
        self,
        key: str,
        chunks: AsyncIterable[bytes],
        *,
        content_type: str,
        expected_md5: str | None = None,
        size_hint_bytes: int | None = None,
        on_multipart_start: OnMultipartStart | None = None,
        verify: Verify | None = None,
    ) -> StoredObject:
        path = self._path(key)
        await aiofiles.os.makedirs(path.parent, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.part")
        md5 = hashlib.md5()
        size = 0
        try:
            async with aiofiles.open(tmp, "wb") as out:
                async for chunk in chunks:
                    md5.update(chunk)
                    size += len(chunk)
                    await out.write(chunk)
                await out.flush()
                await asyncio.to_thread(os.fsync, out.fileno())
            _check(expected_md5, md5.hexdigest())
            if verify is not None:
                verify()
            await aiofiles.os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                await asyncio.shield(aiofiles.os.remove(tmp))
            raise
        return StoredObject(key, size, md5.hexdigest(), self.location(key), multipart=False)

    async def put_bytes(self, key: str, data: bytes, *, content_type: str) -> StoredObject:
        async def one() -> AsyncIterator[bytes]:
            yield data

        return await self.upload(key, one(), content_type=content_type)

    async def stream(self, key: str, *, chunk_size_bytes: int = 256 * 1024) -> AsyncIterator[bytes]:
        try:
            handle = await aiofiles.open(self._path(key), "rb")
        except FileNotFoundError:
            raise ObjectNotFound(key) from None
        try:
            while chunk := await handle.read(chunk_size_bytes):
                yield chunk
        finally:
            await handle.close()

    async def size(self, key: str) -> int:
        try:
            return (await aiofiles.os.stat(self._path(key))).st_size
        except FileNotFoundError:
            raise ObjectNotFound(key) from None

    async def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            await aiofiles.os.remove(self._path(key))

    async def delete_many(self, keys: Sequence[str]) -> None:
        for key in keys:
            await self.delete(key)

    async def copy(self, source_key: str, key: str, *, content_type: str) -> None:
        # Streaming the source raises ObjectNotFound when it is gone, before anything is written.
        await self.upload(key, self.stream(source_key), content_type=content_type)

    async def abort_upload(self, key: str, upload_id: str) -> None:
        return None

    async def open_uploads(self, prefix: str = "") -> list[OpenUpload]:
        return []

    async def presigned_url(self, key: str, *, expires_s: int, content_type: str, disposition: str) -> str | None:
        return None

    async def list_keys(self, prefix: str = "") -> AsyncIterator[str]:
        root = self.root.resolve()
        paths = await asyncio.to_thread(lambda: sorted(p for p in root.rglob("*") if p.is_file()))
        for path in paths:
            key = path.relative_to(root).as_posix()
            if key.startswith(prefix) and not path.name.endswith(".part"):
                yield key

    async def ping(self) -> None:
        await aiofiles.os.makedirs(self.root, exist_ok=True)
        if not await aiofiles.os.access(self.root, os.W_OK):
            raise PermissionError(f"storage root {self.root} is not writable")

    async def probe_write(self, key: str) -> None:
        await self.put_bytes(key, b"ok", content_type="text/plain")
