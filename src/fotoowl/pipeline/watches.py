"""Watches: folders kept in step. A cron job finds the watches that are due and queues a check of
each; a check lists the folder and, when anything changed since the last sync started, starts a sync
import. A watch's lease (`checking_until`) keeps two workers from checking it at once; a folder that
stops being readable makes its watch back off (doubling, up to a ceiling) and say why."""

from __future__ import annotations

import hashlib
import logging
import time

import aiohttp
import asyncpg
from arq import ArqRedis

from fotoowl.pipeline.control import create_import
from fotoowl.pipeline.deps import Deps, folder_link
from fotoowl.resilience import is_db_outage, is_redis_outage
from fotoowl.sources.base import Entry, FolderNotAccessible, Source, SourceConfigError, SourceError
from fotoowl.statuses import ACTIVE, ImportStatus

log = logging.getLogger("fotoowl.pipeline.watches")

# A check lists the whole folder; its lease outlasts that, and a check whose worker died is retried
# once it runs out.
CHECK_LEASE_S = 600.0
DUE_PER_ROUND = 100
# A sync that ended like this is tried again at the next check even when the folder did not change.
RESYNC_AFTER = frozenset({ImportStatus.FAILED, ImportStatus.CANCELLED})


async def queue_due_checks(pool: asyncpg.Pool, redis: ArqRedis) -> int:
    """Lease the watches that are due and queue a check of each; returns how many."""
    rows = await pool.fetch(
        """UPDATE watches SET checking_until = now() + make_interval(secs => $1), updated_at = now()
           WHERE id IN (SELECT id FROM watches
                        WHERE NOT paused AND next_check_at <= now()
                          AND (checking_until IS NULL OR checking_until < now())
                        ORDER BY next_check_at LIMIT $2 FOR UPDATE SKIP LOCKED)
           RETURNING id""",
        CHECK_LEASE_S,
        DUE_PER_ROUND,
    )
    stamp = int(time.time() * 1000)
    for row in rows:
        try:
            await redis.enqueue_job("check_watch", row["id"], _job_id=f"watch:{row['id']}:{stamp}")
        except Exception as exc:
            if not is_redis_outage(exc):
                raise
            await pool.execute("UPDATE watches SET checking_until = NULL WHERE id = $1", row["id"])
            log.warning("could not queue a watch check (Redis unavailable); the next round will")
            return 0
    return len(rows)


async def folder_fingerprint(source: Source, row: asyncpg.Record) -> tuple[str, int]:
    """A digest of everything a sync looks at (ids, checksums, modified times, sizes, names, places),
    and the number of entries: equal digests, nothing to sync."""
    link = folder_link(source, row)
    await source.folder_name(link)  # raises FolderNotAccessible for an unshared or missing folder
    lines: list[str] = []
    async for batch in source.walk(link, recursive=row["recursive"]):
        for entry in batch:
            if isinstance(entry, Entry):
                modified = entry.modified_at.isoformat() if entry.modified_at else ""
                lines.append(
                    f"{entry.source_id}\t{entry.checksum or ''}\t{modified}\t{entry.size_bytes or ''}\t"
                    f"{entry.folder_path}\t{entry.name}"
                )
            else:
                lines.append(f"{entry.source_id}\tskipped\t{entry.reason}")
    lines.sort()
    digest = hashlib.sha256()
    for line in lines:
        digest.update(line.encode("utf-8", "replace") + b"\n")
    return digest.hexdigest(), len(lines)


async def check_watch(deps: Deps, watch_id: int) -> str | None:
    """List the watched folder and start a sync if anything changed; returns what the check found
    (`unchanged`, `sync_started`, `sync_running`, `error`), None for a watch that is gone or paused."""
    pool = deps.pool
    row = await pool.fetchrow("SELECT * FROM watches WHERE id = $1", watch_id)
    if row is None:
        return None
    if row["paused"]:
        await pool.execute("UPDATE watches SET checking_until = NULL WHERE id = $1", watch_id)
        return None
    last_status = None
    if row["last_import_id"] is not None:
        last_status = await pool.fetchval("SELECT status FROM imports WHERE id = $1", row["last_import_id"])
    if last_status in ACTIVE:
        # The last sync is still going: this check waits for the next round rather than pile up.
        await _done(pool, watch_id, "sync_running")
        return "sync_running"
    try:
        source = deps.source(row["source"], row["reader"])
        fingerprint, entries = await folder_fingerprint(source, row)
    except Exception as exc:
        if is_db_outage(exc) or is_redis_outage(exc):
            raise
        code, message = _problem(exc)
        await _failed(deps, row, code, message)
        return "error"
    if fingerprint == row["fingerprint"] and last_status not in RESYNC_AFTER:
        await _done(pool, watch_id, "unchanged")
        return "unchanged"
    link = folder_link(source, row)
    imp = await create_import(
        pool,
        deps.redis,
        link,
        recursive=row["recursive"],
        reader=row["reader"],
        prune=row["prune"],
        callback_url=row["callback_url"],
        watch_id=watch_id,
    )
    await pool.execute(
        """UPDATE watches SET fingerprint = $2, last_sync_at = now(), last_import_id = $3 WHERE id = $1""",
        watch_id,
        fingerprint,
        imp["id"],
    )
    log.info(
        "watched folder changed: sync started", extra={"watch_id": watch_id, "import_id": imp["id"], "entries": entries}
    )
    await _done(pool, watch_id, "sync_started")
    return "sync_started"


def _problem(exc: Exception) -> tuple[str, str]:
    if isinstance(exc, FolderNotAccessible):
        return "folder_not_accessible", str(exc)
    if isinstance(exc, SourceConfigError):
        return exc.reason or "source_configuration_error", str(exc)
    if isinstance(exc, SourceError):
        return exc.reason or f"http_{exc.status}", str(exc)
    if isinstance(exc, aiohttp.ClientError | TimeoutError | ConnectionError):
        return "network_error", f"{type(exc).__name__}: {exc}"
    log.error("checking a watch failed unexpectedly", exc_info=exc)
    return "internal_error", f"unexpected error: {type(exc).__name__}: {exc}"


async def _done(pool: asyncpg.Pool, watch_id: int, result: str) -> None:
    await pool.execute(
        """UPDATE watches SET last_result = $2, last_checked_at = now(), failures = 0, error_code = NULL,
                  error_message = NULL, checking_until = NULL, updated_at = now(),
                  next_check_at = now() + make_interval(secs => interval_s)
           WHERE id = $1""",
        watch_id,
        result,
    )


async def _failed(deps: Deps, row: asyncpg.Record, code: str, message: str) -> None:
    """Each failure in a row doubles the wait before the next check, up to the ceiling."""
    failures = row["failures"] + 1
    wait_s = min(float(deps.settings.watch_max_backoff_s), row["interval_s"] * 2.0 ** min(failures, 30))
    await deps.pool.execute(
        """UPDATE watches SET last_result = 'error', last_checked_at = now(), failures = $2, error_code = $3,
                  error_message = $4, checking_until = NULL, updated_at = now(),
                  next_check_at = now() + make_interval(secs => $5)
           WHERE id = $1""",
        row["id"],
        failures,
        code,
        message[:2000],
        wait_s,
    )
    log.warning(
        "watch check failed (%d in a row); next check in %.0f s: %s",
        failures,
        wait_s,
        message,
        extra={"watch_id": row["id"], "code": code},
    )
