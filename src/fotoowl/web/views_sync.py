"""The pages of keeping folders in step: watches (a list, one watch with the gallery of what its syncs
stored), deleting imports and images, and the removed-files list of an import.

Like the other pages they work without JavaScript: every write is a CSRF-checked form that redirects
(303), every deletion asks first on a page of its own, and live parts fall back to a meta refresh.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import asyncpg
from aiohttp import web

from fotoowl.models import Image, Import
from fotoowl.statuses import ImportStatus
from fotoowl.web import api, api_sync, sync_parts
from fotoowl.web.errors import ApiError
from fotoowl.web.keys import DB, SETTINGS
from fotoowl.web.params import decode_cursor, encode_cursor, parse_count, path_id
from fotoowl.web.security import checked_form, require_unlocked
from fotoowl.web.templating import render, see_other, source_label
from fotoowl.web.views import GRID_PAGE, _tile, progress_context

log = logging.getLogger("fotoowl.web")

WATCH_LIST_LIMIT = 100
# New photos a poll of a watch's page adds at most; the next poll brings the rest.
NEW_TILES_MAX = 48
STATE_LABELS = {"watching": "Watching", "syncing": "Syncing", "backing_off": "Backing off", "paused": "Paused"}


def _id(request: web.Request) -> int:
    return path_id(request, message="There is no such page.")


# --- watches: what the pages show of one -----------------------------------------------------------


async def _watch_contexts(request: web.Request, rows: Sequence[asyncpg.Record]) -> list[dict[str, Any]]:
    """Each watch's JSON plus what the pages need: a title, the state's label, whether it is busy."""
    pool = request.app[DB]
    watches = await api_sync.watches_from(pool, rows)
    # A watch knows its folder by id; its syncs learnt the folder's name.
    names = {
        r["watch_id"]: r["folder_name"]
        for r in await pool.fetch(
            """SELECT DISTINCT ON (watch_id) watch_id, folder_name FROM imports
               WHERE watch_id = ANY($1::bigint[]) AND folder_name IS NOT NULL ORDER BY watch_id, id DESC""",
            [w.id for w in watches],
        )
    }
    contexts = []
    for watch in watches:
        body = watch.body()
        contexts.append(
            {
                **body,
                "title": names.get(watch.id) or f"{source_label(watch.source)} folder {watch.folder_id}",
                "state_label": STATE_LABELS.get(watch.state, watch.state),
                # Syncing, or about to check for the first time: worth watching live.
                "busy": watch.state == "syncing" or (watch.state == "watching" and watch.last_checked_at is None),
                "link": watch.folder_url if watch.folder_url.startswith(("https://", "http://")) else None,
            }
        )
    return contexts


async def _one_watch(request: web.Request, watch_id: int) -> dict[str, Any]:
    row = await request.app[DB].fetchrow("SELECT * FROM watches WHERE id = $1", watch_id)
    if row is None:
        raise ApiError(404, "not_found", f"There is no watch {watch_id}.")
    (watch,) = await _watch_contexts(request, [row])
    return watch


async def _watch_list(request: web.Request) -> dict[str, Any]:
    rows = await request.app[DB].fetch("SELECT * FROM watches ORDER BY id DESC LIMIT $1", WATCH_LIST_LIMIT)
    watches = await _watch_contexts(request, rows)
    return {"watches": watches, "any_busy": any(w["busy"] for w in watches)}


def _notice(request: web.Request) -> str | None:
    # Constant texts only: the query string never reaches the page as text.
    return {
        "paused": "The watch is paused: no checks until it is resumed.",
        "resumed": "The watch is resumed: it checks the folder now.",
        "checking": "The folder is checked now.",
        "deleted": "The watch is deleted. The imports it started and their images stay.",
    }.get(request.query.get("done", ""))


# --- the watch list and the form to add one --------------------------------------------------------


async def _watches_page(
    request: web.Request,
    *,
    status: int = 200,
    error: str | None = None,
    fields: sync_parts.WatchFields | None = None,
) -> web.Response:
    return render(
        request,
        "watches.html",
        status=status,
        error=error,
        notice=_notice(request),
        form=sync_parts.watch_form_context(request, fields),
        **await _watch_list(request),
    )


async def watches_page(request: web.Request) -> web.Response:
    return await _watches_page(request)


async def watches_fragment(request: web.Request) -> web.Response:
    return render(request, "_watches.html", **await _watch_list(request))


async def add_watch(request: web.Request) -> web.Response:
    fields = sync_parts.WatchFields.from_form(await checked_form(request))
    require_unlocked(request)
    try:
        watch_id = await sync_parts.create_watch(request, fields)
    except ApiError as exc:
        if exc.status_code != 422:
            raise
        return await _watches_page(request, status=422, error=exc.message, fields=fields)
    return see_other(request, f"/ui/watches/{watch_id}")


# --- one watch: its details and the gallery of its syncs --------------------------------------------


async def _sync_images(request: web.Request, watch_id: int, cursor: str | None) -> dict[str, Any]:
    """The images this watch's syncs stored, newest first, a page at a time."""
    before = decode_cursor(cursor) if cursor else 2**62
    rows = await request.app[DB].fetch(
        """SELECT img.* FROM images img JOIN imports i ON i.id = img.import_id
           WHERE i.watch_id = $1 AND img.id < $2 ORDER BY img.id DESC LIMIT $3""",
        watch_id,
        before,
        GRID_PAGE,
    )
    box = request.app[SETTINGS].thumbnail_px
    next_page = next_grid = None
    if len(rows) == GRID_PAGE:
        next_cursor = encode_cursor(rows[-1]["id"])
        next_page = f"/ui/watches/{watch_id}?cursor={next_cursor}"
        next_grid = f"/ui/watches/{watch_id}/_grid?cursor={next_cursor}"
    return {"tiles": [_tile(r, box) for r in rows], "next_page": next_page, "next_grid": next_grid}


