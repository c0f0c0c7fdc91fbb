"""Where image bytes go: S3-compatible object storage (aiobotocore) or a local folder (aiofiles).

Both take the body as an async stream of chunks and never hold more than one part of it.
The MD5 is computed while streaming and checked against the source's before anything becomes
visible: a mismatch leaves no object behind (the multipart upload is aborted, the temp file removed).

This module holds the Storage interface, its helpers and S3Storage; the local folder is
fotoowl.file_storage.FileStorage, and fotoowl.storage_backends opens the one the settings name.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import math
from abc import ABC, abstractmethod
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiobotocore.config import AioConfig
from botocore.exceptions import ClientError

MIN_PART_SIZE_BYTES = 5 * 1024 * 1024
MAX_PARTS = 10_000
# Stay clear of the 10,000-part ceiling when a size hint is a little low.
_TARGET_PARTS = 9_000

OnMultipartStart = Callable[[str], Awaitable[None]]


class ChecksumMismatch(Exception):
    def __init__(self, expected: str, actual: str, kind: str = "md5") -> None:
        name = "MD5" if kind == "md5" else kind
        super().__init__(f"{name} mismatch: the source says {expected}, the bytes received hash to {actual}")
        self.expected = expected
        self.actual = actual
        self.kind = kind


# Called once every byte has been read, before the object is committed: raising keeps the old object.
Verify = Callable[[], None]


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


# S3's DeleteObjects takes at most 1,000 keys a request.
DELETE_BATCH = 1000
# Larger objects cannot be copied by one CopyObject request.
MAX_COPY_BYTES = 5 * 1024**3


class StorageDeleteFailed(Exception):
    pass


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
        verify: Verify | None = None,
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
    async def delete_many(self, keys: Sequence[str]) -> None:
        """Delete these objects (missing ones are fine); raises if any could not be deleted."""

    @abstractmethod
    async def copy(self, source_key: str, key: str, *, content_type: str) -> None:
        """Copy an object inside storage (no bytes through us); ObjectNotFound if the source is gone."""

    @abstractmethod
    async def abort_upload(self, key: str, upload_id: str) -> None: ...

    @abstractmethod
    async def open_uploads(self, prefix: str = "") -> list[OpenUpload]: ...

    @abstractmethod
    async def presigned_url(self, key: str, *, expires_s: int, content_type: str, disposition: str) -> str | None: ...

    @abstractmethod
    def list_keys(self, prefix: str = "") -> AsyncIterator[str]: ...

    @abstractmethod
    async def ping(self) -> None: ...

    @abstractmethod
    async def probe_write(self, key: str) -> None:
        """Write a tiny object once, without retries: does storage take writes right now?"""

    @abstractmethod
    def location(self, key: str) -> str: ...

    async def read_bytes(self, key: str) -> bytes:
        return b"".join([chunk async for chunk in self.stream(key)])


class S3Storage(Storage):
    def __init__(
        self, client: Any, *, bucket: str, part_size_bytes: int = 8 * 1024 * 1024, probe_client: Any = None
    ) -> None:
        self.client = client
        self.bucket = bucket
        self.part_size_bytes = part_size_bytes
        # Without retries, so a probe tells the state of storage now, not after botocore's backoff.
        self.probe_client = probe_client or client

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
        verify: Verify | None = None,
    ) -> StoredObject:
        part_size = part_size_for(size_hint_bytes, self.part_size_bytes)
        stream = aiter(chunks)
        first, leftover = await _read_part(stream, b"", part_size)
        if not leftover and len(first) < part_size:
            # The whole body fits in one part: one request.
            md5 = await _md5(first)
            _check(expected_md5, md5.hexdigest())
            if verify is not None:
                verify()
            await self.client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=first,
                ContentType=content_type,
                ContentMD5=base64.b64encode(md5.digest()).decode(),
            )
            return StoredObject(key, len(first), md5.hexdigest(), self.location(key), multipart=False, body=first)
        return await self._multipart(
            key,
            stream,
            first,
            leftover,
            part_size,
            content_type=content_type,
            expected_md5=expected_md5,
            on_multipart_start=on_multipart_start,
            verify=verify,
        )

    async def _multipart(
        self,
        key: str,
        stream: AsyncIterator[bytes],
        part: bytes,
        leftover: bytes,
        part_size: int,
        *,
        content_type: str,
        expected_md5: str | None,
        on_multipart_start: OnMultipartStart | None,
        verify: Verify | None,
    ) -> StoredObject:
        created = await self.client.create_multipart_upload(Bucket=self.bucket, Key=key, ContentType=content_type)
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
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload_id,
                    PartNumber=len(parts) + 1,
                    Body=part,
                    ContentMD5=base64.b64encode(part_md5).decode(),
                )
                parts.append({"PartNumber": len(parts) + 1, "ETag": answer["ETag"]})
                size += len(part)
                part, leftover = await _read_part(stream, leftover, part_size)
            _check(expected_md5, whole_md5.hexdigest())
            if verify is not None:
                verify()
            await self.client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
        except BaseException:
            # Cancellation included: the abort must run even while this task is being cancelled.
            await asyncio.shield(self.abort_upload(key, upload_id))
            raise
        return StoredObject(key, size, whole_md5.hexdigest(), self.location(key), multipart=True)

    async def put_bytes(self, key: str, data: bytes, *, content_type: str) -> StoredObject:
        md5 = hashlib.md5(data)
        await self.client.put_object(
            Bucket=self.bucket,
            Key=key,
            Body=data,
            ContentType=content_type,
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

    async def delete_many(self, keys: Sequence[str]) -> None:
        for start in range(0, len(keys), DELETE_BATCH):
            batch = keys[start : start + DELETE_BATCH]
            answer = await self.client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True}
            )
            if errors := answer.get("Errors"):
                first = errors[0]
                raise StorageDeleteFailed(f"{len(errors)} objects not deleted; {first.get('Key')}: {first.get('Code')}")

    async def copy(self, source_key: str, key: str, *, content_type: str) -> None:
        # Objects over 5 GB cannot be copied in one request; the caller downloads those instead.
        try:
            await self.client.copy_object(
                Bucket=self.bucket,
                Key=key,
                CopySource={"Bucket": self.bucket, "Key": source_key},
                ContentType=content_type,
                MetadataDirective="REPLACE",
            )
        except ClientError as exc:
            if _error_code(exc) in ("NoSuchKey", "404", "NotFound"):
                raise ObjectNotFound(source_key) from None
            raise

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
            Params={
                "Bucket": self.bucket,
                "Key": key,
                "ResponseContentType": content_type,
                "ResponseContentDisposition": disposition,
            },
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

    async def probe_write(self, key: str) -> None:
        data = b"ok"
        await self.probe_client.put_object(
            Bucket=self.bucket,
            Key=key,
            Body=data,
            ContentType="text/plain",
            ContentMD5=base64.b64encode(hashlib.md5(data).digest()).decode(),
        )


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


def s3_config(max_connections: int, *, max_attempts: int = 5, read_timeout_s: int = 120) -> AioConfig:
    return AioConfig(
        signature_version="s3v4",
        # Content-MD5 already guards every body; without this botocore also SHA-256-hashes each body
        # in the event loop whenever the endpoint is plain http (as local S3 servers usually are).
        s3={"addressing_style": "path", "payload_signing_enabled": False},
        # Several S3-compatible servers mishandle botocore's default CRC checksums; we send Content-MD5.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        max_pool_connections=max_connections,
        retries={"max_attempts": max_attempts, "mode": "standard"},
        connect_timeout=10,
        read_timeout=read_timeout_s,
    )
