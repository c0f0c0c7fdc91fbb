"""The sweeper: periodic repair that makes every import reach an end.

Restarts dead listings and lost jobs, hands back what dead workers held, fails items whose attempts
are spent, finalises, and closes what cancelled imports left open."""

from __future__ import annotations

import logging
import time

from fotoowl.liveness import reclaim_from_the_dead
from fotoowl.pipeline.claims import fail_exhausted
from fotoowl.pipeline.control import enqueue_deletion, enqueue_listing, enqueue_transfers, lanes
from fotoowl.pipeline.deps import Deps
from fotoowl.pipeline.finalise import finalise
from fotoowl.pipeline.keys import object_key
from fotoowl.statuses import ImportStatus

log = logging.getLogger("fotoowl.pipeline.sweeper")

# --- the sweeper ----------------------------------------------------------------------------------

# An active import records progress every second or so (see _transfer_batch).
STALLED_AFTER_S = 15.0
# The listing heartbeat comes every LISTING_HEARTBEAT_S; this many seconds without one means its worker died.
LISTING_STALE_AFTER_S = 30.0
QUEUED_STALE_AFTER_S = 30.0
# A deletion beats while it waits for copies in flight and after every batch of images it deletes.
DELETION_STALE_AFTER_S = 60.0


async def sweep(deps: Deps) -> None:
    """Periodic repair: restart dead listings, requeue reclaimable items, finalise, clean up."""
    settings = deps.settings
    # A listing beats every few seconds while it runs; a queued import whose job was lost (Redis lost
    # its data) is queued again under the same job id, which arq ignores while the job still exists.
    stale_listings = await deps.pool.fetch(
        """SELECT id, list_attempts, status FROM imports
           WHERE (status = 'listing' AND heartbeat_at < now() - make_interval(secs => $1))
              OR (status = 'queued' AND created_at < now() - make_interval(secs => $2))""",
        LISTING_STALE_AFTER_S,
        QUEUED_STALE_AFTER_S,
    )
    await reclaim_from_the_dead(deps.heartbeat)
    for row in stale_listings:
        if row["status"] == ImportStatus.LISTING:
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
        await enqueue_transfers(deps.redis, row["import_id"], f"sweep{tick}", lanes(row["n"], settings))
    for row in await deps.pool.fetch("SELECT id FROM imports WHERE status IN ('listing', 'running')"):
        await fail_exhausted(deps, row["id"])
        await finalise(deps, row["id"])
    await _close_abandoned(deps)
    # Deletions whose job was lost (its worker died, Redis lost its data) are queued again.
    for row in await deps.pool.fetch(
        """SELECT id FROM imports WHERE status = 'deleting'
           AND (heartbeat_at IS NULL OR heartbeat_at < now() - make_interval(secs => $1))""",
        DELETION_STALE_AFTER_S,
    ):
        await enqueue_deletion(deps.redis, row["id"], f"sweep{tick}")


async def _close_abandoned(deps: Deps) -> None:
    """Items of cancelled imports left in progress by a dead worker, and their open uploads."""
    rows = await deps.pool.fetch(
        """WITH stale AS (
               SELECT it.id, it.file_id, it.mime_type, it.upload_id, i.source FROM import_items it
               JOIN imports i ON i.id = it.import_id
               WHERE i.status = 'cancelled' AND it.status = 'in_progress' AND it.lease_expires_at < now()
               FOR UPDATE OF it SKIP LOCKED)
           UPDATE import_items it SET status = 'cancelled', lease_token = NULL, lease_expires_at = NULL,
                  upload_id = NULL, updated_at = now()
           FROM stale WHERE it.id = stale.id
           RETURNING stale.file_id, stale.mime_type, stale.upload_id, stale.source"""
    )
    for row in rows:
        if row["upload_id"]:
            await deps.storage.abort_upload(
                object_key(deps.settings, row["source"], row["file_id"], row["mime_type"]), row["upload_id"]
            )
