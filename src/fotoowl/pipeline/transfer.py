"""Transfers: claim batches of items and copy each file's bytes from the source into storage.

Outages of our own storage or database pause the claims and hand the files back without spending an
attempt; an unexpected error fails the file, never its batch or the job."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from botocore.exceptions import BotoCoreError, ClientError

from fotoowl.metrics import BYTES_TRANSFERRED, FILES, TRANSFER_SECONDS
from fotoowl.pipeline.claims import (
    ClaimedItem,
    Copied,
    CopyFailed,
    CopyPaused,
    claim,
    fail_exhausted,
    record_done,
    record_failure,
    release,
)
from fotoowl.pipeline.control import enqueue_transfers
from fotoowl.pipeline.deps import Deps, folder_link
from fotoowl.pipeline.finalise import finalise
from fotoowl.pipeline.keys import object_key, stored_content_type
from fotoowl.pipeline.previews import PREVIEW_MAX_SOURCE_BYTES, make_preview
from fotoowl.resilience import is_db_outage, is_storage_outage, with_database
from fotoowl.sources.base import FolderLink, Source, SourceError
from fotoowl.sources.checksums import checksum_hasher, hashing
from fotoowl.statuses import ImportStatus, ItemStatus
from fotoowl.storage import ChecksumMismatch, StoredObject, part_size_for

log = logging.getLogger("fotoowl.pipeline.transfer")

# A storage failure this soon after an outage belongs to it (the request began while storage was
# down and only gave up now, after botocore's own retries), even though storage answers again.
STORAGE_RECENT_OUTAGE_S = 120.0
# How long a hand-back on the way out may take before the leases are left to expire instead.
RELEASE_TIMEOUT_S = 10.0

class ImportCancelled(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Origin:
    """Where an import's files come from: its source and the folder's link as that source reads it."""

    source: Source
    link: FolderLink


@dataclass
class _Batch:
    """One claim in flight: what to hand back however its task ends."""

    token: uuid.UUID
    item_ids: list[int]


async def transfer_import(deps: Deps, import_id: int) -> int:
    """The transfer job: claim batches of items and copy them until none is left to claim.

    A new batch is claimed as soon as the process has room for it, while earlier batches are still
    finishing: a batch's slowest file never leaves the others' places idle. Outages of storage or the
    database pause the claims and resume them; they never end the job.
    """
    row = await with_database(deps.pool, lambda: deps.pool.fetchrow(
        "SELECT source, reader, folder_url, link_password FROM imports WHERE id = $1", import_id))
    if row is None:
        return 0
    source = deps.source(row["source"], row["reader"])
    origin = Origin(source, folder_link(source, row))
    moved = 0
    batches: dict[asyncio.Task[int], _Batch] = {}
    # Hand over to a fresh job well before arq's job timeout, which would fail this one for good.
    deadline = time.monotonic() + deps.settings.job_timeout_s / 2

    async def harvest(wait: bool) -> None:
        nonlocal moved
        if wait and batches:
            await asyncio.wait(batches, return_when=asyncio.FIRST_COMPLETED)
        for task in [t for t in batches if t.done()]:
            batch = batches.pop(task)
            if task.cancelled():
                continue
            if (exc := task.exception()) is not None:
                # Nobody foresaw this one: the batch handed its items back with the attempt spent, so
                # the attempt budget ends a file that keeps causing it; the job goes on.
                log.error("a transfer batch failed: %s", exc, exc_info=exc,
                          extra={"import_id": import_id, "items": len(batch.item_ids)})
                continue
            moved += task.result()

    try:
        while True:
            await harvest(wait=False)
            if time.monotonic() > deadline:
                await asyncio.wait(batches)
                await harvest(wait=False)
                await enqueue_transfers(deps.redis, import_id, f"cont-{uuid.uuid4().hex[:8]}")
                return moved
            if not await deps.storage_gate.wait_until_up(max(1.0, deadline - time.monotonic())):
                continue
            token = uuid.uuid4()
            room = await deps.claim_room.reserve(deps.settings.batch_size)
            items: list[ClaimedItem] = []
            try:
                items = await with_database(deps.pool, lambda: _claim(deps, import_id, token, room))  # noqa: B023
            finally:
                deps.claim_room.give_back(room - len(items))
            if items:
                log.info("batch claimed", extra={"import_id": import_id, "items": len(items)})
                places = [deps.claim_room.place() for _ in items]
                task = asyncio.create_task(_transfer_batch(deps, origin, import_id, token, items, places))
                # However the batch ends, cancelled before it ever ran included, its places come back.
                task.add_done_callback(_giving_back(places))
                batches[task] = _Batch(token, [item.id for item in items])
                continue
            if batches:
                # Nothing to claim now; a batch that ends may hand items back for a retry.
                await harvest(wait=True)
                continue
            # Items waiting out a retry backoff: wait here if it is short, else leave them to the sweeper.
            wait_s = await with_database(deps.pool, lambda: deps.pool.fetchval(
                """SELECT extract(epoch FROM min(not_before) - now()) FROM import_items
                   WHERE import_id = $1 AND status = 'pending'""",
                import_id,
            ))
            if wait_s is not None and wait_s < 30:
                await asyncio.sleep(max(0.05, float(wait_s)))
                continue
            break
    finally:
        # Cancelled (shutdown) or done: each batch hands its unfinished items back itself, and a batch
        # cancelled before it ever ran is handed back here (a release touches only items it still holds).
        for task in batches:
            task.cancel()
        await asyncio.gather(*batches, return_exceptions=True)
        for batch in batches.values():
            await _release_bounded(deps, batch.token, batch.item_ids)
    await with_database(deps.pool, lambda: fail_exhausted(deps, import_id))
    await with_database(deps.pool, lambda: finalise(deps, import_id))
    return moved


def _giving_back(places: Sequence[Callable[[], None]]) -> Callable[[asyncio.Task[Any]], None]:
    def give_back(_task: asyncio.Task[Any]) -> None:
        for give in places:
            give()

    return give_back


async def _release_bounded(deps: Deps, token: uuid.UUID, item_ids: Sequence[int], *,
                           attempt_spent: bool = False) -> None:
    """A hand-back on the way out that cannot hold a shutdown up: if the database is down too, the
    items' leases expire and they are claimed again then."""
    try:
        await asyncio.wait_for(asyncio.shield(
            release(deps.pool, token, item_ids, "pending", attempt_spent=attempt_spent)), RELEASE_TIMEOUT_S)
    except Exception as exc:
        log.warning("could not hand %d items back (%s); their leases will expire", len(item_ids),
                    type(exc).__name__)


