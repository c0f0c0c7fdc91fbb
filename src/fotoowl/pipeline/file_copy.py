"""Copying one file: its bytes from the source into storage, checked (its preview comes later).

Every failure becomes an outcome with a reason (CopyFailed), or, when our own storage or database
failed it, a pause that costs the file no attempt (CopyPaused); nothing escapes to the batch.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass

import aiohttp
from botocore.exceptions import BotoCoreError, ClientError

from fotoowl.metrics import BYTES_TRANSFERRED, FILES, TRANSFER_SECONDS
from fotoowl.pipeline.claims import (
    ClaimedItem,
    Copied,
    CopyFailed,
    CopyPaused,
)
from fotoowl.pipeline.dedupe import StoredCopy, copy_stored
from fotoowl.pipeline.deps import Deps
from fotoowl.pipeline.keys import object_key, stored_content_type
from fotoowl.resilience import is_db_outage, is_storage_outage, with_database
from fotoowl.sources.base import FolderLink, Source, SourceError
from fotoowl.sources.checksums import checksum_hasher, hashing
from fotoowl.storage import ChecksumMismatch, StoredObject, part_size_for

log = logging.getLogger("fotoowl.pipeline.file_copy")

# A storage failure this soon after an outage belongs to it (the request began while storage was
# down and only gave up now, after botocore's own retries), even though storage answers again.
STORAGE_RECENT_OUTAGE_S = 120.0


@dataclass(frozen=True, slots=True)
class Origin:
    """Where an import's files come from: its source and the folder's link as that source reads it."""

    source: Source
    link: FolderLink


async def copy_item(
    deps: Deps,
    origin: Origin,
    item: ClaimedItem,
    token: uuid.UUID,
    on_stored: Callable[[], None],
    stored_copy: StoredCopy | None = None,
) -> Copied | CopyFailed | CopyPaused:
    extra = {"import_id": item.import_id, "file_id": item.file_id}
    started = time.monotonic()
    outcome: CopyFailed | CopyPaused
    try:
        copied = await _copy(deps, origin, item, token, on_stored, stored_copy)
    except SourceError as exc:
        outcome = CopyFailed(item.id, exc.reason or f"http_{exc.status}", str(exc), exc.transient)
    except ChecksumMismatch as exc:
        code = "md5_mismatch" if exc.kind == "md5" else "checksum_mismatch"
        outcome = CopyFailed(item.id, code, str(exc), transient=True)
    except (ClientError, BotoCoreError) as exc:
        if is_storage_outage(exc) and await deps.storage_gate.confirm_outage(recent_s=STORAGE_RECENT_OUTAGE_S):
            outcome = CopyPaused(item.id, f"storage unavailable: {type(exc).__name__}")
        else:
            outcome = CopyFailed(item.id, "storage_error", f"storage: {exc}", transient=True)
    except (aiohttp.ClientError, TimeoutError, ConnectionError) as exc:
        outcome = CopyFailed(item.id, "network_error", f"{type(exc).__name__}: {exc}", transient=True)
    except SizeMismatch as exc:
        outcome = CopyFailed(item.id, "size_mismatch", str(exc), transient=True)
    except Exception as exc:
        if is_db_outage(exc):
            outcome = CopyPaused(item.id, f"database unavailable: {type(exc).__name__}")
        else:
            # A defect or a case nobody foresaw: the file fails with the reason once its attempts
            # are spent, instead of taking its whole batch down.
            log.exception("copy failed unexpectedly", extra=extra)
            outcome = CopyFailed(
                item.id, "internal_error", f"unexpected error: {type(exc).__name__}: {exc}", transient=True
            )
    else:
        if copied.deduplicated_from is not None:
            FILES.labels("deduplicated", "").inc()
            return copied
        TRANSFER_SECONDS.observe(time.monotonic() - started)
        BYTES_TRANSFERRED.inc(copied.size_bytes)
        FILES.labels("imported", "").inc()
        log.debug("file copied", extra={**extra, "bytes": copied.size_bytes})
        return copied
    if isinstance(outcome, CopyPaused):
        log.info("copy paused: %s", outcome.reason, extra=extra)
    else:
        log.warning("copy failed: %s", outcome.message, extra={**extra, "code": outcome.code})
    return outcome


class SizeMismatch(Exception):
    pass


async def _copy(
    deps: Deps,
    origin: Origin,
    item: ClaimedItem,
    token: uuid.UUID,
    on_stored: Callable[[], None],
    stored_copy: StoredCopy | None,
) -> Copied:
    settings = deps.settings
    key = object_key(settings, origin.source.name, item.file_id, item.mime_type)
    if stored_copy is not None and (
        deduplicated := await copy_stored(deps, origin.source.name, item, key, stored_copy)
    ):
        on_stored()
        return deduplicated
    # 0: the source did not say (a keyless Drive listing); the bytes themselves tell, as they stream.
    size = int(item.size_bytes)
    part_size = part_size_for(size, settings.part_size_bytes)
    # What this file can hold in memory: its body twice if it goes up in one request (the chunks and
    # their join), else two parts.
    memory_bytes = 2 * (min(size, part_size) if size else part_size)
    async with deps.semaphore:
        held_bytes = await deps.transfer_memory.acquire(memory_bytes)
        try:
            stored = await _upload(deps, origin, item, token, key, size)
        finally:
            await deps.transfer_memory.release(held_bytes)
    on_stored()
    # No preview here: the image is recorded with its preview pending, and a preview lane makes it
    # later from the stored original (preview_lane.py), off the copy's path.
    return Copied(item.id, key, stored.storage_path, None, stored.md5_hex, stored.size_bytes, None, None)


async def _upload(deps: Deps, origin: Origin, item: ClaimedItem, token: uuid.UUID, key: str, size: int) -> StoredObject:
    storage = deps.storage
    if item.upload_id:
        # A worker died mid-upload on this item: close what it left open.
        await storage.abort_upload(key, item.upload_id)

    async def remember_upload(upload_id: str) -> None:
        await with_database(
            deps.pool,
            lambda: deps.pool.execute(
                "UPDATE import_items SET upload_id = $2 WHERE id = $1 AND lease_token = $3", item.id, upload_id, token
            ),
        )

    download = origin.source.open(
        origin.link,
        item.file_id,
        locator=item.resource_key,
        expected_size_bytes=size or None,
        chunk_size_bytes=deps.settings.chunk_size_bytes,
    )
    # Storage checks an MD5 itself as the bytes go up; another kind of checksum is computed here.
    checker = checksum_hasher(item.checksum_kind) if item.checksum and item.checksum_kind != "md5" else None
    received_bytes = 0
    # The bytes also go to this machine's preview spool, so the preview need not read them back.
    spool = deps.preview_spool.writer(key, size) if deps.preview_spool else None

    async def counted(chunks: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
        nonlocal received_bytes
        async for chunk in chunks:
            received_bytes += len(chunk)
            if spool is not None:
                spool.write(chunk)
            yield chunk

    def verify() -> None:
        # Before the object is committed, so bytes that fail their checks never replace good ones.
        if size and received_bytes != size:
            raise SizeMismatch(f"{origin.source.name} says {size} bytes, received {received_bytes}")
        if checker is not None and item.checksum and checker.hexdigest() != item.checksum:
            raise ChecksumMismatch(item.checksum, checker.hexdigest(), kind=item.checksum_kind or "checksum")

    try:
        stored = await storage.upload(
            key,
            counted(hashing(download, checker) if checker else download),
            content_type=stored_content_type(item.mime_type),
            expected_md5=item.checksum if item.checksum_kind == "md5" else None,
            size_hint_bytes=size or None,
            on_multipart_start=remember_upload,
            verify=verify,
        )
    except BaseException:
        if spool is not None:
            spool.abandon()
        raise
    finally:
        await download.aclose()
    if spool is not None:
        spool.commit()
    return stored
