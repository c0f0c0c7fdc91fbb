"""Content dedupe: a file whose bytes are already stored (same checksum, same size, any import or
source) is copied inside storage instead of being downloaded again: no source bandwidth, no download
quota. Each image keeps an object of its own, so deleting one never takes bytes another needs."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import asyncpg

from fotoowl.pipeline.claims import ClaimedItem, Copied
from fotoowl.pipeline.deps import Deps
from fotoowl.pipeline.keys import stored_content_type, thumbnail_key
from fotoowl.storage import MAX_COPY_BYTES, ObjectNotFound
from fotoowl.thumbnails import CONTENT_TYPE as THUMBNAIL_CONTENT_TYPE

log = logging.getLogger("fotoowl.pipeline.dedupe")

# MD5 is computed for every stored image, so a listed MD5 finds bytes from any source; another kind
# of checksum (Dropbox's content_hash) finds images that listed the same kind.
_BY_MD5 = """
SELECT id, storage_key, thumbnail_key, md5, width, height FROM images
WHERE md5 = $1 AND size = $2 AND NOT (source = $3 AND source_id = $4)
ORDER BY id LIMIT 1
"""
_BY_CHECKSUM = """
SELECT id, storage_key, thumbnail_key, md5, width, height FROM images
WHERE checksum = $1 AND size = $2 AND checksum_kind = $5 AND NOT (source = $3 AND source_id = $4)
ORDER BY id LIMIT 1
"""


@dataclass(frozen=True, slots=True)
class StoredCopy:
    image_id: int
    storage_key: str
    thumbnail_key: str | None
    md5: str
    width: int | None
    height: int | None


async def find_stored_copy(pool: asyncpg.Pool, source: str, item: ClaimedItem) -> StoredCopy | None:
    if not item.checksum or not item.size_bytes or item.size_bytes > MAX_COPY_BYTES:
        return None
    if item.checksum_kind == "md5":
        row = await pool.fetchrow(_BY_MD5, item.checksum, item.size_bytes, source, item.file_id)
    else:
        row = await pool.fetchrow(
            _BY_CHECKSUM, item.checksum, item.size_bytes, source, item.file_id, item.checksum_kind
        )
    if row is None:
        return None
    return StoredCopy(row["id"], row["storage_key"], row["thumbnail_key"], row["md5"], row["width"], row["height"])


async def copy_stored(deps: Deps, source: str, item: ClaimedItem, key: str) -> Copied | None:
    """The item stored from identical bytes already in storage, or None when there are none (or they
    vanished meanwhile: then the file is downloaded as usual)."""
    match = await find_stored_copy(deps.pool, source, item)
    if match is None:
        return None
    try:
        await deps.storage.copy(match.storage_key, key, content_type=stored_content_type(item.mime_type))
    except ObjectNotFound:
        log.warning(
            "stored bytes of image %d are missing; downloading instead", match.image_id, extra={"file_id": item.file_id}
        )
        return None
    thumb_key = None
    if match.thumbnail_key:
        thumb_key = thumbnail_key(deps.settings, source, item.file_id)
        try:
            await deps.storage.copy(match.thumbnail_key, thumb_key, content_type=THUMBNAIL_CONTENT_TYPE)
        except ObjectNotFound:
            thumb_key = None
    log.debug("deduplicated from image %d", match.image_id, extra={"file_id": item.file_id})
    return Copied(
        item.id,
        key,
        deps.storage.location(key),
        thumb_key,
        match.md5,
        item.size_bytes,
        match.width,
        match.height,
        deduplicated_from=match.image_id,
    )
