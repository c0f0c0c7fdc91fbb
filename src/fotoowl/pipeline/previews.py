"""Previews: a JPEG thumbnail of each recorded image, made after the fact from its original (the file
its copy left in this machine's preview spool, else read back from storage), never on the copy's
path, and never fatal to the image.

An image is recorded with its preview `pending`; a preview lane (preview_lane.py) claims pending
previews under a lease, makes each one here, and records it `done` (with its thumbnail_key) or
`none` with a reason. This module holds every statement on preview state and the making of one
preview; the lane decides when and how many.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import tempfile
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final, Literal

import aiohttp
import asyncpg
from botocore.exceptions import BotoCoreError, ClientError

from fotoowl.metrics import PREVIEW_ORIGINALS
from fotoowl.pipeline.deps import Deps
from fotoowl.pipeline.keys import thumbnail_key
from fotoowl.pipeline.preview_spool import MAX_ORIGINAL_BYTES
from fotoowl.resilience import is_storage_outage
from fotoowl.storage import ObjectNotFound
from fotoowl.thumbnails import CONTENT_TYPE as THUMBNAIL_CONTENT_TYPE
from fotoowl.thumbnails import Thumbnail, make_thumbnail

log = logging.getLogger("fotoowl.pipeline.previews")

# Originals up to this size are read into memory for their preview (the lane bounds how many bytes it
# holds at once: preview_lane.MEMORY_BYTES); larger ones into a temporary file as they are read.
SPOOL_IN_MEMORY_BYTES = 8 * 1024 * 1024
# Leases are short and renewed while a batch runs, so previews a killed worker held come back soon.
PREVIEW_LEASE_MAX_S = 30.0
# Thumbnail threads run at this niceness (Linux): the scheduler gives copies and the servers the CPU
# first, and previews what is left.
THREAD_NICENESS = 10

# Why an image has no preview.
NoPreviewReason = Literal["undecodable", "too_large", "missing", "failed", "disabled"]
UNDECODABLE: Final = "undecodable"
TOO_LARGE: Final = "too_large"
MISSING: Final = "missing"
FAILED: Final = "failed"
DISABLED: Final = "disabled"


@dataclass(frozen=True, slots=True)
class PendingPreview:
    """A claimed image whose preview is to be made."""

    image_id: int
    source: str
    source_id: str
    storage_key: str
    size_bytes: int
    attempts: int

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> PendingPreview:
        return cls(
            row["id"],
            row["source"],
            row["source_id"],
            row["storage_key"],
            int(row["size"]),
            row["preview_attempts"],
        )


@dataclass(frozen=True, slots=True)
class PreviewMade:
    """A final outcome: `done` with its thumbnail, or `none` with the reason."""

    image_id: int
    status: Literal["done", "none"]
    reason: NoPreviewReason | None = None
    thumbnail_key: str | None = None
    width: int | None = None
    height: int | None = None


@dataclass(frozen=True, slots=True)
class PreviewDeferred:
    """Not made this time (storage failed): tried again later, with an attempt spent unless storage
    as a whole was down."""

    image_id: int
    message: str
    attempt_spent: bool


# --- the ledger -------------------------------------------------------------------------------------

_CLAIMABLE = """
    i.preview_status = 'pending'
    AND (i.preview_lease_expires_at IS NULL OR i.preview_lease_expires_at < now())
    AND NOT EXISTS (SELECT 1 FROM imports WHERE id = i.import_id AND status = 'deleting')
"""
_LEASE = """
UPDATE images i SET preview_lease_token = $2, preview_lease_expires_at = now() + make_interval(secs => $3),
       preview_attempts = i.preview_attempts + 1
FROM picked WHERE i.id = picked.id
RETURNING i.id, i.source, i.source_id, i.storage_key, i.size, i.preview_attempts
"""
# The oldest pending previews, of any import.
_CLAIM = f"""
WITH picked AS (
    SELECT id FROM images i WHERE {_CLAIMABLE}
    ORDER BY id LIMIT $1
    FOR UPDATE SKIP LOCKED
)
{_LEASE}"""

# Width and height from the image itself fill in what the source did not list. Not for an import being
# deleted: its deletion reads the images' keys, and a thumbnail recorded after that would be left behind.
_RECORD = """
UPDATE images i SET preview_status = r.status, preview_reason = r.reason, thumbnail_key = r.thumbnail_key,
       width = coalesce(i.width, r.width), height = coalesce(i.height, r.height),
       preview_lease_token = NULL, preview_lease_expires_at = NULL
