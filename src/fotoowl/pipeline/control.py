"""Creating and controlling imports: create, queue, cancel, retry, fail."""

from __future__ import annotations

import logging
import uuid

import asyncpg
from arq import ArqRedis

from fotoowl.config import AppSettings
from fotoowl.pipeline import outbox
from fotoowl.resilience import is_redis_outage
from fotoowl.sources.base import FolderLink
from fotoowl.statuses import ACTIVE, RETRYABLE

log = logging.getLogger("fotoowl.pipeline.control")


async def create_import(
    pool: asyncpg.Pool,
    redis: ArqRedis,
    link: FolderLink,
    *,
    recursive: bool = True,
    reader: str | None = None,
    prune: bool = False,
    callback_url: str | None = None,
    watch_id: int | None = None,
) -> asyncpg.Record:
    """`reader`: how a Drive folder is read ("api", "public_page"); None for other sources, and "api"
    for Drive when not given. An import of a folder imported before is a sync (listing.py)."""
    if link.source == "google_drive" and reader is None:
        reader = "api"
    row = await pool.fetchrow(
        """INSERT INTO imports (source, folder_id, folder_url, resource_key, link_password, recursive, reader,
                                prune, callback_url, watch_id)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING *""",
        link.source,
        link.folder_id,
        link.url,
        link.key,
        link.password,
        recursive,
        reader,
        prune,
        callback_url,
        watch_id,
    )
    assert row is not None
    try:
        await enqueue_listing(redis, row["id"], attempt=0)
    except Exception as exc:
        if not is_redis_outage(exc):
            raise
        # Recorded all the same: the sweeper queues a queued import whose job is missing.
        log.warning("could not queue the listing (Redis unavailable); the sweeper will", extra={"import_id": row["id"]})
    return row


async def enqueue_listing(redis: ArqRedis, import_id: int, *, attempt: int) -> None:
    await redis.enqueue_job("list_import", import_id, _job_id=f"list:{import_id}:{attempt}")


async def enqueue_deletion(redis: ArqRedis, import_id: int, tag: str) -> None:
    await redis.enqueue_job("delete_import", import_id, _job_id=f"delete:{import_id}:{tag}")


async def enqueue_transfers(redis: ArqRedis, import_id: int, tag: str, count: int = 1) -> None:
    for n in range(count):
        await redis.enqueue_job("transfer_import", import_id, _job_id=f"transfer:{import_id}:{tag}:{n}")


async def cancel_import(pool: asyncpg.Pool, settings: AppSettings, import_id: int) -> tuple[str | None, bool]:
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
        await outbox.announce_finished(conn, settings, import_id)
    log.info("import cancelled", extra={"import_id": import_id})
    return "cancelled", True


async def retry_failed(pool: asyncpg.Pool, redis: ArqRedis, import_id: int, settings: AppSettings) -> int | None:
    """Put failed items back to pending and queue transfers; returns how many, None if no import."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow("SELECT status FROM imports WHERE id = $1 FOR UPDATE", import_id)
        if row is None:
            return None
        if row["status"] not in RETRYABLE:
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
                import_id,
                count,
            )
    if count:
        try:
            await enqueue_transfers(redis, import_id, f"retry-{uuid.uuid4().hex[:8]}", lanes(count, settings))
        except Exception as exc:
            if not is_redis_outage(exc):
                raise
            log.warning(
                "could not queue the retry (Redis unavailable); the sweeper will", extra={"import_id": import_id}
            )
    return int(count)


def lanes(pending: int, settings: AppSettings) -> int:
    """Transfer jobs to queue for `pending` new items. Each job claims until nothing is left, so more
    jobs only serve to give every worker process some (arq hands a process up to max_jobs at once)."""
    claim_items = max(1, settings.files_in_flight // 2)
    return max(1, min(16, -(-pending // claim_items)))


async def fail_import(pool: asyncpg.Pool, settings: AppSettings, import_id: int, code: str, message: str) -> None:
    async with pool.acquire() as conn, conn.transaction():
        failed = await conn.fetchval(
            """UPDATE imports SET status = 'failed', error_code = $2, error_message = $3,
                      finished_at = now(), updated_at = now()
               WHERE id = $1 AND status IN ('queued', 'listing', 'running') RETURNING true""",
            import_id,
            code,
            message,
        )
        if failed:
            await outbox.announce_finished(conn, settings, import_id)
    log.warning("import failed: %s", message, extra={"import_id": import_id, "code": code})
