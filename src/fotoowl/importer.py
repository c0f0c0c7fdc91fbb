"""The import pipeline: list a Drive folder into item rows, copy each file into storage, finalise.

Every step is safe to run twice (arq delivers at least once) and safe to die in the middle of:
items are claimed with a lease, object keys are derived from Drive ids, and an item becomes
`done` in the same transaction that writes its image row.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import mimetypes
import random
import re
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import asyncpg
from arq import ArqRedis
from botocore.exceptions import BotoCoreError, ClientError

from fotoowl.config import Settings
from fotoowl.drive import (
    DriveClient,
    DriveConfigError,
    DriveError,
    DriveFile,
    FolderNotAccessible,
    FolderRef,
    SkippedFile,
)
from fotoowl.liveness import Heartbeat, reclaim_from_the_dead
from fotoowl.metrics import BYTES_TRANSFERRED, FILES, TRANSFER_SECONDS
from fotoowl.resilience import OutageGate, is_db_outage, is_redis_outage, is_storage_outage, with_database
from fotoowl.storage import MIN_PART_SIZE_BYTES, ChecksumMismatch, Storage, StoredObject, part_size_for
from fotoowl.thumbnails import CONTENT_TYPE as THUMBNAIL_CONTENT_TYPE
from fotoowl.thumbnails import make_thumbnail

log = logging.getLogger("fotoowl.importer")

SOURCE = "google_drive"
ACTIVE = ("queued", "listing", "running")
FINISHED = ("completed", "completed_with_errors", "failed", "cancelled")
# Import error codes that mean the input or the configuration is unusable, not that the import broke.
FOLDER_NOT_ACCESSIBLE = "folder_not_accessible"
DRIVE_CONFIGURATION_ERROR = "drive_configuration_error"
LISTING_FAILED = "listing_failed"
LISTING_HEARTBEAT_S = 5.0
# A storage failure this soon after an outage belongs to it (the request began while storage was
# down and only gave up now, after botocore's own retries), even though storage answers again.
STORAGE_RECENT_OUTAGE_S = 120.0
# How long a hand-back on the way out may take before the leases are left to expire instead.
RELEASE_TIMEOUT_S = 10.0
_SAFE_ID = re.compile(r"^[A-Za-z0-9_-]{1,200}$")
_THUMBNAIL_MAX_SOURCE_BYTES = 64 * 1024 * 1024
# Stored objects carry their type only when it is an image type browsers render without running
# anything; whatever else Drive claims (SVG, HTML, junk) is stored as opaque bytes.
SAFE_CONTENT_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp", "image/avif", "image/bmp",
                                "image/tiff", "image/heic", "image/heif"})
# Where each process writes to find out whether storage takes writes again after an outage.
_PROBE_KEY = "_fotoowl/probe"


@dataclass
class Deps:
    """What the pipeline needs, owned by the process (worker start-up or the web app)."""

    settings: Settings
    pool: asyncpg.Pool
    redis: ArqRedis
    storage: Storage
    drive: DriveClient
    # Bounds files in flight for the whole process, across all jobs.
    semaphore: asyncio.Semaphore = field(init=False)
    # Bounds the items this process holds claimed, so it never sits on work another could be doing.
    claim_room: ClaimRoom = field(init=False)
    # Bounds the file bodies held in memory (in transfer or waiting for their thumbnail).
    transfer_memory: ByteBudget = field(init=False)
    # Previews are CPU work on their own thread(s), so they cannot take every core from the loop.
    thumbnail_executor: ThreadPoolExecutor = field(init=False)
    # Closed while storage is down: no new claims, and copies it failed go back without an attempt.
    storage_gate: OutageGate = field(init=False)
    # This process's beat: items it claims carry its id, so the sweeper can tell when it died.
    heartbeat: Heartbeat = field(init=False)

    def __post_init__(self) -> None:
        self.semaphore = asyncio.Semaphore(self.settings.files_in_flight)
        in_flight = self.settings.files_in_flight
        self.claim_room = ClaimRoom(in_flight + in_flight // 4, min_claim_items=max(1, in_flight // 2))
        self.thumbnail_executor = ThreadPoolExecutor(self.settings.thumbnail_threads,
                                                     thread_name_prefix="fotoowl-thumbnail")
        self.transfer_memory = ByteBudget(self.settings.transfer_memory_bytes)
        self.heartbeat = Heartbeat(self.pool, uuid.uuid4())
        probe_key = f"{self.settings.s3_prefix_normalised}{_PROBE_KEY}"
        self.storage_gate = OutageGate(
            "storage", lambda: self.storage.put_bytes(probe_key, b"ok", content_type="text/plain"))

    def close(self) -> None:
        self.thumbnail_executor.shutdown(wait=False, cancel_futures=True)
        self.storage_gate.cancel()


class ClaimRoom:
    """Room for claimed items in one process: its files in flight plus a quarter more waiting their
    turn (claims take a database round trip). A claim waits until there is room for a worthwhile
    batch and takes what room there is; each item gives its place back once its file is stored.
    Sized claims leave the rest of an import's items pending for other worker processes to claim."""

    def __init__(self, capacity_items: int, *, min_claim_items: int) -> None:
        self.capacity_items = capacity_items
        self.min_claim_items = max(1, min(min_claim_items, capacity_items))
        self.held_items = 0
        self._freed = asyncio.Event()

    async def reserve(self, most_items: int) -> int:
        """Wait for room, then hold up to `most_items` places; give back what the claim leaves unused."""
        while self.capacity_items - self.held_items < min(self.min_claim_items, most_items):
            self._freed.clear()
            await self._freed.wait()
        taken = min(most_items, self.capacity_items - self.held_items)
        self.held_items += taken
        return taken

    def give_back(self, items: int) -> None:
        self.held_items -= items
        self._freed.set()

    def place(self) -> Callable[[], None]:
        """For one reserved item: a function giving its place back, safe to call more than once."""
        given = False

        def give() -> None:
            nonlocal given
            if not given:
                given = True
                self.give_back(1)

        return give


