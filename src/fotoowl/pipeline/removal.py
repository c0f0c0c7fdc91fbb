"""Removing what was imported: files gone from a synced folder (reported, and with `prune` deleted),
single images, and whole imports. Objects go first, then rows, so a crash in between leaves a row
to delete again, never an object nobody knows of.

Every image has objects of its own (dedupe copies bytes inside storage rather than sharing them), so
deleting one never takes bytes another image needs."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg
from botocore.exceptions import BotoCoreError, ClientError

from fotoowl.pipeline.deps import Deps
from fotoowl.pipeline.finalise import abort_orphan_uploads
from fotoowl.storage import Storage, StorageDeleteFailed

log = logging.getLogger("fotoowl.pipeline.removal")

REMOVED_FROM_SOURCE = "removed_from_source"
PRUNED = "pruned"
DELETE_BATCH = 500

# Images earlier imports of the same folder stored whose files this import's listing did not find.
_RECORD_REMOVED = """
WITH imp AS (
    SELECT source, folder_id, recursive FROM imports WHERE id = $1
), gone AS (
    SELECT img.* FROM images img JOIN imports i ON i.id = img.import_id CROSS JOIN imp
    WHERE i.source = imp.source AND i.folder_id = imp.folder_id AND img.source = imp.source
      AND (imp.recursive OR img.folder_path = '')
      AND NOT EXISTS (SELECT 1 FROM import_items it WHERE it.import_id = $1 AND it.file_id = img.source_id)
      -- A subfolder the listing could not read may still hold its files: they are not gone.
      AND NOT EXISTS (
          SELECT 1 FROM import_items shut
          WHERE shut.import_id = $1 AND shut.status = 'skipped' AND shut.error_code = 'folder_not_accessible'
            AND (img.folder_path = concat_ws('/', nullif(shut.folder_path, ''), shut.name)
                 OR left(img.folder_path, length(concat_ws('/', nullif(shut.folder_path, ''), shut.name)) + 1)
                    = concat_ws('/', nullif(shut.folder_path, ''), shut.name) || '/'))
), ins AS (
    INSERT INTO import_items (import_id, file_id, name, folder_path, mime_type, size_bytes, md5, checksum,
                              checksum_kind, drive_created_at, drive_modified_at, status, error_code,
                              error_message)
    SELECT $1, g.source_id, g.name, g.folder_path, g.mime_type, g.size, g.md5, g.checksum, g.checksum_kind,
           g.drive_created_at, g.drive_modified_at, 'removed', $2, $3
    FROM gone g
    ON CONFLICT (import_id, file_id) DO NOTHING
    RETURNING 1
)
UPDATE imports SET removed_count = removed_count + (SELECT count(*) FROM ins), updated_at = now()
WHERE id = $1
RETURNING (SELECT count(*) FROM ins)
"""


@dataclass(frozen=True, slots=True)
class StoredImage:
    id: int
    storage_key: str
    thumbnail_key: str | None

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> StoredImage:
        return cls(row["id"], row["storage_key"], row["thumbnail_key"])


async def delete_images(pool: asyncpg.Pool, storage: Storage, images: Sequence[StoredImage]) -> int:
    """Delete these images' objects (original and preview), then their rows; returns rows deleted."""
    if not images:
        return 0
    keys = [key for image in images for key in (image.storage_key, image.thumbnail_key) if key]
    await storage.delete_many(keys)
    deleted: int = await pool.fetchval(
        "WITH d AS (DELETE FROM images WHERE id = ANY($1::bigint[]) RETURNING 1) SELECT count(*) FROM d",
        [image.id for image in images],
    )
    return deleted


async def removed_files(pool: asyncpg.Pool, import_id: int, after_id: int, limit: int) -> list[asyncpg.Record]:
    """The files an import found gone from its folder, oldest first, each with the image still kept
    for it (`image_id`, null once pruned)."""
    rows: list[asyncpg.Record] = await pool.fetch(
        """SELECT it.id, it.file_id, it.name, it.folder_path, it.mime_type, it.size_bytes, it.error_code,
                  img.id AS image_id
           FROM import_items it JOIN imports i ON i.id = it.import_id
           LEFT JOIN images img ON img.source = i.source AND img.source_id = it.file_id
           WHERE it.import_id = $1 AND it.status = 'removed' AND it.id > $2
           ORDER BY it.id LIMIT $3""",
        import_id,
        after_id,
        limit,
    )
    return rows


