"""The JSON API of keeping folders in step: watches, files removed from a synced folder, and
deleting imports and images."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import asyncpg
from aiohttp import web
from botocore.exceptions import BotoCoreError, ClientError

from fotoowl.models_sync import (
    DeleteAccepted,
    RemovedFile,
    RemovedList,
    SyncAccepted,
    Watch,
    WatchList,
    WatchRequest,
    WatchUpdate,
)
from fotoowl.pipeline import control, removal
from fotoowl.statuses import ImportStatus
from fotoowl.storage import StorageDeleteFailed
from fotoowl.web.api import MAX_PAGE, checked_callback, checked_link, fetch_import, require_token
from fotoowl.web.errors import ApiError
from fotoowl.web.keys import ARQ, DB, SETTINGS, STORAGE
from fotoowl.web.params import decode_cursor, encode_cursor, int_param, json_object, parse_body, path_id

log = logging.getLogger("fotoowl.web")

# --- watches --------------------------------------------------------------------------------------


async def watches_from(pool: asyncpg.Pool, rows: Sequence[asyncpg.Record]) -> list[Watch]:
    """Watch answers, each with its last sync import (one query for all of them)."""
    last_ids = [r["last_import_id"] for r in rows if r["last_import_id"] is not None]
    last = {r["id"]: r for r in await pool.fetch("SELECT * FROM imports WHERE id = ANY($1::bigint[])", last_ids)}
    return [Watch.from_row(r, last.get(r["last_import_id"])) for r in rows]


async def fetch_watch(request: web.Request, watch_id: int) -> Watch:
    row = await request.app[DB].fetchrow("SELECT * FROM watches WHERE id = $1", watch_id)
    if row is None:
        raise ApiError(404, "not_found", f"There is no watch {watch_id}.")
    (watch,) = await watches_from(request.app[DB], [row])
    return watch


def _checked_interval(request: web.Request, interval_s: int) -> int:
    least_s = request.app[SETTINGS].watch_min_interval_s
    if interval_s < least_s:
        raise ApiError(422, "invalid_field", f"'interval_s' must be at least {least_s} on this server.")
    return interval_s


async def create_watch(request: web.Request) -> web.Response:
    require_token(request)
    body = parse_body(WatchRequest, await json_object(request), value_codes={"url": "invalid_folder_url"})
    interval_s = _checked_interval(request, body.interval_s)
    watch_id = await add_watch(
        request,
        body.url,
        interval_s,
        recursive=body.recursive,
        prune=body.prune,
        callback_url=body.callback_url,
        password=body.password,
    )
    watch = await fetch_watch(request, watch_id)
    return web.json_response(watch.body(), status=201, headers={"Location": watch.urls.self})


async def add_watch(
    request: web.Request,
    url: str,
    interval_s: int,
    *,
    recursive: bool = True,
    prune: bool = False,
    callback_url: str | None = None,
    password: str | None = None,
) -> int:
    """Shared with the pages: validate, record; the first check (and so the first sync) comes at once."""
    link = await checked_link(request, url, password=password)
    if callback_url is not None:
        callback_url = await checked_callback(request, callback_url)
    reader = request.app[SETTINGS].drive_reader_in_use() if link.source == "google_drive" else None
    watch_id: int = await request.app[DB].fetchval(
        """INSERT INTO watches (source, folder_id, folder_url, resource_key, link_password, reader, recursive,
                                prune, callback_url, interval_s)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id""",
        link.source,
        link.folder_id,
        link.url,
        link.key,
        link.password,
        reader,
        recursive,
        prune,
        callback_url,
        interval_s,
    )
    log.info("watch created", extra={"watch_id": watch_id, "folder_id": link.folder_id, "source": link.source})
    return watch_id


async def list_watches(request: web.Request) -> web.Response:
    limit = int_param(request, "limit", 50, hi=MAX_PAGE)
    cursor = request.query.get("cursor")
    before = decode_cursor(cursor) if cursor else 2**62
    rows = await request.app[DB].fetch("SELECT * FROM watches WHERE id < $1 ORDER BY id DESC LIMIT $2", before, limit)
    next_cursor = encode_cursor(rows[-1]["id"]) if rows and len(rows) == limit else None
    watches = await watches_from(request.app[DB], rows)
    return web.json_response(WatchList(watches=watches, next_cursor=next_cursor).body())


async def get_watch(request: web.Request) -> web.Response:
    return web.json_response((await fetch_watch(request, path_id(request))).body())


async def update_watch(request: web.Request) -> web.Response:
    require_token(request)
    body = parse_body(WatchUpdate, await json_object(request))
    watch_id = path_id(request)
    if body.interval_s is not None:
        _checked_interval(request, body.interval_s)
    await change_watch(request, watch_id, paused=body.paused, interval_s=body.interval_s, prune=body.prune)
    return web.json_response((await fetch_watch(request, watch_id)).body())


async def change_watch(
    request: web.Request,
    watch_id: int,
    *,
    paused: bool | None = None,
    interval_s: int | None = None,
    prune: bool | None = None,
) -> None:
    """Resuming checks at once and forgets the failures; a new interval counts from the last check."""
    found = await request.app[DB].fetchval(
        """UPDATE watches SET
               next_check_at = CASE WHEN $2 IS FALSE AND paused THEN now()
                                    WHEN $3::int IS NOT NULL
                                        THEN coalesce(last_checked_at, now()) + make_interval(secs => $3)
                                    ELSE next_check_at END,
               failures = CASE WHEN $2 IS FALSE AND paused THEN 0 ELSE failures END,
               paused = coalesce($2, paused), interval_s = coalesce($3, interval_s), prune = coalesce($4, prune),
               updated_at = now()
           WHERE id = $1 RETURNING true""",
        watch_id,
        paused,
        interval_s,
        prune,
    )
    if not found:
        raise ApiError(404, "not_found", f"There is no watch {watch_id}.")


async def delete_watch(request: web.Request) -> web.Response:
    """Stops watching; the imports it started and their images stay."""
    require_token(request)
    await json_object(request, optional=True)
    watch_id = path_id(request)
    if not await request.app[DB].fetchval("DELETE FROM watches WHERE id = $1 RETURNING true", watch_id):
        raise ApiError(404, "not_found", f"There is no watch {watch_id}.")
    return web.Response(status=204)


async def sync_watch_now(request: web.Request) -> web.Response:
    require_token(request)
    await json_object(request, optional=True)
    watch_id = path_id(request)
    due = await request.app[DB].fetchval(
        "UPDATE watches SET next_check_at = now(), updated_at = now() WHERE id = $1 RETURNING next_check_at",
        watch_id,
    )
    if due is None:
        raise ApiError(404, "not_found", f"There is no watch {watch_id}.")
    return web.json_response(SyncAccepted(watch_id=watch_id, next_check_at=due).body(), status=202)


# --- removed files, deletions -------------------------------------------------------------------


async def list_removed(request: web.Request) -> web.Response:
    import_id = path_id(request)
    await fetch_import(request, import_id)
    limit = int_param(request, "limit", 100, hi=MAX_PAGE) or 100
    cursor = request.query.get("cursor")
    after = decode_cursor(cursor) if cursor else 0
    rows = await removal.removed_files(request.app[DB], import_id, after, limit)
    next_cursor = encode_cursor(rows[-1]["id"]) if rows and len(rows) == limit else None
    return web.json_response(
        RemovedList(removed=[RemovedFile.from_row(r) for r in rows], next_cursor=next_cursor).body()
    )


async def delete_import(request: web.Request) -> web.Response:
    require_token(request)
    await json_object(request, optional=True)
    import_id = path_id(request)
    await begin_deletion(request, import_id)
    accepted = DeleteAccepted(import_id=import_id, status="deleting")
    return web.json_response(accepted.body(), status=202, headers={"Location": f"/imports/{import_id}"})


async def begin_deletion(request: web.Request, import_id: int) -> None:
    """Shared with the pages: stop the import (copies in flight abort within a second), then queue
    the job that removes its objects and rows. Asking again while it runs changes nothing."""
    before = await removal.start_deleting(request.app[DB], import_id)
    if before is None:
        raise ApiError(404, "not_found", f"There is no import {import_id}.")
    if before != ImportStatus.DELETING:
        try:
            await control.enqueue_deletion(request.app[ARQ], import_id, "api")
        except Exception as exc:  # the sweeper queues a deletion whose job is missing
            log.warning("could not queue the deletion (%s); the sweeper will", type(exc).__name__)


async def delete_image(request: web.Request) -> web.Response:
    require_token(request)
    await json_object(request, optional=True)
    await remove_image(request, path_id(request))
    return web.Response(status=204)


async def remove_image(request: web.Request, image_id: int) -> None:
    """Shared with the pages: the image's objects, then its row; 404 if there is none, 503 if storage
    did not delete the objects (nothing changed then)."""
    row = await request.app[DB].fetchrow("SELECT id, storage_key, thumbnail_key FROM images WHERE id = $1", image_id)
    if row is None:
        raise ApiError(404, "not_found", f"There is no image {image_id}.")
    try:
        await removal.delete_images(request.app[DB], request.app[STORAGE], [removal.StoredImage.from_row(row)])
    except (ClientError, BotoCoreError, StorageDeleteFailed) as exc:
        log.warning("deleting image %d failed: storage: %s", image_id, exc)
        raise ApiError(503, "storage_unavailable", "Storage did not delete the image's objects; try again.") from None


def setup_routes(app: web.Application) -> None:
    app.router.add_post("/watches", create_watch, name="create_watch")
    app.router.add_get("/watches", list_watches, name="list_watches")
    app.router.add_get("/watches/{id}", get_watch, name="get_watch")
    app.router.add_patch("/watches/{id}", update_watch, name="update_watch")
    app.router.add_delete("/watches/{id}", delete_watch, name="delete_watch")
    app.router.add_post("/watches/{id}/sync", sync_watch_now, name="sync_watch")
    app.router.add_get("/imports/{id}/removed", list_removed, name="list_removed")
    app.router.add_delete("/imports/{id}", delete_import, name="delete_import")
    app.router.add_delete("/images/{id}", delete_image, name="delete_image")