class ByteBudget:
    """Admits holders while their bytes fit under a limit; a holder larger than the limit waits for
    the budget to empty and then takes all of it, so progress never deadlocks."""

    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self.used_bytes = 0
        self._changed = asyncio.Condition()

    async def acquire(self, size_bytes: int) -> int:
        size_bytes = min(max(size_bytes, 1), self.limit_bytes)
        async with self._changed:
            await self._changed.wait_for(lambda: self.used_bytes + size_bytes <= self.limit_bytes)
            self.used_bytes += size_bytes
        return size_bytes

    async def release(self, size_bytes: int) -> None:
        async with self._changed:
            self.used_bytes -= size_bytes
            self._changed.notify_all()


# --- keys ---------------------------------------------------------------------------------------

def object_key(settings: Settings, file_id: str, mime_type: str) -> str:
    """Derived from the Drive id, never from the file name: no traversal, no same-name collisions."""
    safe_id = file_id if _SAFE_ID.match(file_id) else uuid.uuid5(uuid.NAMESPACE_URL, file_id).hex
    # No extension for types stored as opaque bytes: S3 servers guess a Content-Type from it.
    ext = _extension(mime_type) if mime_type in SAFE_CONTENT_TYPES else ""
    return f"{settings.s3_prefix_normalised}{SOURCE}/{safe_id}{ext}"


def thumbnail_key(settings: Settings, file_id: str) -> str:
    safe_id = file_id if _SAFE_ID.match(file_id) else uuid.uuid5(uuid.NAMESPACE_URL, file_id).hex
    return f"{settings.s3_prefix_normalised}thumbnails/{SOURCE}/{safe_id}.jpg"


def _extension(mime_type: str) -> str:
    special = {"image/jpeg": ".jpg", "image/heic": ".heic", "image/heif": ".heif", "image/webp": ".webp"}
    ext = special.get(mime_type) or mimetypes.guess_extension(mime_type) or ""
    return ext if re.fullmatch(r"\.[a-z0-9]{1,8}", ext) else ""


# --- creating and controlling imports ------------------------------------------------------------

async def create_import(pool: asyncpg.Pool, redis: ArqRedis, ref: FolderRef, folder_url: str, *,
                        recursive: bool = True) -> asyncpg.Record:
    row = await pool.fetchrow(
        """INSERT INTO imports (folder_id, folder_url, resource_key, recursive)
           VALUES ($1, $2, $3, $4) RETURNING *""",
        ref.folder_id, folder_url, ref.resource_key, recursive,
    )
    assert row is not None
    try:
        await enqueue_listing(redis, row["id"], attempt=0)
    except Exception as exc:
        if not is_redis_outage(exc):
            raise
        # Recorded all the same: the sweeper queues a queued import whose job is missing.
        log.warning("could not queue the listing (Redis unavailable); the sweeper will",
                    extra={"import_id": row["id"]})
    return row


async def enqueue_listing(redis: ArqRedis, import_id: int, *, attempt: int) -> None:
    await redis.enqueue_job("list_import", import_id, _job_id=f"list:{import_id}:{attempt}")


async def enqueue_transfers(redis: ArqRedis, import_id: int, tag: str, count: int = 1) -> None:
    for n in range(count):
        await redis.enqueue_job("transfer_import", import_id, _job_id=f"transfer:{import_id}:{tag}:{n}")


async def cancel_import(pool: asyncpg.Pool, import_id: int) -> tuple[str | None, bool]:
    """Stop an import; returns (its status after the call or None if missing, whether this call stopped it).

    Running transfers notice within a second and abort their uploads.
    """
    async with pool.acquire() as conn, conn.transaction():
        status = await conn.fetchval("SELECT status FROM imports WHERE id = $1 FOR UPDATE", import_id)
        if status is None or status not in ACTIVE:
            return status, False
        await conn.execute(
            """UPDATE import_items SET status = 'cancelled', error_code = 'cancelled',
                      error_message = 'the import was cancelled', updated_at = now()
               WHERE import_id = $1 AND status = 'pending'""",
            import_id,
        )
        await conn.execute(
            """UPDATE imports SET status = 'cancelled', finished_at = now(), updated_at = now(),
                      error_code = 'cancelled', error_message = 'Cancelled by request.'
               WHERE id = $1""",
            import_id,
        )
    log.info("import cancelled", extra={"import_id": import_id})
    return "cancelled", True