async def record_removed(deps: Deps, import_id: int, *, prune: bool) -> int:
    """Report the folder's files that are gone since an earlier import stored them; returns how many."""
    message = (
        "The file is no longer in the folder; its image is deleted (prune)."
        if prune
        else "The file is no longer in the folder; its image is kept (import with prune to delete it)."
    )
    count: int = await deps.pool.fetchval(_RECORD_REMOVED, import_id, REMOVED_FROM_SOURCE, message)
    if count:
        log.info("%d files are gone from the folder", count, extra={"import_id": import_id})
    return count


async def prune_removed(deps: Deps, import_id: int) -> int:
    """Delete the images of the files this sync found removed; returns how many. A storage failure
    leaves the rest reported but not pruned (the next sync prunes them)."""
    pruned = 0
    while True:
        rows = await deps.pool.fetch(
            """SELECT it.id AS item_id, img.id, img.storage_key, img.thumbnail_key
               FROM import_items it JOIN imports i ON i.id = it.import_id
               LEFT JOIN images img ON img.source = i.source AND img.source_id = it.file_id
               WHERE it.import_id = $1 AND it.status = 'removed' AND it.error_code = $2
               ORDER BY it.id LIMIT $3""",
            import_id,
            REMOVED_FROM_SOURCE,
            DELETE_BATCH,
        )
        if not rows:
            return pruned
        try:
            await delete_images(deps.pool, deps.storage, [StoredImage.from_row(r) for r in rows if r["id"]])
        except (ClientError, BotoCoreError, StorageDeleteFailed, OSError) as exc:
            log.warning("pruning stopped: storage failed (%s)", exc, extra={"import_id": import_id})
            return pruned
        item_ids = [r["item_id"] for r in rows]
        await deps.pool.execute(
            """WITH p AS (UPDATE import_items SET error_code = $2, updated_at = now()
                          WHERE id = ANY($1::bigint[]) RETURNING 1)
               UPDATE imports SET pruned_count = pruned_count + (SELECT count(*) FROM p) WHERE id = $3""",
            item_ids,
            PRUNED,
            import_id,
        )
        pruned += len(item_ids)


async def start_deleting(pool: asyncpg.Pool, import_id: int) -> str | None:
    """Mark the import for deletion (its copies in flight stop within a second); returns its status
    before, or None when there is no such import."""
    async with pool.acquire() as conn, conn.transaction():
        status: str | None = await conn.fetchval("SELECT status FROM imports WHERE id = $1 FOR UPDATE", import_id)
        if status is None or status == "deleting":
            return status
        await conn.execute(
            """UPDATE import_items SET status = 'cancelled', error_code = 'cancelled',
                      error_message = 'the import was deleted', updated_at = now()
               WHERE import_id = $1 AND status = 'pending'""",
            import_id,
        )
        await conn.execute(
            """UPDATE imports SET status = 'deleting', heartbeat_at = now(), updated_at = now(),
                      finished_at = coalesce(finished_at, now())
               WHERE id = $1""",
            import_id,
        )
    log.info("import marked for deletion", extra={"import_id": import_id})
    return status


async def delete_import(deps: Deps, import_id: int) -> bool:
    """The deletion job: once no copy of the import is in flight, delete its images' objects and rows,
    then the import itself. Idempotent; returns whether the import is gone."""
    pool = deps.pool
    if await pool.fetchval("SELECT status FROM imports WHERE id = $1", import_id) != "deleting":
        return False
    # Copies in flight notice the status within a second and hand their items back; a worker that
    # died mid-copy holds its items until its lease runs out.
    deadline = time.monotonic() + deps.settings.lease_s + 10
    while time.monotonic() < deadline and await pool.fetchval(
        """SELECT EXISTS (SELECT 1 FROM import_items WHERE import_id = $1 AND status = 'in_progress'
                          AND lease_expires_at > now())""",
        import_id,
    ):
        await pool.execute("UPDATE imports SET heartbeat_at = now() WHERE id = $1", import_id)
        await asyncio.sleep(1.0)
    deleted = 0
    while rows := await pool.fetch(
        "SELECT id, storage_key, thumbnail_key FROM images WHERE import_id = $1 ORDER BY id LIMIT $2",
        import_id,
        DELETE_BATCH,
    ):
        deleted += await delete_images(pool, deps.storage, [StoredImage.from_row(r) for r in rows])
        await pool.execute("UPDATE imports SET heartbeat_at = now() WHERE id = $1", import_id)
    await abort_orphan_uploads(deps, import_id)
    await pool.execute("DELETE FROM imports WHERE id = $1 AND status = 'deleting'", import_id)
    log.info("import deleted with its %d images", deleted, extra={"import_id": import_id})
    return True