async def _claim(deps: Deps, import_id: int, token: uuid.UUID, limit: int) -> list[ClaimedItem]:
    claiming = asyncio.ensure_future(
        claim(deps.pool, import_id, token, limit, lease_s=float(deps.settings.lease_s),
              max_attempts=deps.settings.max_attempts, worker_id=deps.heartbeat.worker_id))
    try:
        return await asyncio.shield(claiming)
    except asyncio.CancelledError:
        # Shutdown landed mid-claim: the rows are ours in the database, so hand them straight back.
        with contextlib.suppress(Exception):
            items = await claiming
            await release(deps.pool, token, [item.id for item in items], ItemStatus.PENDING)
        raise


async def _transfer_batch(deps: Deps, origin: Origin, import_id: int, token: uuid.UUID, items: Sequence[ClaimedItem],
                          places: Sequence[Callable[[], None]]) -> int:
    settings = deps.settings
    pool = deps.pool
    pending_results: list[Copied] = []
    unfinished = {item.id for item in items}
    attempts = {item.id: item.attempts for item in items}
    tasks: dict[asyncio.Task[Copied | CopyFailed | CopyPaused], int] = {}
    for item, give_place in zip(items, places, strict=True):
        # A place is free for the next claim once the file is stored (its preview is bounded by
        # memory, not by places), or however else its copy ends.
        task = asyncio.create_task(_copy_item(deps, origin, item, token, give_place))
        task.add_done_callback(_giving_back([give_place]))
        tasks[task] = item.id
    watcher = asyncio.create_task(_watch(deps, import_id, token, set(tasks)))
    flush_at = time.monotonic() + 1.0
    moved = 0

    async def flush() -> int:
        done = list(pending_results)
        pending_results.clear()
        try:
            return await with_database(pool, lambda: record_done(pool, import_id, token, done))
        except Exception as exc:
            # One row the database refuses must not cost the others theirs: record one by one.
            log.error("recording %d copies failed (%s); recording them one by one", len(done), exc,
                      extra={"import_id": import_id})
        moved = 0
        for copied in done:
            try:
                moved += await with_database(pool, lambda: record_done(pool, import_id, token, [copied]))  # noqa: B023
            except Exception as exc:
                failure = CopyFailed(copied.item_id, "internal_error",
                                     f"recording the image failed: {type(exc).__name__}: {exc}", transient=True)
                await with_database(pool, lambda: record_failure(
                    pool, import_id, token, failure, settings, attempts[copied.item_id]))  # noqa: B023
        return moved

    try:
        for next_done in asyncio.as_completed(list(tasks)):
            try:
                result = await next_done
            except asyncio.CancelledError:
                if watcher.done() and not watcher.cancelled() and isinstance(watcher.exception(),
                                                                                ImportCancelled):
                    break
                raise
            unfinished.discard(result.item_id)
            if isinstance(result, Copied):
                pending_results.append(result)
            elif isinstance(result, CopyPaused):
                await with_database(pool, lambda: release(pool, token, [result.item_id], ItemStatus.PENDING))  # noqa: B023
            else:
                await with_database(pool, lambda: record_failure(
                    pool, import_id, token, result, settings, attempts[result.item_id]))  # noqa: B023
            if len(pending_results) >= 50 or time.monotonic() >= flush_at:
                moved += await flush()
                flush_at = time.monotonic() + 1.0
        moved += await flush()
    except BaseException as exc:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # Whatever was copied is kept; the rest goes back for another worker (or stays cancelled).
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(record_done(pool, import_id, token, pending_results)),
                                   RELEASE_TIMEOUT_S)
        # Every item of the claim: those recorded are no longer held and stay as they are.
        await _release_bounded(deps, token, [item.id for item in items],
                               attempt_spent=not isinstance(exc, asyncio.CancelledError))
        raise
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
    if unfinished:
        # Cancelled import: in-flight copies were aborted; close their items.
        await asyncio.gather(*tasks, return_exceptions=True)
        await with_database(pool, lambda: release(pool, token, list(unfinished), ItemStatus.CANCELLED))
    return moved


