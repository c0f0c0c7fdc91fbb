"""Listing: walk the source folder page by page into item rows, starting transfers as items appear.

A listing has an attempt budget (failures are counted by the worker) and beats while it runs, so the
sweeper can tell a dead listing from a slow one."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import asyncpg

from fotoowl.metrics import FILES
from fotoowl.pipeline.control import enqueue_transfers, fail_import, lanes
from fotoowl.pipeline.deps import Deps, folder_link
from fotoowl.pipeline.finalise import finalise
from fotoowl.pipeline.removal import prune_removed, record_removed
from fotoowl.resilience import is_redis_outage
from fotoowl.sources.base import Entry, FolderNotAccessible, Skipped, SourceConfigError
from fotoowl.statuses import ACTIVE

log = logging.getLogger("fotoowl.pipeline.listing")

FOLDER_NOT_ACCESSIBLE = "folder_not_accessible"
DRIVE_CONFIGURATION_ERROR = "drive_configuration_error"
LISTING_FAILED = "listing_failed"
LISTING_HEARTBEAT_S = 5.0

# --- listing --------------------------------------------------------------------------------------

# A file already stored from this source under the same id is unchanged, and not copied again, when
# everything the listing tells about it matches what was stored: its checksum, its modified time and
# its size (a keyless Drive listing tells none of them, so there the id alone decides).
_INSERT_ITEMS = """
WITH input AS (
    SELECT * FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[],
                         $8::text[], $9::text[], $10::int[], $11::int[], $12::text[], $13::text[], $14::text[],
                         $15::timestamptz[], $16::timestamptz[], $17::text[], $18::text[])
        AS t(file_id, locator, name, folder_path, mime_type, size_bytes, checksum, checksum_kind, width, height,
             taken_time, camera_make, camera_model, created, modified, skip_code, skip_message)
), ins AS (
    INSERT INTO import_items (import_id, file_id, resource_key, name, folder_path, mime_type, size_bytes,
                              md5, checksum, checksum_kind, width, height, taken_time, camera_make, camera_model,
                              drive_created_at, drive_modified_at, status, error_code, error_message)
    SELECT $1, i.file_id, i.locator, i.name, i.folder_path, i.mime_type, i.size_bytes,
           CASE WHEN i.checksum_kind = 'md5' THEN i.checksum END, i.checksum, i.checksum_kind,
           i.width, i.height, i.taken_time, i.camera_make, i.camera_model, i.created, i.modified,
           CASE WHEN i.skip_code IS NOT NULL THEN 'skipped' WHEN img.id IS NOT NULL THEN 'unchanged'
                ELSE 'pending' END,
           i.skip_code, i.skip_message
    FROM input i
    LEFT JOIN images img ON i.skip_code IS NULL AND img.source = $19 AND img.source_id = i.file_id
         AND (i.checksum IS NULL OR (img.checksum = i.checksum AND img.checksum_kind = i.checksum_kind))
         AND (i.modified IS NULL OR img.drive_modified_at IS NULL OR img.drive_modified_at = i.modified)
         AND (i.size_bytes = 0 OR img.size = i.size_bytes)
    ON CONFLICT (import_id, file_id) DO NOTHING
    RETURNING status, size_bytes
)
UPDATE imports SET
    found_count = found_count + (SELECT count(*) FROM ins),
    skipped_count = skipped_count + (SELECT count(*) FROM ins WHERE status = 'skipped'),
    unchanged_count = unchanged_count + (SELECT count(*) FROM ins WHERE status = 'unchanged'),
    bytes_found = bytes_found + (SELECT coalesce(sum(size_bytes), 0) FROM ins WHERE status = 'pending'),
    heartbeat_at = now(), updated_at = now()
WHERE id = $1
RETURNING (SELECT count(*) FROM ins WHERE status = 'pending') AS pending,
          status
