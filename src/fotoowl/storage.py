"""Where image bytes go: S3-compatible object storage (aiobotocore) or a local folder (aiofiles).

Both take the body as an async stream of chunks and never hold more than one part of it.
The MD5 is computed while streaming and checked against the source's before anything becomes
visible: a mismatch leaves no object behind (the multipart upload is aborted, the temp file removed).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import math
import os
import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiofiles
import aiofiles.os
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import ClientError

from fotoowl.config import Settings

MIN_PART_SIZE_BYTES = 5 * 1024 * 1024
MAX_PARTS = 10_000
# Stay clear of the 10,000-part ceiling when a size hint is a little low.
_TARGET_PARTS = 9_000

OnMultipartStart = Callable[[str], Awaitable[None]]


class ChecksumMismatch(Exception):
    def __init__(self, expected: str, actual: str) -> None:
        super().__init__(f"MD5 mismatch: the source says {expected}, the bytes received hash to {actual}")
        self.expected = expected
        self.actual = actual


class ObjectNotFound(Exception):
    pass


@dataclass(frozen=True, slots=True)
class StoredObject:
    key: str
    size_bytes: int
    md5_hex: str
    storage_path: str
    multipart: bool
    # The bytes themselves when they went up in one request (they were in memory anyway).
    body: bytes | None = None


@dataclass(frozen=True, slots=True)
class OpenUpload:
    key: str
    upload_id: str


def part_size_for(size_hint_bytes: int | None, part_size_bytes: int) -> int:
    part = max(part_size_bytes, MIN_PART_SIZE_BYTES)
    if size_hint_bytes:
        part = max(part, math.ceil(size_hint_bytes / _TARGET_PARTS))
    return part


async def _read_part(chunks: AsyncIterator[bytes], first: bytes, part_size_bytes: int) -> tuple[bytes, bytes]:
    """Up to part_size_bytes from the stream; returns (part, leftover) so a part never overshoots."""
    pieces = [first] if first else []
    have = len(first)
    async for chunk in chunks:
        pieces.append(chunk)
        have += len(chunk)
        if have >= part_size_bytes:
            break
    data = b"".join(pieces)
    return data[:part_size_bytes], data[part_size_bytes:]


class Storage(ABC):
    @abstractmethod
    async def upload(
        self,
        key: str,
        chunks: AsyncIterable[bytes],
        *,
        content_type: str,
        expected_md5: str | None = None,
        size_hint_bytes: int | None = None,
        on_multipart_start: OnMultipartStart | None = None,
    ) -> StoredObject: ...

    @abstractmethod
    async def put_bytes(self, key: str, data: bytes, *, content_type: str) -> StoredObject: ...

    @abstractmethod
    def stream(self, key: str, *, chunk_size_bytes: int = 256 * 1024) -> AsyncIterator[bytes]: ...

    @abstractmethod
    async def size(self, key: str) -> int: ...

    @abstractmethod
    async def delete(self, key: str) -> None: ...

    @abstractmethod
    async def abort_upload(self, key: str, upload_id: str) -> None: ...

    @abstractmethod
    async def open_uploads(self, prefix: str = "") -> list[OpenUpload]: ...

    @abstractmethod
    async def presigned_url(self, key: str, *, expires_s: int, content_type: str,
                            disposition: str) -> str | None: ...

    @abstractmethod
    def list_keys(self, prefix: str = "") -> AsyncIterator[str]: ...

    @abstractmethod
    async def ping(self) -> None: ...

    @abstractmethod
    def location(self, key: str) -> str: ...

    async def read_bytes(self, key: str) -> bytes:
        return b"".join([chunk async for chunk in self.stream(key)])


class S3Storage(Storage):
    def __init__(self, client: Any, *, bucket: str, part_size_bytes: int = 8 * 1024 * 1024) -> None:
        self.client = client
        self.bucket = bucket
        self.part_size_bytes = part_size_bytes

    def location(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    async def upload(
        self,
        key: str,
        chunks: AsyncIterable[bytes],
        *,
        content_type: str,
        expected_md5: str | None = None,
        size_hint_bytes: int | None = None,
        on_multipart_start: OnMultipartStart | None = None,
    ) -> StoredObject:
        part_size = part_size_for(size_hint_bytes, self.part_size_bytes)
        stream = aiter(chunks)
        first, leftover = await _read_part(stream, b"", part_size)
        if not leftover and len(first) < part_size:
            # The whole body fits in one part: one request.
            md5 = await _md5(first)
            _check(expected_md5, md5.hexdigest())
            await self.client.put_object(
                Bucket=self.bucket, Key=key, Body=first, ContentType=content_type,
                ContentMD5=base64.b64encode(md5.digest()).decode(),
            )
            return StoredObject(key, len(first), md5.hexdigest(), self.location(key), multipart=False,
                                body=first)
        return await self._multipart(key, stream, first, leftover, part_size, content_type=content_type,
                                     expected_md5=expected_md5, on_multipart_start=on_multipart_start)

    async def _multipart(
        self, key: str, stream: AsyncIterator[bytes], part: bytes, leftover: bytes, part_size: int, *,
        content_type: str, expected_md5: str | None, on_multipart_start: OnMultipartStart | None,
    ) -> StoredObject:
        created = await self.client.create_multipart_upload(Bucket=self.bucket, Key=key,
                                                            ContentType=content_type)
        upload_id: str = created["UploadId"]
        try:
            if on_multipart_start is not None:
                await on_multipart_start(upload_id)
            whole_md5 = hashlib.md5()
            parts: list[dict[str, Any]] = []
            size = 0
            while part:
                if len(parts) >= MAX_PARTS:
                    raise ValueError(f"{key}: more than {MAX_PARTS} parts; the size hint was far too low")
                await _update(whole_md5, part)
                part_md5 = (await _md5(part)).digest()
                answer = await self.client.upload_part(
                    Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=len(parts) + 1, Body=part,
                    ContentMD5=base64.b64encode(part_md5).decode(),
                )
                parts.append({"PartNumber": len(parts) + 1, "ETag": answer["ETag"]})
                size += len(part)
                part, leftover = await _read_part(stream, leftover, part_size)
            _check(expected_md5, whole_md5.hexdigest())
            await self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts},
            )
        except BaseException:
            # Cancellation included: the abort must run even while this task is being cancelled.
            await asyncio.shield(self.abort_upload(key, upload_id))
            raise
        return StoredObject(key, size, whole_md5.hexdigest(), self.location(key), multipart=True)

    async def put_bytes(self, key: str, data: bytes, *, content_type: str) -> StoredObject:
        md5 = hashlib.md5(data)
        await self.client.put_object(
            Bucket=self.bucket, Key=key, Body=data, ContentType=content_type,
            ContentMD5=base64.b64encode(md5.digest()).decode(),
        )
        return StoredObject(key, len(data), md5.hexdigest(), self.location(key), multipart=False)

    async def stream(self, key: str, *, chunk_size_bytes: int = 256 * 1024) -> AsyncIterator[bytes]:
        try:
            answer = await self.client.get_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _error_code(exc) in ("NoSuchKey", "404"):
                raise ObjectNotFound(key) from None
            raise
        async with answer["Body"] as body:
            while chunk := await body.read(chunk_size_bytes):
                yield chunk

    async def size(self, key: str) -> int:
        try:
            head = await self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _error_code(exc) in ("NoSuchKey", "404", "NotFound"):
                raise ObjectNotFound(key) from None
            raise
        return int(head["ContentLength"])

    async def delete(self, key: str) -> None:
        await self.client.delete_object(Bucket=self.bucket, Key=key)

    async def abort_upload(self, key: str, upload_id: str) -> None:
        try:
            await self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except ClientError as exc:
            if _error_code(exc) not in ("NoSuchUpload", "404"):
                raise

    async def open_uploads(self, prefix: str = "") -> list[OpenUpload]:
        uploads: list[OpenUpload] = []
        paginator = self.client.get_paginator("list_multipart_uploads")
        async for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            uploads.extend(OpenUpload(u["Key"], u["UploadId"]) for u in page.get("Uploads", []))
        return uploads

    async def presigned_url(self, key: str, *, expires_s: int, content_type: str, disposition: str) -> str:
        url: str = await self.client.generate_presigned_url(
            "get_object",
            Params={"Bucket": self.bucket, "Key": key, "ResponseContentType": content_type,
                    "ResponseContentDisposition": disposition},
            ExpiresIn=expires_s,
        )
        return url

    async def list_keys(self, prefix: str = "") -> AsyncIterator[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                yield obj["Key"]

    async def ping(self) -> None:
        await self.client.head_bucket(Bucket=self.bucket)


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

    async def abort_upload(self, key: str, upload_id: str) -> None:
        return None

    async def open_uploads(self, prefix: str = "") -> list[OpenUpload]:
        return []

    async def presigned_url(self, key: str, *, expires_s: int, content_type: str,
                            disposition: str) -> str | None:
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


# hashlib releases the GIL on large buffers: hashing them in a thread keeps the event loop
# (and the API it serves) responsive while megabytes go through.
_HASH_IN_THREAD_BYTES = 256 * 1024


async def _md5(data: bytes) -> hashlib._Hash:
    if len(data) < _HASH_IN_THREAD_BYTES:
        return hashlib.md5(data)
    return await asyncio.to_thread(hashlib.md5, data)


async def _update(digest: hashlib._Hash, data: bytes) -> None:
    if len(data) < _HASH_IN_THREAD_BYTES:
        digest.update(data)
    else:
        await asyncio.to_thread(digest.update, data)


def _check(expected_md5: str | None, actual: str) -> None:
    if expected_md5 and expected_md5.lower() != actual:
        raise ChecksumMismatch(expected_md5.lower(), actual)


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def s3_config(max_connections: int) -> AioConfig:
    return AioConfig(
        signature_version="s3v4",
        # Content-MD5 already guards every body; without this botocore also SHA-256-hashes each body
        # in the event loop whenever the endpoint is plain http (as local S3 servers usually are).
        s3={"addressing_style": "path", "payload_signing_enabled": False},
        # Several S3-compatible servers mishandle botocore's default CRC checksums; we send Content-MD5.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        max_pool_connections=max_connections,
        retries={"max_attempts": 5, "mode": "standard"},
        connect_timeout=10,
        read_timeout=120,
    )


@contextlib.asynccontextmanager
async def open_storage(settings: Settings) -> AsyncIterator[Storage]:
    """The storage backend the settings name, with its client opened for the whole process."""
    if settings.storage == "file":
        storage = FileStorage(settings.file_root)
        await aiofiles.os.makedirs(storage.root, exist_ok=True)
        yield storage
        return
    session = get_session()
    async with session.create_client(
        "s3",
        endpoint_url=settings.s3_endpoint_url or None,
        region_name=settings.s3_region,
        aws_access_key_id=settings.aws_access_key_id or None,
        aws_secret_access_key=settings.aws_secret_access_key.get() or None,
        config=s3_config(settings.files_in_flight * 2 + 8),
    ) as client:
        yield S3Storage(client, bucket=settings.s3_bucket, part_size_bytes=settings.part_size_bytes)


async def ensure_bucket(settings: Settings) -> None:
    """Create the bucket when it is missing (embedded and test servers start empty)."""
    if settings.storage != "s3":
        return
    async with open_storage(settings) as storage:
        assert isinstance(storage, S3Storage)
        try:
            await storage.client.head_bucket(Bucket=settings.s3_bucket)
        except ClientError:
            try:
                await storage.client.create_bucket(Bucket=settings.s3_bucket)
            except ClientError as exc:
                # Another process (or a server still starting up) got there first.
                if _error_code(exc) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise
