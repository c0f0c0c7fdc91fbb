"""Content dedupe: a file whose bytes are already stored (same checksum, same size, any import or
source) is copied inside storage instead of being downloaded again: no source bandwidth, no download
quota. Each image keeps an object of its own, so deleting one never takes bytes another needs."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from fotoowl.pipeline.claims import ClaimedItem, Copied
from fotoowl.pipeline.deps import Deps
from fotoowl.pipeline.keys import stored_content_type, thumbnail_key
from fotoowl.storage import MAX_COPY_BYTES, ObjectNotFound
from fotoowl.thumbnails import CONTENT_TYPE as THUMBNAIL_CONTENT_TYPE

log = logging.getLogger("fotoowl.pipeline.dedupe")

# MD5 is computed for every stored image, so a listed MD5 finds bytes from any source; another kind
# of checksum (Dropbox's content_hash) finds images that listed the same kind. One query a claimed
# batch: each item's oldest match, through the index on its column.
_MATCHES = """
SELECT c.item_id, m.id, m.storage_key, m.thumbnail_key, m.md5, m.width, m.height
FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::text[]) AS c(item_id, checksum, size, file_id)
CROSS JOIN LATERAL (
    SELECT id, storage_key, thumbnail_key, md5, width, height FROM images
    WHERE {match} AND size = c.size AND NOT (source = $5 AND source_id = c.file_id)
    ORDER BY id LIMIT 1
) m
"""
_BY_MD5 = _MATCHES.format(match="md5 = c.checksum")
_BY_CHECKSUM = _MATCHES.format(match="checksum = c.checksum AND checksum_kind = $6")


@dataclass(frozen=True, slots=True)
class StoredCopy:
    image_id: int
    storage_key: str
    thumbnail_key: str | None
    md5: str
    width: int | None
    height: int | None


async def find_stored_copies(pool: asyncpg.Pool, source: str, items: Sequence[ClaimedItem]) -> dict[int, StoredCopy]:
    """Stored bytes identical to each item's, by item id (items with none are left out)."""
    by_kind: dict[str, list[ClaimedItem]] = {}
    for item in items:
        if item.checksum and item.checksum_kind and 0 < item.size_bytes <= MAX_COPY_BYTES:
            by_kind.setdefault(item.checksum_kind, []).append(item)
    found: dict[int, StoredCopy] = {}
    for kind, group in by_kind.items():
        columns = (
            [i.id for i in group],
            [i.checksum for i in group],
            [i.size_bytes for i in group],
            [i.file_id for i in group],
        )
        if kind == "md5":
            rows = await pool.fetch(_BY_MD5, *columns, source)
        else:
            rows = await pool.fetch(_BY_CHECKSUM, *columns, source, kind)
        for row in rows:
            found[row["item_id"]] = StoredCopy(
                row["id"], row["storage_key"], row["thumbnail_key"], row["md5"], row["width"], row["height"]
            )
    return found


async def copy_stored(deps: Deps, source: str, item: ClaimedItem, key: str, match: StoredCopy) -> Copied | None:
    """The item stored from `match`'s bytes, copied inside storage, or None when they vanished
    meanwhile (the file is then downloaded as usual)."""
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
