"""The ledger: every SQL statement on import items, each returning dataclasses.

An item is claimed with a lease (a token and an expiry); every write checks the token, so a write
repeated after a lost answer, or by a worker whose lease was taken over, changes nothing."""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from fotoowl.config import AppSettings
from fotoowl.metrics import FILES
from fotoowl.pipeline import outbox
from fotoowl.pipeline.deps import Deps
from fotoowl.pipeline.keys import object_key
from fotoowl.statuses import ItemStatus

log = logging.getLogger("fotoowl.pipeline.claims")

# --- transfers ------------------------------------------------------------------------------------

CLAIM = """
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
    RETURNING upload_id, file_id, mime_type, (SELECT source FROM imports WHERE id = $1) AS source
), counted AS (
    UPDATE imports SET failed_count = failed_count + (SELECT count(*) FROM lost), updated_at = now()
    WHERE id = $1 AND EXISTS (SELECT 1 FROM lost)
)
SELECT * FROM lost
"""

_RECORD_DONE = """
WITH done AS (
    UPDATE import_items it SET status = 'done', lease_token = NULL, lease_expires_at = NULL,
           upload_id = NULL, error_code = NULL, error_message = NULL, deduplicated_from = s.deduplicated_from,
           updated_at = now()
    FROM staged_images s
    WHERE it.id = s.item_id AND it.status = 'in_progress' AND it.lease_token = s.lease_token
    RETURNING it.*
), origin AS (
    SELECT source FROM imports WHERE id = $1
), written AS (
    -- The source's own checksum when it lists one, else the MD5 computed as the bytes went up.
    INSERT INTO images (source, source_id, google_drive_id, name, size, mime_type, storage_path, storage_key,
                        thumbnail_key, md5, checksum, checksum_kind, width, height, taken_time, camera_make,
                        camera_model, folder_path, drive_created_at, drive_modified_at, import_id, imported_at,
                        preview_status)
    SELECT o.source, d.file_id, CASE WHEN o.source = 'google_drive' THEN d.file_id END, d.name, s.size_bytes,
           d.mime_type, s.storage_path, s.storage_key, s.thumbnail_key, s.md5,
           coalesce(d.checksum, s.md5), CASE WHEN d.checksum IS NOT NULL THEN d.checksum_kind ELSE 'md5' END,
           coalesce(d.width, s.width), coalesce(d.height, s.height), d.taken_time,
           d.camera_make, d.camera_model, d.folder_path, d.drive_created_at, d.drive_modified_at,
           d.import_id, now(), CASE WHEN s.thumbnail_key IS NULL THEN 'pending' ELSE 'done' END
    FROM done d JOIN staged_images s ON s.item_id = d.id CROSS JOIN origin o
    ON CONFLICT (source, source_id) DO UPDATE SET
        name = EXCLUDED.name, size = EXCLUDED.size, mime_type = EXCLUDED.mime_type,
        storage_path = EXCLUDED.storage_path, storage_key = EXCLUDED.storage_key,
        thumbnail_key = EXCLUDED.thumbnail_key, md5 = EXCLUDED.md5, checksum = EXCLUDED.checksum,
        checksum_kind = EXCLUDED.checksum_kind, width = EXCLUDED.width,
        height = EXCLUDED.height, taken_time = EXCLUDED.taken_time, camera_make = EXCLUDED.camera_make,
        camera_model = EXCLUDED.camera_model, folder_path = EXCLUDED.folder_path,
        drive_created_at = EXCLUDED.drive_created_at, drive_modified_at = EXCLUDED.drive_modified_at,
        import_id = EXCLUDED.import_id, imported_at = EXCLUDED.imported_at,
        -- New bytes, a new preview: a preview lane still making the old one no longer holds it.
        preview_status = EXCLUDED.preview_status, preview_reason = NULL, preview_attempts = 0,
        preview_lease_token = NULL, preview_lease_expires_at = NULL
    RETURNING id
)
UPDATE imports SET imported_count = imported_count + (SELECT count(*) FROM done WHERE deduplicated_from IS NULL),
       deduplicated_count = deduplicated_count + (SELECT count(*) FROM done WHERE deduplicated_from IS NOT NULL),
       bytes_imported = bytes_imported + (SELECT coalesce(sum(s.size_bytes), 0)
                                          FROM done d JOIN staged_images s ON s.item_id = d.id),
       updated_at = now()
WHERE id = $1
RETURNING (SELECT array_agg(id ORDER BY id) FROM written) AS image_ids
"""


