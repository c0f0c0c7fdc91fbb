"""Closing an import once nothing of it is left to move, and cleaning up what dead workers left open."""

from __future__ import annotations

import logging

from fotoowl.pipeline import outbox
from fotoowl.pipeline.deps import Deps
from fotoowl.pipeline.keys import object_key, source_prefix
from fotoowl.storage import MIN_PART_SIZE_BYTES

log = logging.getLogger("fotoowl.pipeline.finalise")


async def finalise(deps: Deps, import_id: int) -> str | None:
    """Close the import once listing is over and no item is left to move; safe to call any time."""
    async with deps.pool.acquire() as conn, conn.transaction():
        status: str | None = await conn.fetchval(
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
            await outbox.announce_finished(conn, deps.settings, import_id)
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
        import_id,
        MIN_PART_SIZE_BYTES,
    )
    if not rows:
        return 0
    source = await deps.pool.fetchval("SELECT source FROM imports WHERE id = $1", import_id)
    keys = {object_key(deps.settings, source, r["file_id"], r["mime_type"]) for r in rows}
    aborted = 0
    for upload in await deps.storage.open_uploads(source_prefix(deps.settings, source)):
        if upload.key in keys:
            await deps.storage.abort_upload(upload.key, upload.upload_id)
            aborted += 1
    if aborted:
        log.warning("aborted %d orphaned multipart uploads", aborted, extra={"import_id": import_id})
    return aborted
