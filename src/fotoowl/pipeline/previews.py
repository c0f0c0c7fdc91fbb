"""Previews: a JPEG thumbnail of each stored image, made off the event loop; never fatal."""

from __future__ import annotations

import asyncio
import logging
import tempfile

from botocore.exceptions import BotoCoreError, ClientError

from fotoowl.pipeline.claims import ClaimedItem
from fotoowl.pipeline.deps import Deps
from fotoowl.pipeline.keys import thumbnail_key
from fotoowl.storage import StoredObject
from fotoowl.thumbnails import CONTENT_TYPE as THUMBNAIL_CONTENT_TYPE
from fotoowl.thumbnails import make_thumbnail

log = logging.getLogger("fotoowl.pipeline.previews")

PREVIEW_MAX_SOURCE_BYTES = 64 * 1024 * 1024


async def make_preview(
    deps: Deps, source: str, item: ClaimedItem, key: str, stored: StoredObject
) -> tuple[str | None, int | None, int | None]:
    """A preview from the body still in memory, or read back when it went up in parts; never fatal."""
    settings = deps.settings
    if stored.size_bytes > PREVIEW_MAX_SOURCE_BYTES:
        # Only known once stored when the source lists no sizes; a placeholder beats reading it all back.
        return None, None, None
    loop = asyncio.get_running_loop()
    try:
        if stored.body is not None:
            thumb = await loop.run_in_executor(
                deps.thumbnail_executor, make_thumbnail, stored.body, settings.thumbnail_px
            )
        else:
            with tempfile.SpooledTemporaryFile(max_size=settings.part_size_bytes) as spool:
                async for chunk in deps.storage.stream(key):
                    spool.write(chunk)
                spool.seek(0)
                thumb = await loop.run_in_executor(
                    deps.thumbnail_executor, make_thumbnail, spool, settings.thumbnail_px
                )
        if thumb is None:
            return None, None, None
        tkey = thumbnail_key(settings, source, item.file_id)
        await deps.storage.put_bytes(tkey, thumb.data, content_type=THUMBNAIL_CONTENT_TYPE)
    except (ClientError, BotoCoreError, OSError) as exc:
        # The original is safely stored; a missing preview shows as a placeholder.
        log.warning("thumbnail failed: %s", exc, extra={"file_id": item.file_id})
        return None, None, None
    return tkey, thumb.width, thumb.height