async def _newest_image_id(request: web.Request, watch_id: int) -> int:
    newest: int = await request.app[DB].fetchval(
        """SELECT coalesce(max(img.id), 0) FROM images img JOIN imports i ON i.id = img.import_id
           WHERE i.watch_id = $1""",
        watch_id,
    )
    return newest


async def watch_page(request: web.Request) -> web.Response:
    watch_id = _id(request)
    watch = await _one_watch(request, watch_id)
    cursor = request.query.get("cursor") or None
    grid = await _sync_images(request, watch_id, cursor)
    return render(
        request,
        "watch.html",
        watch=watch,
        notice=_notice(request),
        paged=cursor is not None,
        newest=await _newest_image_id(request, watch_id),
        any_images=bool(grid["tiles"]) or cursor is not None,
        **grid,
    )


async def watch_grid_fragment(request: web.Request) -> web.Response:
    watch_id = _id(request)
    await _one_watch(request, watch_id)
    return render(request, "_grid.html", **await _sync_images(request, watch_id, request.query.get("cursor")))


async def watch_live_fragment(request: web.Request) -> web.Response:
    """Polled by the watch's page: its state again, and the photos its syncs stored since `after`
    (swapped in at the top of the gallery, out of band)."""
    watch_id = _id(request)
    watch = await _one_watch(request, watch_id)
    after = parse_count(request.query.get("after", "")) or 0
    rows = await request.app[DB].fetch(
        """SELECT img.* FROM images img JOIN imports i ON i.id = img.import_id
           WHERE i.watch_id = $1 AND img.id > $2 ORDER BY img.id LIMIT $3""",
        watch_id,
        after,
        NEW_TILES_MAX,
    )
    box = request.app[SETTINGS].thumbnail_px
    new_tiles = [_tile(r, box) for r in reversed(rows)]
    newest = rows[-1]["id"] if rows else after
    return render(
        request,
        "_watch_live.html",
        watch=watch,
        newest=newest,
        any_images=newest > 0,
        new_tiles=new_tiles,
        oob_title=True,
    )


# --- pause, resume, check now, delete ---------------------------------------------------------------


def _back(form: dict[str, str], watch_id: int) -> str:
    # A choice of two pages, never a path from the form: no open redirect to guard.
    return "/ui/watches" if form.get("back") == "list" else f"/ui/watches/{watch_id}"


async def pause_watch(request: web.Request) -> web.Response:
    watch_id = _id(request)
    form = await checked_form(request)
    require_unlocked(request)
    await api_sync.change_watch(request, watch_id, paused=True)
    return see_other(request, _back(form, watch_id) + "?done=paused")


async def resume_watch(request: web.Request) -> web.Response:
    watch_id = _id(request)
    form = await checked_form(request)
    require_unlocked(request)
    await api_sync.change_watch(request, watch_id, paused=False)
    return see_other(request, _back(form, watch_id) + "?done=resumed")


async def check_watch_now(request: web.Request) -> web.Response:
    watch_id = _id(request)
    form = await checked_form(request)
    require_unlocked(request)
    checking = await request.app[DB].fetchval(
        "UPDATE watches SET next_check_at = now(), updated_at = now() WHERE id = $1 AND NOT paused RETURNING true",
        watch_id,
    )
    if not checking:
        await _one_watch(request, watch_id)  # a 404 when there is no such watch; a paused one waits for resume
    return see_other(request, _back(form, watch_id) + ("?done=checking" if checking else ""))


