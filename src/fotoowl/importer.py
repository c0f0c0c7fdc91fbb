"""The import pipeline: list a Drive folder into item rows, copy each file into storage, finalise.

Every step is safe to run twice (arq delivers at least once) and safe to die in the middle of:
items are claimed with a lease, object keys are derived from Drive ids, and an item becomes
`done` in the same transaction that writes its image row.
"""

from __future__ import annotations

import asyncio
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
from fotoowl.metrics import BYTES_TRANSFERRED, FILES, TRANSFER_SECONDS
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
_SAFE_ID = re.compile(r"^[A-Za-z0-9_-]{1,200}$")
_THUMBNAIL_MAX_SOURCE_BYTES = 64 * 1024 * 1024


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

    def __post_init__(self) -> None:
        self.semaphore = asyncio.Semaphore(self.settings.files_in_flight)
        in_flight = self.settings.files_in_flight
        self.claim_room = ClaimRoom(in_flight + in_flight // 4, min_claim_items=max(1, in_flight // 2))
        self.thumbnail_executor = ThreadPoolExecutor(self.settings.thumbnail_threads,
                                                     thread_name_prefix="fotoowl-thumbnail")
        self.transfer_memory = ByteBudget(self.settings.transfer_memory_bytes)

    def close(self) -> None:
        self.thumbnail_executor.shutdown(wait=False, cancel_futures=True)


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
    ext = _extension(mime_type)
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
    await enqueue_listing(redis, row["id"], attempt=0)
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
        await enqueue_transfers(redis, import_id, f"retry-{uuid.uuid4().hex[:8]}", _lanes(count, settings))
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
            col.append(value)
    row = await pool.fetchrow(_INSERT_ITEMS, import_id, *cols)
    assert row is not None
    return int(row["pending"]), str(row["status"])


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
            await enqueue_transfers(deps.redis, import_id, f"p{pages}",
                                    _lanes(pending, deps.settings))
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
WITH picked AS (
    SELECT id FROM import_items
    WHERE import_id = $1
      AND ((status = 'pending' AND (not_before IS NULL OR not_before <= now()))
           OR (status = 'in_progress' AND lease_expires_at < now()))
      AND EXISTS (SELECT 1 FROM imports WHERE id = $1 AND status IN ('listing', 'running'))
    ORDER BY id
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
UPDATE import_items it SET status = 'in_progress', attempts = it.attempts + 1, lease_token = $3,
       lease_expires_at = now() + make_interval(secs => $4), updated_at = now()
FROM picked WHERE it.id = picked.id
RETURNING it.*
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


async def release(pool: asyncpg.Pool, lease_token: uuid.UUID, item_ids: Sequence[int], status: str) -> None:
    """Hand items back (shutdown: 'pending') or close them (cancel: 'cancelled')."""
    if not item_ids:
        return
    await pool.execute(
        """UPDATE import_items SET status = $3, lease_token = NULL, lease_expires_at = NULL,
                  upload_id = NULL, attempts = CASE WHEN $3 = 'pending' THEN greatest(attempts - 1, 0)
                                                    ELSE attempts END,
                  updated_at = now()
           WHERE id = ANY($1::bigint[]) AND lease_token = $2 AND status = 'in_progress'""",
        list(item_ids), lease_token, status,
    )


class ImportCancelled(Exception):
    pass


async def transfer_import(deps: Deps, import_id: int) -> int:
    """The transfer job: claim batches of items and copy them until none is left to claim.

    A new batch is claimed as soon as the process has room for it, while earlier batches are still
    finishing: a batch's slowest file never leaves the others' places idle.
    """
    moved = 0
    batches: set[asyncio.Task[int]] = set()
    # Hand over to a fresh job well before arq's job timeout, which would fail this one for good.
    deadline = time.monotonic() + deps.settings.job_timeout_s / 2

    async def harvest(wait: bool) -> None:
        nonlocal moved
        if wait and batches:
            await asyncio.wait(batches, return_when=asyncio.FIRST_COMPLETED)
        for batch in [b for b in batches if b.done()]:
            batches.discard(batch)
            moved += batch.result()

    try:
        while True:
            await harvest(wait=False)
            if time.monotonic() > deadline:
                await asyncio.gather(*batches)
                await harvest(wait=False)
                await enqueue_transfers(deps.redis, import_id, f"cont-{uuid.uuid4().hex[:8]}")
                return moved
            token = uuid.uuid4()
            room = await deps.claim_room.reserve(deps.settings.batch_size)
            items: list[asyncpg.Record] = []
            try:
                items = await _claim(deps, import_id, token, room)
            finally:
                deps.claim_room.give_back(room - len(items))
            if items:
                log.info("batch claimed", extra={"import_id": import_id, "items": len(items)})
                batches.add(asyncio.create_task(_transfer_batch(deps, import_id, token, items)))
                continue
            if batches:
                # Nothing to claim now; a batch that ends may hand items back for a retry.
                await harvest(wait=True)
                continue
            # Items waiting out a retry backoff: wait here if it is short, else leave them to the sweeper.
            wait_s = await deps.pool.fetchval(
                """SELECT extract(epoch FROM min(not_before) - now()) FROM import_items
                   WHERE import_id = $1 AND status = 'pending'""",
                import_id,
            )
            if wait_s is not None and wait_s < 30:
                await asyncio.sleep(max(0.05, float(wait_s)))
                continue
            break
    finally:
        # Cancelled (shutdown) or failed: each batch hands its unfinished items back itself.
        for batch in batches:
            batch.cancel()
        await asyncio.gather(*batches, return_exceptions=True)
    await finalise(deps, import_id)
    return moved


async def _claim(deps: Deps, import_id: int, token: uuid.UUID, limit: int) -> list[asyncpg.Record]:
    claim = asyncio.ensure_future(
        deps.pool.fetch(_CLAIM, import_id, limit, token, float(deps.settings.lease_s)))
    try:
        return await asyncio.shield(claim)
    except asyncio.CancelledError:
        # Shutdown landed mid-claim: the rows are ours in the database, so hand them straight back.
        items = await claim
        await release(deps.pool, token, [item["id"] for item in items], "pending")
        raise


async def _transfer_batch(deps: Deps, import_id: int, token: uuid.UUID,
                          items: Sequence[asyncpg.Record]) -> int:
    settings = deps.settings
    pending_results: list[Copied] = []
    unfinished = {item["id"] for item in items}
    attempts = {item["id"]: item["attempts"] for item in items}
    tasks: dict[asyncio.Task[Copied | CopyFailed], int] = {}
    for item in items:
        # A place is free for the next claim once the file is stored (its preview is bounded by
        # memory, not by places), or however else its copy ends.
        give_place = deps.claim_room.place()
        task = asyncio.create_task(_copy_item(deps, item, token, give_place))
        task.add_done_callback(_ignoring_task(give_place))
        tasks[task] = item["id"]
    watcher = asyncio.create_task(_watch(deps, import_id, token, set(tasks)))
    flush_at = time.monotonic() + 1.0
    moved = 0
    try:
        for next_done in asyncio.as_completed(list(tasks)):
            try:
                result = await next_done
            except asyncio.CancelledError:
                if watcher.done() and not watcher.cancelled() and isinstance(watcher.exception(),
                                                                                ImportCancelled):
                    break
                raise
            if isinstance(result, Copied):
                pending_results.append(result)
                unfinished.discard(result.item_id)
            else:
                unfinished.discard(result.item_id)
                await record_failure(deps.pool, import_id, token, result, settings, attempts[result.item_id])
            if len(pending_results) >= 50 or time.monotonic() >= flush_at:
                moved += await record_done(deps.pool, import_id, token, pending_results)
                pending_results.clear()
                flush_at = time.monotonic() + 1.0
        moved += await record_done(deps.pool, import_id, token, pending_results)
        pending_results.clear()
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # Whatever was copied is kept; the rest goes back for another worker (or stays cancelled).
        await asyncio.shield(record_done(deps.pool, import_id, token, pending_results))
        await asyncio.shield(release(deps.pool, token, list(unfinished), "pending"))
        raise
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
    if unfinished:
        # Cancelled import: in-flight copies were aborted; close their items.
        await asyncio.gather(*tasks, return_exceptions=True)
        await release(deps.pool, token, list(unfinished), "cancelled")
    return moved


def _ignoring_task(call: Callable[[], None]) -> Callable[[asyncio.Task[Any]], None]:
    return lambda _task: call()


async def _watch(deps: Deps, import_id: int, token: uuid.UUID, tasks: set[asyncio.Task[Any]]) -> None:
    """Renew the batch's lease, and abort its copies when the import is cancelled."""
    renew_every_s = max(1.0, deps.settings.lease_s / 3)
    renewed_at = time.monotonic()
    while True:
        await asyncio.sleep(1.0)
        status = await deps.pool.fetchval("SELECT status FROM imports WHERE id = $1", import_id)
        if status == "cancelled":
            for task in tasks:
                task.cancel()
            raise ImportCancelled(import_id)
        if time.monotonic() - renewed_at >= renew_every_s:
            await deps.pool.execute(
                """UPDATE import_items SET lease_expires_at = now() + make_interval(secs => $2)
                   WHERE lease_token = $1 AND status = 'in_progress'""",
                token, float(deps.settings.lease_s),
            )
            renewed_at = time.monotonic()


async def _copy_item(deps: Deps, item: asyncpg.Record, token: uuid.UUID,
                     on_stored: Callable[[], None]) -> Copied | CopyFailed:
    extra = {"import_id": item["import_id"], "file_id": item["file_id"]}
    started = time.monotonic()
    try:
        copied = await _copy(deps, item, token, on_stored)
    except DriveError as exc:
        outcome = CopyFailed(item["id"], exc.reason or f"http_{exc.status}", str(exc), exc.transient)
    except ChecksumMismatch as exc:
        outcome = CopyFailed(item["id"], "md5_mismatch", str(exc), transient=True)
    except (ClientError, BotoCoreError) as exc:
        outcome = CopyFailed(item["id"], "storage_error", f"storage: {exc}", transient=True)
    except (aiohttp.ClientError, TimeoutError, ConnectionError) as exc:
        outcome = CopyFailed(item["id"], "network_error", f"{type(exc).__name__}: {exc}", transient=True)
    except SizeMismatch as exc:
        outcome = CopyFailed(item["id"], "size_mismatch", str(exc), transient=True)
    else:
        TRANSFER_SECONDS.observe(time.monotonic() - started)
        BYTES_TRANSFERRED.inc(copied.size_bytes)
        FILES.labels("imported", "").inc()
        log.debug("file copied", extra={**extra, "bytes": copied.size_bytes})
        return copied
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
        await deps.pool.execute("UPDATE import_items SET upload_id = $2 WHERE id = $1 AND lease_token = $3",
                                item["id"], upload_id, token)

    download = deps.drive.download(item["file_id"], resource_key=item["resource_key"],
                                   chunk_size_bytes=deps.settings.chunk_size_bytes, expected_size_bytes=size,
                                   compute_md5=False)
    try:
        stored = await storage.upload(key, download, content_type=item["mime_type"],
                                      expected_md5=item["md5"], size_hint_bytes=size or None,
                                      on_multipart_start=remember_upload)
    finally:
        await download.aclose()
    if size and stored.size_bytes != size:
        raise SizeMismatch(f"Drive says {size} bytes, received {stored.size_bytes}")
    return stored


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


async def sweep(deps: Deps) -> None:
    """Periodic repair: restart dead listings, requeue reclaimable items, finalise, clean up."""
    settings = deps.settings
    stale_listings = await deps.pool.fetch(
        """SELECT id, list_attempts FROM imports
           WHERE status = 'listing' AND heartbeat_at < now() - make_interval(secs => $1)""",
        float(settings.lease_s),
    )
    for row in stale_listings:
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
    for row in await deps.pool.fetch("SELECT id FROM imports WHERE status = 'running'"):
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
