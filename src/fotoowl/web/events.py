"""Live progress without polling: GET /imports/{id}/events as Server-Sent Events.

Events: `status` (the import's JSON, whenever it changes), `images` (images the import stored since
the last event, newest last; the event id is the last image id, so a reconnecting browser resumes with
Last-Event-ID), `end` (the import finished; the stream closes) and `gone` (it was deleted). Without
Last-Event-ID (or `?after=<image id>`) a stream starts from the images stored so far, not sending them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from aiohttp import web

from fotoowl.models import Image, Import
from fotoowl.statuses import ACTIVE
from fotoowl.web.api import fetch_import
from fotoowl.web.keys import DB
from fotoowl.web.params import INT64_MAX, parse_count, path_id

log = logging.getLogger("fotoowl.web.events")

POLL_S = 1.0
KEEPALIVE_S = 15.0
IMAGES_PER_EVENT = 200
# Browsers wait this long before reconnecting a dropped stream.
RETRY_MS = 2000


def _event(name: str, data: Any, event_id: int | None = None) -> bytes:
    lines = [f"event: {name}"]
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.append("data: " + json.dumps(data, separators=(",", ":")))
    return ("\n".join(lines) + "\n\n").encode()


def _resume_after(request: web.Request) -> int | None:
    for raw in (request.headers.get("Last-Event-ID"), request.query.get("after")):
        if raw is not None and (value := parse_count(raw.strip())) is not None and value <= INT64_MAX:
            return value
    return None


async def import_events(request: web.Request) -> web.StreamResponse:
    import_id = path_id(request)
    row = await fetch_import(request, import_id)
    pool = request.app[DB]
    after = _resume_after(request)
    if after is None:
        after = await pool.fetchval("SELECT coalesce(max(id), 0) FROM images WHERE import_id = $1", import_id)
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            # Proxies that buffer (nginx) would hold the events back.
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    try:
        await response.write(f"retry: {RETRY_MS}\n\n".encode())
        sent_status: dict[str, Any] | None = None
        quiet_since = time.monotonic()
        while True:
            status = Import.from_row(row).body()
            # The rate and ETA move on every read; only a change of state or counts is news.
            news = {k: v for k, v in status.items() if k not in ("rate", "eta_s")}
            if news != sent_status:
                await response.write(_event("status", status))
                sent_status = news
                quiet_since = time.monotonic()
            while images := await pool.fetch(
                "SELECT * FROM images WHERE import_id = $1 AND id > $2 ORDER BY id LIMIT $3",
                import_id,
                after,
                IMAGES_PER_EVENT,
            ):
                after = images[-1]["id"]
                body = {"images": [Image.from_row(r).body() for r in images]}
                await response.write(_event("images", body, event_id=after))
                quiet_since = time.monotonic()
            if row["status"] not in ACTIVE:
                await response.write(_event("end", {"status": row["status"]}))
                break
            if time.monotonic() - quiet_since > KEEPALIVE_S:
                await response.write(b": keep-alive\n\n")
                quiet_since = time.monotonic()
            await asyncio.sleep(POLL_S)
            row = await pool.fetchrow("SELECT * FROM imports WHERE id = $1", import_id)
            if row is None:
                await response.write(_event("gone", {"import_id": import_id}))
                break
        await response.write_eof()
    except ConnectionResetError:
        # The browser closed the page: the normal end of a stream.
        log.debug("event stream closed by the client", extra={"import_id": import_id})
    return response


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/imports/{id}/events", import_events, name="import_events")