async def confirm_delete_watch(request: web.Request) -> web.Response:
    watch = await _one_watch(request, _id(request))
    return render(
        request,
        "confirm.html",
        title=f"Delete the watch of {watch['title']}?",
        message="fotoowl stops checking the folder. The imports the watch started and their images stay.",
        action=f"/ui/watches/{watch['id']}/delete",
        button="Delete watch",
        cancel=f"/ui/watches/{watch['id']}",
    )


async def delete_watch(request: web.Request) -> web.Response:
    watch_id = _id(request)
    await checked_form(request)
    require_unlocked(request)
    if not await request.app[DB].fetchval("DELETE FROM watches WHERE id = $1 RETURNING true", watch_id):
        raise ApiError(404, "not_found", f"There is no watch {watch_id}.")
    return see_other(request, "/ui/watches?done=deleted")


# --- deleting imports and images ---------------------------------------------------------------------


async def confirm_delete_import(request: web.Request) -> web.Response:
    imp = progress_context(Import.from_row(await api.fetch_import(request, _id(request))).body())
    if imp["status"] == ImportStatus.DELETING:
        return see_other(request, f"/ui/imports/{imp['id']}")
    stored = await request.app[DB].fetchval("SELECT count(*) FROM images WHERE import_id = $1", imp["id"])
    return render(
        request,
        "confirm.html",
        title=f"Delete import #{imp['id']}: {imp['title']}?",
        message=_import_deletion(stored, imp["active"]),
        action=f"/ui/imports/{imp['id']}/delete",
        button="Delete import",
        cancel=f"/ui/imports/{imp['id']}",
    )


def _import_deletion(stored: int, active: bool) -> str:
    what = (
        f"Its {stored} stored image{'' if stored == 1 else 's'}, their previews and the import itself are"
        if stored
        # A sync's unchanged files stay with the import that first stored them.
        else "No stored image belongs to it, so only the import itself is"
    )
    stops = ", and the copying stops" if active else ""
    return f"{what} removed for good{stops}. The folder at its source is not touched."


async def delete_import(request: web.Request) -> web.Response:
    import_id = _id(request)
    await checked_form(request)
    require_unlocked(request)
    await api_sync.begin_deletion(request, import_id)
    return see_other(request, "/?deleted=1")


async def confirm_delete_image(request: web.Request) -> web.Response:
    image = Image.from_row(await api.fetch_image(request)).body()
    return render(
        request,
        "confirm.html",
        title=f"Delete {image['name']}?",
        message="The image and its preview are removed from storage for good. "
        "The file at its source is not touched; a later sync of its folder copies it again.",
        action=f"/ui/images/{image['id']}/delete",
        button="Delete image",
        cancel=f"/ui/images/{image['id']}",
    )


async def delete_image(request: web.Request) -> web.Response:
    image_id = _id(request)
    await checked_form(request)
    require_unlocked(request)
    await api_sync.remove_image(request, image_id)
    return see_other(request, "/ui/gallery?deleted=1")


async def removed_fragment(request: web.Request) -> web.Response:
    imp = progress_context(Import.from_row(await api.fetch_import(request, _id(request))).body())
    removed = await sync_parts.removed_list(request, imp, request.query.get("cursor") or None)
    return render(request, "_removed.html", imp=imp, removed=removed)


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/ui/watches", watches_page, name="ui_watches")
    app.router.add_get("/ui/_watches", watches_fragment, name="ui_watches_fragment")
    app.router.add_post("/ui/watches", add_watch, name="ui_add_watch")
    app.router.add_get("/ui/watches/{id}", watch_page, name="ui_watch")
    app.router.add_get("/ui/watches/{id}/_live", watch_live_fragment, name="ui_watch_live")
    app.router.add_get("/ui/watches/{id}/_grid", watch_grid_fragment, name="ui_watch_grid")
    app.router.add_post("/ui/watches/{id}/pause", pause_watch, name="ui_pause_watch")
    app.router.add_post("/ui/watches/{id}/resume", resume_watch, name="ui_resume_watch")
    app.router.add_post("/ui/watches/{id}/check", check_watch_now, name="ui_check_watch")
    app.router.add_get("/ui/watches/{id}/delete", confirm_delete_watch, name="ui_confirm_delete_watch")
    app.router.add_post("/ui/watches/{id}/delete", delete_watch, name="ui_delete_watch")
    app.router.add_get("/ui/imports/{id}/_removed", removed_fragment, name="ui_removed")
    app.router.add_get("/ui/imports/{id}/delete", confirm_delete_import, name="ui_confirm_delete_import")
    app.router.add_post("/ui/imports/{id}/delete", delete_import, name="ui_delete_import")
    app.router.add_get("/ui/images/{id}/delete", confirm_delete_image, name="ui_confirm_delete_image")
    app.router.add_post("/ui/images/{id}/delete", delete_image, name="ui_delete_image")