async def retry_failed(pool: asyncpg.Pool, redis: ArqRedis, import_id: int, settings: Settings) -> int | None:
    """Put failed items back to pending and queue transfers; returns how many, None if no import."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow("SELECT status FROM imports WHERE id = $1 FOR UPDATE", import_id)
        if row is None:
            return None
        if row["status"] not in ("running", "completed_with_errors", "listing"):
            return 0
        count = await conn.fetchval(
            """WITH r AS (
                   UPDATE import_items SET status = 'pending', attempts = 0, not_before = NULL,
                          error_code = NULL, error_message = NULL, updated_at = now()
                   WHERE import_id = $1 AND status = 'failed' RETURNING 1)
               SELECT count(*) FROM r""",
            import_id,
        )
        if count:
            await conn.execute(
                """UPDATE imports SET failed_count = failed_count - $2, finished_at = NULL,
                          status = CASE WHEN status = 'listing' THEN 'listing' ELSE 'running' END,
                          updated_at = now()
                   WHERE id = $1""",
                import_id, count,
            )
    if count:
        try:
            await enqueue_transfers(redis, import_id, f"retry-{uuid.uuid4().hex[:8]}", _lanes(count, settings))
        except Exception as exc:
            if not is_redis_outage(exc):
                raise
            log.warning("could not queue the retry (Redis unavailable); the sweeper will",
                        extra={"import_id": import_id})
    return int(count)


def _lanes(pending: int, settings: Settings) -> int:
    """Transfer jobs to queue for `pending` new items. Each job claims until nothing is left, so more
    jobs only serve to give every worker process some (arq hands a process up to max_jobs at once)."""
    claim_items = max(1, settings.files_in_flight // 2)
    return max(1, min(16, -(-pending // claim_items)))


# --- listing --------------------------------------------------------------------------------------

_INSERT_ITEMS = """
WITH input AS (
    SELECT * FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[],
                         $8::text[], $9::int[], $10::int[], $11::text[], $12::text[], $13::text[],
                         $14::timestamptz[], $15::timestamptz[], $16::text[], $17::text[])
        AS t(file_id, resource_key, name, folder_path, mime_type, size_bytes, md5, width, height,
             taken_time, camera_make, camera_model, created, modified, skip_code, skip_message)
), ins AS (
    INSERT INTO import_items (import_id, file_id, resource_key, name, folder_path, mime_type, size_bytes,
                              md5, width, height, taken_time, camera_make, camera_model,
                              drive_created_at, drive_modified_at, status, error_code, error_message)
    SELECT $1, i.file_id, i.resource_key, i.name, i.folder_path, i.mime_type, i.size_bytes, i.md5,
           i.width, i.height, i.taken_time, i.camera_make, i.camera_model, i.created, i.modified,
           CASE WHEN i.skip_code IS NOT NULL OR (img.md5 IS NOT NULL AND img.md5 = i.md5)
                THEN 'skipped' ELSE 'pending' END,
           CASE WHEN i.skip_code IS NOT NULL THEN i.skip_code
                WHEN img.md5 IS NOT NULL AND img.md5 = i.md5 THEN 'already_imported' END,
           CASE WHEN i.skip_code IS NOT NULL THEN i.skip_message
                WHEN img.md5 IS NOT NULL AND img.md5 = i.md5
                THEN 'already imported with the same MD5 checksum' END
    FROM input i
    LEFT JOIN images img ON img.source = 'google_drive' AND img.google_drive_id = i.file_id
    ON CONFLICT (import_id, file_id) DO NOTHING
    RETURNING status, size_bytes
)
UPDATE imports SET
    found_count = found_count + (SELECT count(*) FROM ins),
    skipped_count = skipped_count + (SELECT count(*) FROM ins WHERE status = 'skipped'),
    bytes_found = bytes_found + (SELECT coalesce(sum(size_bytes), 0) FROM ins WHERE status = 'pending'),
    heartbeat_at = now(), updated_at = now()
WHERE id = $1
RETURNING (SELECT count(*) FROM ins WHERE status = 'pending') AS pending,
          (SELECT count(*) FROM ins WHERE status = 'skipped') AS skipped,
          status
