"""The webhook outbox: events written in the same transaction as the change they announce.

So an event exists exactly when its change committed: a rolled-back batch announces nothing, and a
committed one cannot lose its event to a crash. One row per destination (FOTOOWL_WEBHOOK_URL, the
import's callback_url), all with the same event id and body; pipeline/webhooks.py delivers them."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import asyncpg

from fotoowl.config import AppSettings
from fotoowl.models import Image, Import
from fotoowl.models_webhooks import Destination, EventType, ImagesAddedData, ImagesAddedEvent, ImportFinishedEvent

# Images per `images.added` event: bodies stay around 100 KB whatever size of batch records them.
IMAGES_PER_EVENT = 100

_INSERT = """
INSERT INTO webhook_deliveries (event_id, event_type, import_id, destination, url, body, created_at, next_attempt_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $7)
ON CONFLICT (event_id, url) DO NOTHING
"""


async def announce_images(
    conn: asyncpg.Connection, settings: AppSettings, import_id: int, image_ids: Sequence[int]
) -> None:
    """`images.added` for these freshly recorded images, inside the caller's transaction."""
    if not image_ids:
        return
    row = await conn.fetchrow("SELECT callback_url, watch_id, now() AS tx_now FROM imports WHERE id = $1", import_id)
    if row is None:
        return
    destinations = _destinations(settings, row)
    if not destinations:
        return
    images = await conn.fetch("SELECT * FROM images WHERE id = ANY($1::bigint[]) ORDER BY id", list(image_ids))
    for start in range(0, len(images), IMAGES_PER_EVENT):
        event = ImagesAddedEvent(
            id=str(uuid.uuid4()),
            type="images.added",
            created_at=row["tx_now"],
            data=ImagesAddedData(
                import_id=import_id,
                watch_id=row["watch_id"],
                images=[Image.from_row(r) for r in images[start : start + IMAGES_PER_EVENT]],
            ),
        )
        await _write(conn, event.id, "images.added", import_id, destinations, event.body(), row["tx_now"])


async def announce_finished(conn: asyncpg.Connection, settings: AppSettings, import_id: int) -> None:
    """`import.finished` for an import whose final status the caller's transaction just wrote."""
    row = await conn.fetchrow("SELECT *, now() AS tx_now FROM imports WHERE id = $1", import_id)
    if row is None:
        return
    destinations = _destinations(settings, row)
    if not destinations:
        return
    event = ImportFinishedEvent(
        id=str(uuid.uuid4()), type="import.finished", created_at=row["tx_now"], data=Import.from_row(row)
    )
    await _write(conn, event.id, "import.finished", import_id, destinations, event.body(), row["tx_now"])


def _destinations(settings: AppSettings, row: Mapping[str, Any]) -> list[tuple[Destination, str]]:
    destinations: list[tuple[Destination, str]] = []
    if settings.webhook_url:
        destinations.append(("webhook_url", settings.webhook_url))
    callback: str | None = row["callback_url"]
    # The same URL twice would get every event twice; the trusted setting wins.
    if callback and callback != settings.webhook_url:
        destinations.append(("callback_url", callback))
    return destinations


async def _write(
    conn: asyncpg.Connection,
    event_id: str,
    event_type: EventType,
    import_id: int,
    destinations: Sequence[tuple[Destination, str]],
    body: dict[str, Any],
    created_at: datetime,
) -> None:
    # ASCII-only JSON: the stored text is byte for byte what is signed and sent.
    text = json.dumps(body, separators=(",", ":"), ensure_ascii=True)
    await conn.executemany(
        _INSERT,
        [(uuid.UUID(event_id), event_type, import_id, kind, url, text, created_at) for kind, url in destinations],
    )