async def _watch(deps: Deps, import_id: int, token: uuid.UUID, tasks: set[asyncio.Task[Any]]) -> None:
    """Renew the batch's lease, and abort its copies when the import is cancelled.

    A failed round (the database is down) is logged and tried again a second later: the lease is a
    few minutes long, so renewals that resume after an outage keep the batch's items its own.
    """
    renew_every_s = max(1.0, deps.settings.lease_s / 3)
    renewed_at = time.monotonic()
    while True:
        await asyncio.sleep(1.0)
        try:
            status = await deps.pool.fetchval("SELECT status FROM imports WHERE id = $1", import_id)
            if status == ImportStatus.CANCELLED:
                for task in tasks:
                    task.cancel()
                raise ImportCancelled(import_id)
            if time.monotonic() - renewed_at >= renew_every_s:
                await deps.pool.execute(
                    """UPDATE import_items SET lease_expires_at = now() + make_interval(secs => $2)
                       WHERE import_id = $3 AND lease_token = $1 AND status = 'in_progress'""",
                    token, float(deps.settings.lease_s), import_id,
                )
                renewed_at = time.monotonic()
        except ImportCancelled:
            raise
        except Exception as exc:
            log.warning("lease renewal failed (%s); trying again", type(exc).__name__,
                        extra={"import_id": import_id})