"""


async def insert_items(pool: asyncpg.Pool, import_id: int,
                       batch: Sequence[DriveFile | SkippedFile]) -> tuple[int, str]:
    """Record one listed page; returns (new pending items, import status)."""
    cols: list[list[Any]] = [[] for _ in range(16)]
    for entry in batch:
        if isinstance(entry, DriveFile):
            values: tuple[Any, ...] = (
                entry.id, entry.resource_key, entry.name, entry.folder_path, entry.mime_type,
                entry.size_bytes, entry.md5, entry.width, entry.height, entry.taken_time, entry.camera_make,
                entry.camera_model, entry.created_time, entry.modified_time, None, None,
            )
        else:
            values = (entry.id, None, entry.name, entry.folder_path, entry.mime_type, 0, None, None, None,
                      None, None, None, None, None, entry.reason, entry.message)
            FILES.labels("skipped", entry.reason).inc()
        for col, value in zip(cols, values, strict=True):
            col.append(pg_text(value) if isinstance(value, str) else value)
    row = await pool.fetchrow(_INSERT_ITEMS, import_id, *cols)
    assert row is not None
    return int(row["pending"]), str(row["status"])


def pg_text(value: str) -> str:
    """Text PostgreSQL can store: a name may hold a NUL byte or a lone surrogate (from JSON escapes)."""
    if "\x00" in value:
        value = value.replace("\x00", "\ufffd")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = value.encode("utf-8", "replace").decode("utf-8")
    return value


async def list_import(deps: Deps, import_id: int) -> None:
    """The listing job: stream Drive pages into item rows and start transfers as items appear."""
    row = await deps.pool.fetchrow(
        """UPDATE imports SET status = 'listing', started_at = coalesce(started_at, now()),
                  heartbeat_at = now(), list_attempts = list_attempts + 1, updated_at = now()
           WHERE id = $1 AND status IN ('queued', 'listing') RETURNING *""",
        import_id,
    )
    if row is None:
        return  # cancelled, finished, or listed by an earlier delivery of this job
    if row["list_failures"] >= deps.settings.max_list_attempts:
        message = f"Listing the folder failed {row['list_failures']} times; the last error: {row['list_error']}"
        await fail_import(deps.pool, import_id, LISTING_FAILED, message)
        return
    beating = asyncio.create_task(_listing_heartbeat(deps.pool, import_id))
    try:
        await _list(deps, import_id, row)
    finally:
        beating.cancel()
        await asyncio.gather(beating, return_exceptions=True)


async def _listing_heartbeat(pool: asyncpg.Pool, import_id: int) -> None:
    """Shows the sweeper this listing is alive even while one Drive page takes long (retries, backoff)."""
    while True:
        await asyncio.sleep(LISTING_HEARTBEAT_S)
        try:
            await pool.execute("UPDATE imports SET heartbeat_at = now() WHERE id = $1 AND status = 'listing'",
                               import_id)
        except Exception as exc:  # a missed beat is harmless; the listing itself meets the outage
            log.debug("listing heartbeat failed: %s", type(exc).__name__)


async def record_list_failure(pool: asyncpg.Pool, import_id: int, code: str, message: str) -> int:
    """Count one failed listing attempt; returns the failures so far."""
    failures: int | None = await pool.fetchval(
        """UPDATE imports SET list_failures = list_failures + 1, list_error = $2, updated_at = now()
           WHERE id = $1 AND status IN ('queued', 'listing') RETURNING list_failures""",
        import_id, f"{message} ({code})"[:2000],
    )
    return failures or 0


async def _list(deps: Deps, import_id: int, row: asyncpg.Record) -> None:
    ref = FolderRef(row["folder_id"], row["resource_key"])
    extra = {"import_id": import_id}
    try:
        folder = await deps.drive.get_folder(ref)
    except FolderNotAccessible as exc:
        await fail_import(deps.pool, import_id, FOLDER_NOT_ACCESSIBLE, str(exc))
        return
    except DriveConfigError as exc:
        await fail_import(deps.pool, import_id, DRIVE_CONFIGURATION_ERROR, str(exc))
        return
    await deps.pool.execute("UPDATE imports SET folder_name = $2 WHERE id = $1", import_id,
                            str(folder.get("name") or ""))
    log.info("listing started", extra={**extra, "folder_id": ref.folder_id})
    pages = 0
    async for batch in deps.drive.walk(ref, recursive=row["recursive"]):
        pages += 1
        if not batch:
            continue
        pending, status = await insert_items(deps.pool, import_id, batch)
        if status not in ACTIVE:
            log.info("listing stopped: import is %s", status, extra=extra)
            return
        if pending:
            try:
                await enqueue_transfers(deps.redis, import_id, f"p{pages}", _lanes(pending, deps.settings))
            except Exception as exc:
                if not is_redis_outage(exc):
                    raise
                # The items are recorded; the sweeper queues transfers for them once Redis is back.
                log.warning("could not queue transfers (Redis unavailable); the sweeper will", extra=extra)
    await deps.pool.execute(
        """UPDATE imports SET listed_at = now(), status = 'running', updated_at = now()
           WHERE id = $1 AND status = 'listing'""",
        import_id,
    )
    log.info("listing finished", extra={**extra, "pages": pages})
    await finalise(deps, import_id)


async def fail_import(pool: asyncpg.Pool, import_id: int, code: str, message: str) -> None:
    await pool.execute(
        """UPDATE imports SET status = 'failed', error_code = $2, error_message = $3,
                  finished_at = now(), updated_at = now()
           WHERE id = $1 AND status IN ('queued', 'listing', 'running')""",
        import_id, code, message,
    )
    log.warning("import failed: %s", message, extra={"import_id": import_id, "code": code})


async def finalise(deps: Deps, import_id: int) -> str | None:
    """Close the import once listing is over and no item is left to move; safe to call any time."""
    status: str | None = await deps.pool.fetchval(
        """UPDATE imports SET status = CASE WHEN failed_count > 0 THEN 'completed_with_errors'
                                            ELSE 'completed' END,
                  finished_at = now(), updated_at = now()
           WHERE id = $1 AND status = 'running' AND listed_at IS NOT NULL
             AND NOT EXISTS (SELECT 1 FROM import_items
                             WHERE import_id = $1 AND status IN ('pending', 'in_progress'))
           RETURNING status""",
        import_id,
    )
    if status:
        log.info("import finished: %s", status, extra={"import_id": import_id})
        await abort_orphan_uploads(deps, import_id)
    return status


async def abort_orphan_uploads(deps: Deps, import_id: int) -> int:
    """Abort multipart uploads still open on this import's keys once nothing of it is in flight.

    A worker killed between creating an upload and recording its id leaves one nobody knows of.
    """
    rows = await deps.pool.fetch(
        # Not while another import of the same file has it in flight: that upload is alive.
        """SELECT file_id, mime_type FROM import_items i
           WHERE import_id = $1 AND size_bytes > $2
             AND NOT EXISTS (SELECT 1 FROM import_items o WHERE o.file_id = i.file_id AND o.status = 'in_progress')""",
        import_id, MIN_PART_SIZE_BYTES,
    )
    if not rows:
        return 0
    keys = {object_key(deps.settings, r["file_id"], r["mime_type"]) for r in rows}
    aborted = 0
    for upload in await deps.storage.open_uploads(f"{deps.settings.s3_prefix_normalised}{SOURCE}/"):
        if upload.key in keys:
            await deps.storage.abort_upload(upload.key, upload.upload_id)
            aborted += 1
    if aborted:
        log.warning("aborted %d orphaned multipart uploads", aborted, extra={"import_id": import_id})
    return aborted


# --- transfers ------------------------------------------------------------------------------------

_CLAIM = """
WITH held AS (
    SELECT id FROM import_items WHERE import_id = $1 AND lease_token = $3 AND status = 'in_progress'
), picked AS (
    SELECT id FROM import_items
    WHERE import_id = $1
      AND attempts < $5
      AND ((status = 'pending' AND (not_before IS NULL OR not_before <= now()))
           OR (status = 'in_progress' AND lease_expires_at < now()))
      AND EXISTS (SELECT 1 FROM imports WHERE id = $1 AND status IN ('listing', 'running'))
      AND NOT EXISTS (SELECT 1 FROM held)
    ORDER BY id
    LIMIT $2
    FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE import_items it SET status = 'in_progress', attempts = it.attempts + 1, lease_token = $3,
           lease_expires_at = now() + make_interval(secs => $4), worker_id = $6, updated_at = now()
    FROM picked WHERE it.id = picked.id
    RETURNING it.*
)
SELECT * FROM claimed
UNION ALL
SELECT it.* FROM import_items it JOIN held ON held.id = it.id
"""

# Items with their attempts spent that no failure was recorded for: each attempt ended with its worker
# gone mid-copy (killed, out of memory, timed out: the lease ran out) or its batch failing
# unexpectedly (handed back with the attempt spent), so the file itself is the likely cause.
_FAIL_EXHAUSTED = """
WITH lost AS (
    UPDATE import_items SET status = 'failed',
           error_code = CASE WHEN status = 'in_progress' THEN 'worker_lost' ELSE 'internal_error' END,
           error_message = 'Copying this file was interrupted ' || attempts || ' times ('
               || CASE WHEN status = 'in_progress' THEN 'its worker stopped or timed out mid-copy'
                       ELSE 'an unexpected error ended its batch' END
               || '); it is not tried again automatically.',
           lease_token = NULL, lease_expires_at = NULL, updated_at = now()
    WHERE import_id = $1 AND attempts >= $2
      AND ((status = 'in_progress' AND lease_expires_at < now()) OR status = 'pending')
    RETURNING upload_id, file_id, mime_type
), counted AS (
    UPDATE imports SET failed_count = failed_count + (SELECT count(*) FROM lost), updated_at = now()
    WHERE id = $1 AND EXISTS (SELECT 1 FROM lost)
)
SELECT * FROM lost
"""

_RECORD_DONE = """
WITH done AS (
    UPDATE import_items it SET status = 'done', lease_token = NULL, lease_expires_at = NULL,
           upload_id = NULL, error_code = NULL, error_message = NULL, updated_at = now()
    FROM staged_images s
    WHERE it.id = s.item_id AND it.status = 'in_progress' AND it.lease_token = s.lease_token
    RETURNING it.*
), written AS (
    INSERT INTO images (source, google_drive_id, name, size, mime_type, storage_path, storage_key,
                        thumbnail_key, md5, width, height, taken_time, camera_make, camera_model,
                        folder_path, drive_created_at, drive_modified_at, import_id, imported_at)
    SELECT 'google_drive', d.file_id, d.name, s.size_bytes, d.mime_type, s.storage_path, s.storage_key,
           s.thumbnail_key, s.md5, coalesce(d.width, s.width), coalesce(d.height, s.height), d.taken_time,
           d.camera_make, d.camera_model, d.folder_path, d.drive_created_at, d.drive_modified_at,
           d.import_id, now()
    FROM done d JOIN staged_images s ON s.item_id = d.id
    ON CONFLICT (source, google_drive_id) DO UPDATE SET
        name = EXCLUDED.name, size = EXCLUDED.size, mime_type = EXCLUDED.mime_type,
        storage_path = EXCLUDED.storage_path, storage_key = EXCLUDED.storage_key,
        thumbnail_key = EXCLUDED.thumbnail_key, md5 = EXCLUDED.md5, width = EXCLUDED.width,
        height = EXCLUDED.height, taken_time = EXCLUDED.taken_time, camera_make = EXCLUDED.camera_make,
        camera_model = EXCLUDED.camera_model, folder_path = EXCLUDED.folder_path,
        drive_created_at = EXCLUDED.drive_created_at, drive_modified_at = EXCLUDED.drive_modified_at,
        import_id = EXCLUDED.import_id, imported_at = EXCLUDED.imported_at
    RETURNING 1
)
UPDATE imports SET imported_count = imported_count + (SELECT count(*) FROM done),
       bytes_imported = bytes_imported + (SELECT coalesce(sum(s.size_bytes), 0)
                                          FROM done d JOIN staged_images s ON s.item_id = d.id),
       updated_at = now()