FROM unnest($2::bigint[], $3::text[], $4::text[], $5::text[], $6::int[], $7::int[])
     AS r(id, status, reason, thumbnail_key, width, height)
WHERE i.id = r.id AND i.preview_lease_token = $1 AND i.preview_status = 'pending'
  AND NOT EXISTS (SELECT 1 FROM imports WHERE id = i.import_id AND status = 'deleting')
RETURNING i.id
"""

# Of thumbnails stored but not recorded, those whose image is still wanted: taken over by a later copy
# of its file, which makes its own preview under the same key. The others' images are gone, or going.
_STILL_WANTED = """
SELECT id FROM images i
WHERE id = ANY($1::bigint[]) AND NOT EXISTS (SELECT 1 FROM imports WHERE id = i.import_id AND status = 'deleting')
"""

# The lease's expiry stays as a not-before: the preview is claimable again after the backoff.
_DEFER = """
UPDATE images SET preview_lease_token = NULL, preview_lease_expires_at = now() + make_interval(secs => $3),
       preview_attempts = CASE WHEN $4 THEN preview_attempts ELSE greatest(preview_attempts - 1, 0) END
WHERE id = ANY($2::bigint[]) AND preview_lease_token = $1 AND preview_status = 'pending'
"""

_RENEW = """
UPDATE images SET preview_lease_expires_at = now() + make_interval(secs => $3)
WHERE id = ANY($2::bigint[]) AND preview_lease_token = $1 AND preview_status = 'pending'
"""


def memory_bytes(pending: PendingPreview) -> int:
    """What making this preview holds in memory at most (beside the decoder's own, small at draft scale)."""
    return min(pending.size_bytes, SPOOL_IN_MEMORY_BYTES)


def lease_s(deps: Deps) -> float:
    return min(PREVIEW_LEASE_MAX_S, float(deps.settings.lease_s))


async def claim_previews(pool: asyncpg.Pool, token: uuid.UUID, limit: int, lease_s: float) -> list[PendingPreview]:
    """Up to `limit` pending previews, oldest image first, of any import, under a new lease."""
    rows = await pool.fetch(_CLAIM, limit, token, lease_s)
    return sorted((PendingPreview.from_row(row) for row in rows), key=lambda p: p.image_id)


async def record_previews(pool: asyncpg.Pool, token: uuid.UUID, made: Sequence[PreviewMade]) -> set[int]:
    """Record the outcomes the lease still holds; returns their image ids. The import's preview counts
    move in the same statement (sql/008_previews.sql)."""
    if not made:
        return set()
    rows = await pool.fetch(
        _RECORD,
        token,
        [m.image_id for m in made],
        [m.status for m in made],
        [m.reason for m in made],
        [m.thumbnail_key for m in made],
        [m.width for m in made],
        [m.height for m in made],
    )
    return {row["id"] for row in rows}


async def drop_strays(deps: Deps, made: Sequence[PreviewMade], recorded: set[int]) -> int:
    """Delete the thumbnails stored for images deleted meanwhile (their deletion could not know of
    them); returns how many."""
    unrecorded = {m.image_id: m.thumbnail_key for m in made if m.thumbnail_key and m.image_id not in recorded}
    if not unrecorded:
        return 0
    wanted = {row["id"] for row in await deps.pool.fetch(_STILL_WANTED, list(unrecorded))}
    strays = [key for image_id, key in unrecorded.items() if image_id not in wanted and key]
    await deps.storage.delete_many(strays)
    return len(strays)


async def defer_previews(
    pool: asyncpg.Pool, token: uuid.UUID, image_ids: Sequence[int], *, backoff_s: float, attempt_spent: bool
) -> None:
    """Hand previews back, claimable again after `backoff_s`."""
    if image_ids:
        await pool.execute(_DEFER, token, list(image_ids), backoff_s, attempt_spent)


async def renew_previews(pool: asyncpg.Pool, token: uuid.UUID, image_ids: Sequence[int], lease_s: float) -> None:
    if image_ids:
        await pool.execute(_RENEW, token, list(image_ids), lease_s)


# --- making one preview -----------------------------------------------------------------------------

_thread_state = threading.local()


def _thumbnail_at_low_priority(source: IO[bytes], max_px: int) -> Thumbnail | None:
    if not getattr(_thread_state, "lowered", False):
        _thread_state.lowered = True
        if sys.platform == "linux":
            # On Linux a thread id is a scheduling entity of its own: this lowers this thread only.
            try:
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), THREAD_NICENESS)
            except OSError as exc:
                log.debug("could not lower the thumbnail thread's priority: %s", exc)
    return make_thumbnail(source, max_px)