async def _copy_item(deps: Deps, origin: Origin, item: ClaimedItem, token: uuid.UUID,
                     on_stored: Callable[[], None]) -> Copied | CopyFailed | CopyPaused:
    extra = {"import_id": item.import_id, "file_id": item.file_id}
    started = time.monotonic()
    outcome: CopyFailed | CopyPaused
    try:
        copied = await _copy(deps, origin, item, token, on_stored)
    except SourceError as exc:
        outcome = CopyFailed(item.id, exc.reason or f"http_{exc.status}", str(exc), exc.transient)
    except ChecksumMismatch as exc:
        outcome = CopyFailed(item.id, "md5_mismatch", str(exc), transient=True)
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
            outcome = CopyFailed(item.id, "internal_error", f"unexpected error: {type(exc).__name__}: {exc}",
                                 transient=True)
    else:
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


async def _copy(deps: Deps, origin: Origin, item: ClaimedItem, token: uuid.UUID,
                on_stored: Callable[[], None]) -> Copied:
    settings = deps.settings
    key = object_key(settings, origin.source.name, item.file_id, item.mime_type)
    # 0: the source did not say (a keyless Drive listing); the bytes themselves tell, as they stream.
    size = int(item.size_bytes)
    wants_thumbnail = settings.thumbnail_px > 0 and size <= PREVIEW_MAX_SOURCE_BYTES
    part_size = part_size_for(size, settings.part_size_bytes)
    # What this file can hold in memory: its body twice if it goes up in one request (the chunks and
    # their join), else two parts. Kept through the thumbnail, which reads that body.
    memory_bytes = 2 * (min(size, part_size) if size else part_size)
    await deps.semaphore.acquire()
    try:
        # Slot first, then memory; a holder of memory alone (making a thumbnail) never waits for a
        # slot, so the two limits cannot deadlock.
        held_bytes = await deps.transfer_memory.acquire(memory_bytes)
        try:
            stored = await _upload(deps, origin, item, token, key, size)
        except BaseException:
            await deps.transfer_memory.release(held_bytes)
            raise
    finally:
        # The slot goes back before the thumbnail: previews never hold up transfers, only memory can.
        deps.semaphore.release()
    on_stored()
    thumb_key = width = height = None
    try:
        if wants_thumbnail:
            thumb_key, width, height = await make_preview(deps, origin.source.name, item, key, stored)
    finally:
        await deps.transfer_memory.release(held_bytes)
    return Copied(item.id, key, stored.storage_path, thumb_key, stored.md5_hex, stored.size_bytes,
                  width, height)


async def _upload(deps: Deps, origin: Origin, item: ClaimedItem, token: uuid.UUID, key: str, size: int) -> StoredObject:
    storage = deps.storage
    if item.upload_id:
        # A worker died mid-upload on this item: close what it left open.
        await storage.abort_upload(key, item.upload_id)

    async def remember_upload(upload_id: str) -> None:
        await with_database(deps.pool, lambda: deps.pool.execute(
            "UPDATE import_items SET upload_id = $2 WHERE id = $1 AND lease_token = $3", item.id, upload_id, token))

    download = origin.source.open(origin.link, item.file_id, locator=item.resource_key,
                                  expected_size_bytes=size or None, chunk_size_bytes=deps.settings.chunk_size_bytes)
    # Storage checks an MD5 itself as the bytes go up; another kind of checksum is computed here.
    checker = checksum_hasher(item.checksum_kind) if item.checksum and item.checksum_kind != "md5" else None
    try:
        stored = await storage.upload(key, hashing(download, checker) if checker else download,
                                      content_type=stored_content_type(item.mime_type),
                                      expected_md5=item.checksum if item.checksum_kind == "md5" else None,
                                      size_hint_bytes=size or None, on_multipart_start=remember_upload)
    finally:
        await download.aclose()
    if size and stored.size_bytes != size:
        raise SizeMismatch(f"{origin.source.name} says {size} bytes, received {stored.size_bytes}")
    if checker is not None and item.checksum and checker.hexdigest() != item.checksum:
        raise ChecksumMismatch(item.checksum, checker.hexdigest())
    return stored