WHERE id = $1
RETURNING (SELECT count(*) FROM written) AS written
"""

async def fail_exhausted(deps: Deps, import_id: int) -> int:
    """Fail the items no attempt is left for after their worker vanished; returns how many."""
    rows = await deps.pool.fetch(_FAIL_EXHAUSTED, import_id, deps.settings.max_attempts)
    for row in rows:
        FILES.labels("failed", "worker_lost").inc()
        if row["upload_id"]:
            await deps.storage.abort_upload(object_key(deps.settings, row["file_id"], row["mime_type"]),
                                            row["upload_id"])
    if rows:
        log.warning("%d items failed: their workers stopped mid-copy too often", len(rows),
                    extra={"import_id": import_id})
    return len(rows)


_STAGED_COLUMNS = ("item_id", "lease_token", "storage_key", "storage_path", "thumbnail_key", "md5",
                   "size_bytes", "width", "height")


@dataclass(frozen=True, slots=True)
class Copied:
    item_id: int
    storage_key: str
    storage_path: str
    thumbnail_key: str | None
    md5: str
    size_bytes: int
    width: int | None
    height: int | None


@dataclass(frozen=True, slots=True)
class CopyFailed:
    item_id: int
    code: str
    message: str
    transient: bool


@dataclass(frozen=True, slots=True)
class CopyPaused:
    """Our own storage or database failed the copy: the item goes back without spending an attempt."""

    item_id: int
    reason: str


async def record_done(pool: asyncpg.Pool, import_id: int, lease_token: uuid.UUID,
                      copied: Sequence[Copied]) -> int:
    """Write image rows with COPY and mark their items done, in one transaction."""
    if not copied:
        return 0
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            """CREATE TEMP TABLE staged_images (
                   item_id bigint, lease_token uuid, storage_key text, storage_path text,
                   thumbnail_key text, md5 text, size_bytes bigint, width int, height int
               ) ON COMMIT DROP"""
        )
        await conn.copy_records_to_table(
            "staged_images", columns=_STAGED_COLUMNS,
            records=[(c.item_id, lease_token, c.storage_key, c.storage_path, c.thumbnail_key, c.md5,
                      c.size_bytes, c.width, c.height) for c in copied],
        )
        written: int = await conn.fetchval(_RECORD_DONE, import_id)
    return written


async def record_failure(pool: asyncpg.Pool, import_id: int, lease_token: uuid.UUID, failure: CopyFailed,
                         settings: Settings, attempts: int) -> str | None:
    """A transient failure goes back to pending after a backoff until attempts run out."""
    # Exponential with jitter, so files that failed together do not all come back together.
    backoff_s = min(300.0, settings.retry_backoff_s * 2 ** max(0, attempts - 1)) * random.uniform(0.5, 1.5)
    max_attempts = settings.max_attempts
    status: str | None = await pool.fetchval(
        """WITH f AS (
               UPDATE import_items SET
                   status = CASE WHEN $4 AND attempts < $5 THEN 'pending' ELSE 'failed' END,
                   not_before = now() + make_interval(secs => $6),
                   error_code = $7, error_message = $8, lease_token = NULL, lease_expires_at = NULL,
                   upload_id = NULL, updated_at = now()
               WHERE id = $2 AND lease_token = $3 AND status = 'in_progress'
               RETURNING status)
           UPDATE imports SET failed_count = failed_count + (SELECT count(*) FROM f WHERE status = 'failed'),
                  updated_at = now()
           WHERE id = $1
           RETURNING (SELECT status FROM f)""",
        import_id, failure.item_id, lease_token, failure.transient, max_attempts, backoff_s, failure.code,
        failure.message,
    )
    if status == "failed":
        FILES.labels("failed", failure.code).inc()
    return status


async def release(pool: asyncpg.Pool, lease_token: uuid.UUID, item_ids: Sequence[int], status: str, *,
                  attempt_spent: bool = False) -> None:
    """Hand items back ('pending') or close them ('cancelled').

    A hand-back gives the claim's attempt back unless `attempt_spent`: shutdowns and outages of our
    own services are not the file's fault; an unexpected error in its batch may be.
    """
    if not item_ids:
        return
    await pool.execute(
        """UPDATE import_items SET status = $3, lease_token = NULL, lease_expires_at = NULL,
                  upload_id = NULL, attempts = CASE WHEN $3 = 'pending' AND NOT $4 THEN greatest(attempts - 1, 0)
                                                    ELSE attempts END,
                  updated_at = now()
           WHERE id = ANY($1::bigint[]) AND lease_token = $2 AND status = 'in_progress'""",
        list(item_ids), lease_token, status, attempt_spent,
    )


class ImportCancelled(Exception):
    pass


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
            items: list[asyncpg.Record] = []
            try:
                items = await with_database(deps.pool, lambda: _claim(deps, import_id, token, room))  # noqa: B023
            finally:
                deps.claim_room.give_back(room - len(items))
            if items:
                log.info("batch claimed", extra={"import_id": import_id, "items": len(items)})
                places = [deps.claim_room.place() for _ in items]
                task = asyncio.create_task(_transfer_batch(deps, import_id, token, items, places))
                # However the batch ends, cancelled before it ever ran included, its places come back.
                task.add_done_callback(_giving_back(places))
                batches[task] = _Batch(token, [item["id"] for item in items])
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


async def _claim(deps: Deps, import_id: int, token: uuid.UUID, limit: int) -> list[asyncpg.Record]:
    claim = asyncio.ensure_future(
        deps.pool.fetch(_CLAIM, import_id, limit, token, float(deps.settings.lease_s), deps.settings.max_attempts,
                        deps.heartbeat.worker_id))
    try:
        return await asyncio.shield(claim)
    except asyncio.CancelledError:
        # Shutdown landed mid-claim: the rows are ours in the database, so hand them straight back.
        with contextlib.suppress(Exception):
            items = await claim
            await release(deps.pool, token, [item["id"] for item in items], "pending")
        raise


async def _transfer_batch(deps: Deps, import_id: int, token: uuid.UUID, items: Sequence[asyncpg.Record],
                          places: Sequence[Callable[[], None]]) -> int:
    settings = deps.settings
    pool = deps.pool
    pending_results: list[Copied] = []
    unfinished = {item["id"] for item in items}
    attempts = {item["id"]: item["attempts"] for item in items}
    tasks: dict[asyncio.Task[Copied | CopyFailed | CopyPaused], int] = {}
    for item, give_place in zip(items, places, strict=True):
        # A place is free for the next claim once the file is stored (its preview is bounded by
        # memory, not by places), or however else its copy ends.
        task = asyncio.create_task(_copy_item(deps, item, token, give_place))
        task.add_done_callback(_giving_back([give_place]))
        tasks[task] = item["id"]
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
                await with_database(pool, lambda: release(pool, token, [result.item_id], "pending"))  # noqa: B023
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
        await _release_bounded(deps, token, [item["id"] for item in items],
                               attempt_spent=not isinstance(exc, asyncio.CancelledError))
        raise
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
    if unfinished:
        # Cancelled import: in-flight copies were aborted; close their items.
        await asyncio.gather(*tasks, return_exceptions=True)
        await with_database(pool, lambda: release(pool, token, list(unfinished), "cancelled"))
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
            if status == "cancelled":
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


async def _copy_item(deps: Deps, item: asyncpg.Record, token: uuid.UUID,
                     on_stored: Callable[[], None]) -> Copied | CopyFailed | CopyPaused:
    extra = {"import_id": item["import_id"], "file_id": item["file_id"]}
    started = time.monotonic()
    outcome: CopyFailed | CopyPaused
    try:
        copied = await _copy(deps, item, token, on_stored)
    except DriveError as exc:
        outcome = CopyFailed(item["id"], exc.reason or f"http_{exc.status}", str(exc), exc.transient)
    except ChecksumMismatch as exc:
        outcome = CopyFailed(item["id"], "md5_mismatch", str(exc), transient=True)
    except (ClientError, BotoCoreError) as exc:
        if is_storage_outage(exc) and await deps.storage_gate.confirm_outage(recent_s=STORAGE_RECENT_OUTAGE_S):
            outcome = CopyPaused(item["id"], f"storage unavailable: {type(exc).__name__}")
        else:
            outcome = CopyFailed(item["id"], "storage_error", f"storage: {exc}", transient=True)
    except (aiohttp.ClientError, TimeoutError, ConnectionError) as exc:
        outcome = CopyFailed(item["id"], "network_error", f"{type(exc).__name__}: {exc}", transient=True)
    except SizeMismatch as exc:
        outcome = CopyFailed(item["id"], "size_mismatch", str(exc), transient=True)
    except Exception as exc:
        if is_db_outage(exc):
            outcome = CopyPaused(item["id"], f"database unavailable: {type(exc).__name__}")
        else:
            # A defect or a case nobody foresaw: the file fails with the reason once its attempts
            # are spent, instead of taking its whole batch down.
            log.exception("copy failed unexpectedly", extra=extra)
            outcome = CopyFailed(item["id"], "internal_error", f"unexpected error: {type(exc).__name__}: {exc}",
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


async def _copy(deps: Deps, item: asyncpg.Record, token: uuid.UUID, on_stored: Callable[[], None]) -> Copied:
    settings = deps.settings
    key = object_key(settings, item["file_id"], item["mime_type"])
    size = int(item["size_bytes"])
    wants_thumbnail = settings.thumbnail_px > 0 and 0 < size <= _THUMBNAIL_MAX_SOURCE_BYTES
    part_size = part_size_for(size, settings.part_size_bytes)
    # What this file can hold in memory: its body twice if it goes up in one request (the chunks and
    # their join), else two parts. Kept through the thumbnail, which reads that body.
    memory_bytes = 2 * min(size, part_size)
    await deps.semaphore.acquire()
    try:
        # Slot first, then memory; a holder of memory alone (making a thumbnail) never waits for a
        # slot, so the two limits cannot deadlock.
        held_bytes = await deps.transfer_memory.acquire(memory_bytes)
        try:
            stored = await _upload(deps, item, token, key, size)
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
            thumb_key, width, height = await _thumbnail(deps, item, key, stored)
    finally:
        await deps.transfer_memory.release(held_bytes)
    return Copied(item["id"], key, stored.storage_path, thumb_key, stored.md5_hex, stored.size_bytes,
                  width, height)


async def _upload(deps: Deps, item: asyncpg.Record, token: uuid.UUID, key: str, size: int) -> StoredObject:
    storage = deps.storage
    if item["upload_id"]:
        # A worker died mid-upload on this item: close what it left open.
        await storage.abort_upload(key, item["upload_id"])

    async def remember_upload(upload_id: str) -> None:
        await with_database(deps.pool, lambda: deps.pool.execute(
            "UPDATE import_items SET upload_id = $2 WHERE id = $1 AND lease_token = $3", item["id"], upload_id, token))

    download = deps.drive.download(item["file_id"], resource_key=item["resource_key"],
                                   chunk_size_bytes=deps.settings.chunk_size_bytes, expected_size_bytes=size,
                                   compute_md5=False)
    try:
        stored = await storage.upload(key, download, content_type=stored_content_type(item["mime_type"]),
                                      expected_md5=item["md5"], size_hint_bytes=size or None,
                                      on_multipart_start=remember_upload)
    finally:
        await download.aclose()
    if size and stored.size_bytes != size:
        raise SizeMismatch(f"Drive says {size} bytes, received {stored.size_bytes}")
    return stored


def stored_content_type(mime_type: str) -> str:
    return mime_type if mime_type in SAFE_CONTENT_TYPES else "application/octet-stream"


async def _thumbnail(deps: Deps, item: asyncpg.Record, key: str,
                     stored: StoredObject) -> tuple[str | None, int | None, int | None]:
    """A preview from the body still in memory, or read back when it went up in parts; never fatal."""
    settings = deps.settings
    loop = asyncio.get_running_loop()
    try:
        if stored.body is not None:
            thumb = await loop.run_in_executor(deps.thumbnail_executor, make_thumbnail, stored.body,
                                               settings.thumbnail_px)
        else:
            with tempfile.SpooledTemporaryFile(max_size=settings.part_size_bytes) as spool:
                async for chunk in deps.storage.stream(key):
                    spool.write(chunk)
                spool.seek(0)
                thumb = await loop.run_in_executor(deps.thumbnail_executor, make_thumbnail, spool,
                                                   settings.thumbnail_px)
        if thumb is None:
            return None, None, None
        tkey = thumbnail_key(settings, item["file_id"])
        await deps.storage.put_bytes(tkey, thumb.data, content_type=THUMBNAIL_CONTENT_TYPE)
    except (ClientError, BotoCoreError, OSError) as exc:
        # The original is safely stored; a missing preview shows as a placeholder.
        log.warning("thumbnail failed: %s", exc, extra={"file_id": item["file_id"]})
        return None, None, None
    return tkey, thumb.width, thumb.height


# --- the sweeper ----------------------------------------------------------------------------------

# An active import records progress every second or so (see _transfer_batch).
STALLED_AFTER_S = 15.0
# The listing heartbeat comes every LISTING_HEARTBEAT_S; this many seconds without one means its worker died.
LISTING_STALE_AFTER_S = 60.0
QUEUED_STALE_AFTER_S = 30.0


async def sweep(deps: Deps) -> None:
    """Periodic repair: restart dead listings, requeue reclaimable items, finalise, clean up."""
    settings = deps.settings
    # A listing beats every few seconds while it runs; a queued import whose job was lost (Redis lost
    # its data) is queued again under the same job id, which arq ignores while the job still exists.
    stale_listings = await deps.pool.fetch(
        """SELECT id, list_attempts, status FROM imports
           WHERE (status = 'listing' AND heartbeat_at < now() - make_interval(secs => $1))
              OR (status = 'queued' AND created_at < now() - make_interval(secs => $2))""",
        LISTING_STALE_AFTER_S, QUEUED_STALE_AFTER_S,
    )
    await reclaim_from_the_dead(deps.heartbeat)
    for row in stale_listings:
        if row["status"] == "listing":
            log.warning("listing heartbeat is stale; restarting it", extra={"import_id": row["id"]})
        await enqueue_listing(deps.redis, row["id"], attempt=row["list_attempts"])
    # Only imports that made no progress for a while: while jobs are recording copies, pending
    # items are simply waiting for room, and more jobs would only queue up behind them.
    reclaimable = await deps.pool.fetch(
        """SELECT import_id, count(*) AS n FROM import_items it
           WHERE it.status IN ('pending', 'in_progress')
             AND ((it.status = 'pending' AND (it.not_before IS NULL OR it.not_before <= now()))
                  OR (it.status = 'in_progress' AND it.lease_expires_at < now()))
             AND it.import_id IN (SELECT id FROM imports WHERE status IN ('listing', 'running')
                                  AND updated_at < now() - make_interval(secs => $1))
           GROUP BY import_id""",
        min(STALLED_AFTER_S, float(settings.lease_s)),
    )
    tick = int(time.time() // 5)
    for row in reclaimable:
        await enqueue_transfers(deps.redis, row["import_id"], f"sweep{tick}", _lanes(row["n"], settings))
    for row in await deps.pool.fetch("SELECT id FROM imports WHERE status IN ('listing', 'running')"):
        await fail_exhausted(deps, row["id"])
        await finalise(deps, row["id"])
    await _close_abandoned(deps)


async def _close_abandoned(deps: Deps) -> None:
    """Items of cancelled imports left in progress by a dead worker, and their open uploads."""
    rows = await deps.pool.fetch(
        """WITH stale AS (
               SELECT it.id, it.file_id, it.mime_type, it.upload_id FROM import_items it
               JOIN imports i ON i.id = it.import_id
               WHERE i.status = 'cancelled' AND it.status = 'in_progress' AND it.lease_expires_at < now()
               FOR UPDATE OF it SKIP LOCKED)
           UPDATE import_items it SET status = 'cancelled', lease_token = NULL, lease_expires_at = NULL,
                  upload_id = NULL, updated_at = now()
           FROM stale WHERE it.id = stale.id
           RETURNING stale.file_id, stale.mime_type, stale.upload_id"""
    )
    for row in rows:
        if row["upload_id"]:
            await deps.storage.abort_upload(object_key(deps.settings, row["file_id"], row["mime_type"]),
                                            row["upload_id"])