async def fail_exhausted(deps: Deps, import_id: int) -> int:
    """Fail the items no attempt is left for after their worker vanished; returns how many."""
    rows = await deps.pool.fetch(_FAIL_EXHAUSTED, import_id, deps.settings.max_attempts)
    for row in rows:
        FILES.labels("failed", "worker_lost").inc()
        if row["upload_id"]:
            await deps.storage.abort_upload(
                object_key(deps.settings, row["source"], row["file_id"], row["mime_type"]), row["upload_id"]
            )
    if rows:
        log.warning(
            "%d items failed: their workers stopped mid-copy too often", len(rows), extra={"import_id": import_id}
        )
    return len(rows)


_STAGED_COLUMNS = (
    "item_id",
    "lease_token",
    "storage_key",
    "storage_path",
    "thumbnail_key",
    "md5",
    "size_bytes",
    "width",
    "height",
    "deduplicated_from",
)


@dataclass(frozen=True, slots=True)
class ClaimedItem:
    """A claimed item, as the transfer needs it."""

    id: int
    import_id: int
    file_id: str
    resource_key: str | None
    name: str
    mime_type: str
    size_bytes: int
    checksum: str | None
    checksum_kind: str | None
    attempts: int
    upload_id: str | None

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> ClaimedItem:
        return cls(
            id=row["id"],
            import_id=row["import_id"],
            file_id=row["file_id"],
            resource_key=row["resource_key"],
            name=row["name"],
            mime_type=row["mime_type"],
            size_bytes=int(row["size_bytes"]),
            checksum=row["checksum"],
            checksum_kind=row["checksum_kind"],
            attempts=row["attempts"],
            upload_id=row["upload_id"],
        )


async def claim(
    pool: asyncpg.Pool,
    import_id: int,
    token: uuid.UUID,
    limit: int,
    *,
    lease_s: float,
    max_attempts: int,
    worker_id: uuid.UUID,
) -> list[ClaimedItem]:
    """Up to `limit` claimable items under a new lease, or, asked again with the same token (its
    answer was lost to an outage), the items that token already holds."""
    rows = await pool.fetch(CLAIM, import_id, limit, token, lease_s, max_attempts, worker_id)
    return [ClaimedItem.from_row(row) for row in rows]


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
    # The image whose stored bytes were copied inside storage instead of downloading the file again.
    deduplicated_from: int | None = None


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


async def record_done(
    pool: asyncpg.Pool, settings: AppSettings, import_id: int, lease_token: uuid.UUID, copied: Sequence[Copied]
) -> int:
    """Write image rows with COPY and mark their items done, in one transaction with their
    `images.added` webhook event."""
    if not copied:
        return 0
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            """CREATE TEMP TABLE staged_images (
                   item_id bigint, lease_token uuid, storage_key text, storage_path text,
                   thumbnail_key text, md5 text, size_bytes bigint, width int, height int,
                   deduplicated_from bigint
               ) ON COMMIT DROP"""
        )
        await conn.copy_records_to_table(
            "staged_images",
            columns=_STAGED_COLUMNS,
            records=[
                (
                    c.item_id,
                    lease_token,
                    c.storage_key,
                    c.storage_path,
                    c.thumbnail_key,
                    c.md5,
                    c.size_bytes,
                    c.width,
                    c.height,
                    c.deduplicated_from,
                )
                for c in copied
            ],
        )
        image_ids: list[int] | None = await conn.fetchval(_RECORD_DONE, import_id)
        if image_ids:
            await outbox.announce_images(conn, settings, import_id, image_ids)
    return len(image_ids or ())


async def record_failure(
    pool: asyncpg.Pool,
    import_id: int,
    lease_token: uuid.UUID,
    failure: CopyFailed,
    settings: AppSettings,
    attempts: int,
) -> str | None:
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
        import_id,
        failure.item_id,
        lease_token,
        failure.transient,
        max_attempts,
        backoff_s,
        failure.code,
        failure.message,
    )
    if status == ItemStatus.FAILED:
        FILES.labels("failed", failure.code).inc()
    return status


async def release_token(pool: asyncpg.Pool, import_id: int, lease_token: uuid.UUID) -> int:
    """Hand back everything a claim holds, for a claim whose answer never arrived; returns how many."""
    count: int = await pool.fetchval(
        """WITH r AS (
               UPDATE import_items SET status = 'pending', lease_token = NULL, lease_expires_at = NULL,
                      upload_id = NULL, attempts = greatest(attempts - 1, 0), updated_at = now()
               WHERE import_id = $1 AND lease_token = $2 AND status = 'in_progress' RETURNING 1)
           SELECT count(*) FROM r""",
        import_id,
        lease_token,
    )
    return count


async def release(
    pool: asyncpg.Pool, lease_token: uuid.UUID, item_ids: Sequence[int], status: str, *, attempt_spent: bool = False
) -> None:
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
        list(item_ids),
        lease_token,
        status,
        attempt_spent,
    )