"""


async def insert_items(
    pool: asyncpg.Pool, import_id: int, source: str, batch: Sequence[Entry | Skipped]
) -> tuple[int, str]:
    """Record one listed page; returns (new pending items, import status)."""
    cols: list[list[Any]] = [[] for _ in range(17)]
    for entry in batch:
        if isinstance(entry, Entry):
            values: tuple[Any, ...] = (
                entry.source_id,
                entry.locator,
                entry.name,
                entry.folder_path,
                entry.mime_type,
                entry.size_bytes or 0,
                entry.checksum,
                entry.checksum_kind,
                entry.width,
                entry.height,
                entry.taken_time,
                entry.camera_make,
                entry.camera_model,
                entry.created_at,
                entry.modified_at,
                None,
                None,
            )
        else:
            values = (
                entry.source_id,
                None,
                entry.name,
                entry.folder_path,
                entry.mime_type,
                0,
                None,
                None,
                None,
                None,
                None,
                None,
                None,
                None,
                None,
                entry.reason,
                entry.message,
            )
            FILES.labels("skipped", entry.reason).inc()
        for col, value in zip(cols, values, strict=True):
            col.append(pg_text(value) if isinstance(value, str) else value)
    row = await pool.fetchrow(_INSERT_ITEMS, import_id, *cols, source)
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
    """The listing job: stream the source's pages into item rows and start transfers as items appear."""
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
        await fail_import(deps.pool, deps.settings, import_id, LISTING_FAILED, message)
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
            await pool.execute(
                "UPDATE imports SET heartbeat_at = now() WHERE id = $1 AND status = 'listing'", import_id
            )
        except Exception as exc:  # a missed beat is harmless; the listing itself meets the outage
            log.debug("listing heartbeat failed: %s", type(exc).__name__)


async def record_list_failure(pool: asyncpg.Pool, import_id: int, code: str, message: str) -> int:
    """Count one failed listing attempt; returns the failures so far."""
    failures: int | None = await pool.fetchval(
        """UPDATE imports SET list_failures = list_failures + 1, list_error = $2, updated_at = now()
           WHERE id = $1 AND status IN ('queued', 'listing') RETURNING list_failures""",
        import_id,
        f"{message} ({code})"[:2000],
    )
    return failures or 0


def configuration_error_code(source: str) -> str:
    return DRIVE_CONFIGURATION_ERROR if source == "google_drive" else f"{source}_configuration_error"


async def _list(deps: Deps, import_id: int, row: asyncpg.Record) -> None:
    source = deps.source(row["source"], row["reader"])
    link = folder_link(source, row)
    extra = {"import_id": import_id}
    try:
        name = await source.folder_name(link)
    except FolderNotAccessible as exc:
        await fail_import(deps.pool, deps.settings, import_id, FOLDER_NOT_ACCESSIBLE, str(exc))
        return
    except SourceConfigError as exc:
        await fail_import(deps.pool, deps.settings, import_id, configuration_error_code(source.name), str(exc))
        return
    await deps.pool.execute("UPDATE imports SET folder_name = $2 WHERE id = $1", import_id, pg_text(name))
    log.info("listing started", extra={**extra, "folder_id": link.folder_id, "source": source.name})
    pages = 0
    async for batch in source.walk(link, recursive=row["recursive"]):
        pages += 1
        if not batch:
            continue
        pending, status = await insert_items(deps.pool, import_id, source.name, batch)
        if status not in ACTIVE:
            log.info("listing stopped: import is %s", status, extra=extra)
            return
        if pending:
            try:
                await enqueue_transfers(deps.redis, import_id, f"p{pages}", lanes(pending, deps.settings))
            except Exception as exc:
                if not is_redis_outage(exc):
                    raise
                # The items are recorded; the sweeper queues transfers for them once Redis is back.
                log.warning("could not queue transfers (Redis unavailable); the sweeper will", extra=extra)
    # The whole folder is listed: whatever an earlier import of it stored that it no longer has is gone
    # from the source (never decided on a partial listing, which ends above with an error instead).
    await record_removed(deps, import_id, prune=row["prune"])
    if row["prune"]:
        await prune_removed(deps, import_id)
    await deps.pool.execute(
        """UPDATE imports SET listed_at = now(), status = 'running', updated_at = now()
           WHERE id = $1 AND status = 'listing'""",
        import_id,
    )
    log.info("listing finished", extra={**extra, "pages": pages})
    await finalise(deps, import_id)