async def make_preview(deps: Deps, pending: PendingPreview) -> PreviewMade | PreviewDeferred:
    """Read the original back, make its thumbnail in the thumbnail thread(s), store it; never raises
    (but for cancellation)."""
    settings = deps.settings
    image_id = pending.image_id
    if settings.thumbnail_px <= 0:
        return PreviewMade(image_id, "none", DISABLED)
    if pending.size_bytes > MAX_ORIGINAL_BYTES:
        return PreviewMade(image_id, "none", TOO_LARGE)
    if pending.attempts > settings.max_attempts:
        return PreviewMade(image_id, "none", FAILED)
    extra = {"image_id": image_id, "source_id": pending.source_id}
    spooled = deps.preview_spool.take(pending.storage_key, pending.size_bytes) if deps.preview_spool else None
    read_from = "spool" if spooled else "storage"
    try:
        try:
            thumb = await (_thumbnail_of_file(deps, spooled) if spooled else _thumbnail_from_storage(deps, pending))
        except FileNotFoundError:
            # The spooled original was deleted before it was read (swept, or taken by another lane).
            read_from = "storage"
            thumb = await _thumbnail_from_storage(deps, pending)
        PREVIEW_ORIGINALS.labels(read_from).inc()
        if thumb is None:
            return PreviewMade(image_id, "none", UNDECODABLE)
        key = thumbnail_key(settings, pending.source, pending.source_id)
        await deps.storage.put_bytes(key, thumb.data, content_type=THUMBNAIL_CONTENT_TYPE)
    except ObjectNotFound:
        log.warning("the original of image %d is missing from storage: no preview", image_id, extra=extra)
        return PreviewMade(image_id, "none", MISSING)
    except (ClientError, BotoCoreError, aiohttp.ClientError, OSError, TimeoutError) as exc:
        outage = is_storage_outage(exc) and await deps.storage_gate.confirm_outage()
        log.warning("preview failed: %s", f"{type(exc).__name__}: {exc}"[:300], extra=extra)
        return PreviewDeferred(image_id, f"storage: {exc}", attempt_spent=not outage)
    except Exception as exc:
        log.exception("preview failed unexpectedly", extra=extra)
        return PreviewDeferred(image_id, f"{type(exc).__name__}: {exc}", attempt_spent=True)
    finally:
        if spooled and deps.preview_spool:
            # Made or not, the next try reads storage (a spooled file that failed must not fail again).
            deps.preview_spool.discard(pending.storage_key)
    return PreviewMade(image_id, "done", None, key, thumb.width, thumb.height)


async def _thumbnail_from_storage(deps: Deps, pending: PendingPreview) -> Thumbnail | None:
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY_BYTES) as spool:
        async for chunk in deps.storage.stream(pending.storage_key):
            spool.write(chunk)
        spool.seek(0)
        return await asyncio.get_running_loop().run_in_executor(
            deps.thumbnail_executor, _thumbnail_at_low_priority, spool, deps.settings.thumbnail_px
        )


async def _thumbnail_of_file(deps: Deps, path: Path) -> Thumbnail | None:
    """From the original the copy left on this machine (preview_spool.py)."""

    def make() -> Thumbnail | None:
        with open(path, "rb") as original:
            return _thumbnail_at_low_priority(original, deps.settings.thumbnail_px)

    return await asyncio.get_running_loop().run_in_executor(deps.thumbnail_executor, make)
