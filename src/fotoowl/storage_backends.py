"""Opening the storage backend the settings name: S3 (fotoowl.storage) or a local folder
(fotoowl.file_storage), and creating the S3 bucket when it is missing."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiofiles.os
from aiobotocore.session import get_session
from botocore.exceptions import ClientError

from fotoowl.config import AppSettings
from fotoowl.file_storage import FileStorage
from fotoowl.storage import S3Storage, Storage, _error_code, s3_config


@contextlib.asynccontextmanager
async def open_storage(settings: AppSettings) -> AsyncIterator[Storage]:
    """The storage backend the settings name, with its client opened for the whole process."""
    if settings.storage == "file":
        storage = FileStorage(settings.file_root)
        await aiofiles.os.makedirs(storage.root, exist_ok=True)
        yield storage
        return
    session = get_session()
    options: dict[str, Any] = {
        "endpoint_url": settings.s3_endpoint_url or None,
        "region_name": settings.s3_region,
        "aws_access_key_id": settings.aws_access_key_id or None,
        "aws_secret_access_key": settings.aws_secret_access_key.get() or None,
    }
    async with (
        session.create_client("s3", config=s3_config(settings.files_in_flight * 2 + 8), **options) as client,
        session.create_client("s3", config=s3_config(2, max_attempts=1, read_timeout_s=10), **options) as probe,
    ):
        yield S3Storage(client, bucket=settings.s3_bucket, part_size_bytes=settings.part_size_bytes, probe_client=probe)


async def ensure_bucket(settings: AppSettings) -> None:
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
