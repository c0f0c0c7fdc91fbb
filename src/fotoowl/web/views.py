"""HTML pages (Jinja, autoescaped) and the partials htmx swaps in.

Every page works without JavaScript: forms post and redirect (303), live fragments fall back to a
meta refresh, infinite scroll falls back to a "More" link. htmx only swaps fragments in place.

Form protection lives in `security.py`, template plumbing in `templating.py`.
"""

from __future__ import annotations

import hmac
import string
from typing import Any
from urllib.parse import quote, urlencode

import asyncpg
from aiohttp import web

from fotoowl import statuses
from fotoowl.models import MAX_URL_CHARS, Image, Import
from fotoowl.pipeline import control
from fotoowl.resources import folder
from fotoowl.web import api, sync_parts
from fotoowl.web.errors import ApiError
from fotoowl.web.keys import ARQ, DB, DEMO_FOLDERS, SETTINGS
from fotoowl.web.params import decode_cursor, encode_cursor, parse_count, path_id
from fotoowl.web.security import (
    UNLOCK_COOKIE,
    UNLOCK_MAX_AGE_S,
    checked_form,
    is_unlocked,
    require_unlocked,
    unlock_value,
)
from fotoowl.web.templating import render, see_other, source_label

# --- CSRF and the access token --------------------------------------------------------------------

RECENT_IMPORTS = 20
GRID_PAGE = 48
GRID_PAGE_MAX = 120
FAILURES_PAGE = 50
FILTER_IMPORTS = 100


# Printable ASCII but the backslash, which browsers read as "/" ("/\\evil.example" is "//evil.example").
_PATH_SAFE = string.punctuation.replace("\\", "")


def _local_path(value: str | None) -> str:
    """Only same-site paths as redirect targets: no open redirect through ?next=.

    Browsers drop tabs and newlines anywhere in a URL ("/\\t/evil.example" becomes "//evil.example"),
    so a path with any control character, or a backslash, is refused rather than cleaned.
    """
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    if any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in value):
        return "/"
    # Spaces and non-ASCII percent-encoded: the Location header carries nothing a browser rewrites.
    return quote(value, safe=_PATH_SAFE, errors="replace")


async def unlock_page(request: web.Request) -> web.Response:
    next_path = _local_path(request.query.get("next"))
    if is_unlocked(request):
        raise web.HTTPSeeOther(next_path)
    return render(request, "unlock.html", next_path=next_path, error=None)


async def unlock(request: web.Request) -> web.Response:
    form = await checked_form(request)
    next_path = _local_path(form.get("next"))
    token = request.app[SETTINGS].api_token
    if not token:
        return see_other(request, next_path)
    if not hmac.compare_digest(form.get("token", "").strip().encode(), token.get().encode()):
        return render(
            request, "unlock.html", status=401, next_path=next_path, error="That is not this server's access token."
        )
    response = see_other(request, next_path)
    response.set_cookie(
        UNLOCK_COOKIE,
        unlock_value(token.get()),
        httponly=True,
        samesite="Lax",
        path="/",
        max_age=UNLOCK_MAX_AGE_S,
        secure=request.secure,
    )
    return response


async def lock(request: web.Request) -> web.Response:
    await checked_form(request)
    response = see_other(request, "/")
    response.del_cookie(UNLOCK_COOKIE, path="/")
    return response


# --- home: the folder form and recent imports -----------------------------------------------------


async def _recent_imports(request: web.Request) -> list[dict[str, Any]]:
    rows = await request.app[DB].fetch("SELECT * FROM imports ORDER BY id DESC LIMIT $1", RECENT_IMPORTS)
    return [progress_context(Import.from_row(row).body()) for row in rows]


async def _home(
    request: web.Request,
    *,
    status: int = 200,
    error: str | None = None,
    folder_url: str = "",
    recursive: bool = True,
    watch: sync_parts.WatchFields | None = None,
) -> web.Response:
    imports = await _recent_imports(request)
    return render(
        request,
        "home.html",
        status=status,
        error=error,
        folder_url=folder_url,
        recursive=recursive,
        imports=imports,
        any_active=any(i["active"] for i in imports),
        demo_folders=_demo_folders(request.app),
        keep_in_step=watch is not None,
        watch=sync_parts.watch_form_context(request, watch),
    )


def _demo_folders(app: web.Application) -> dict[str, str]:
    # Set only by `fotoowl dev` in demo mode (mypy cannot pick Application.get's overload here).
    if DEMO_FOLDERS in app:
        return app[DEMO_FOLDERS]
    return {}


async def home(request: web.Request) -> web.Response:
    return await _home(request)


async def imports_fragment(request: web.Request) -> web.Response:
    imports = await _recent_imports(request)
    return render(request, "_imports.html", imports=imports, any_active=any(i["active"] for i in imports))


async def submit(request: web.Request) -> web.Response:
    form = await checked_form(request)
    require_unlocked(request)
    folder_url = form.get("folder_url", "")
    recursive = form.get("recursive") in ("on", "1", "true")
    # "Keep this folder in step": a watch, whose first check starts the first sync at once.
    watch = sync_parts.WatchFields.from_form(form) if form.get("keep_in_step") == "on" else None
    try:
        if watch is not None:
            return see_other(request, f"/ui/watches/{await sync_parts.create_watch(request, watch)}")
        row = await api.submit_import(request, folder_url, recursive)
    except ApiError as exc:
        if exc.status_code != 422:
            raise
        # Shown again as typed, less what no page can hold.
        shown = folder_url[:MAX_URL_CHARS].replace("\x00", "").encode("utf-8", "replace").decode()
        return await _home(request, status=422, error=exc.message, folder_url=shown, recursive=recursive, watch=watch)
    return see_other(request, f"/ui/imports/{row['id']}")


# --- one import: progress, failures, retry and cancel ---------------------------------------------


def _id(request: web.Request) -> int:
    return path_id(request, message="There is no such page.")


def progress_context(imp: dict[str, Any]) -> dict[str, Any]:
    """import_json plus what the progress bar and the badges need."""
    counts = imp["counts"]
    found = counts["found"]
    # Deduplicated and unchanged files are done too: everything found but what is still pending.
    done = found - counts["pending"]
    active = imp["status"] in statuses.ACTIVE
    return {
        **imp,
        "active": active,
        "done": done,
        "percent": (100 if not active else 0) if not found else min(100, done * 100 // found),
        "can_retry": counts["failed"] > 0 and imp["status"] in statuses.RETRYABLE,
        # The folder's name arrives with the listing; until then, its id.
        "title": imp["folder_name"] or f"{source_label(imp['source'])} folder {imp['folder_id']}",
        "drive_link": imp["folder_url"] if imp["folder_url"].startswith(("https://", "http://")) else None,
    }


async def _failures(request: web.Request, import_id: int, cursor: str | None) -> dict[str, Any]:
    after = decode_cursor(cursor) if cursor else 0
    # One row more than shown tells whether a next page exists.
    rows = await request.app[DB].fetch(
        """SELECT id, name, folder_path, mime_type, size_bytes, attempts, error_code, error_message
           FROM import_items WHERE import_id = $1 AND status = 'failed' AND id > $2
           ORDER BY id LIMIT $3""",
        import_id,
        after,
        FAILURES_PAGE + 1,
    )
    page: list[asyncpg.Record] = list(rows[:FAILURES_PAGE])
    next_cursor = encode_cursor(page[-1]["id"]) if len(rows) > FAILURES_PAGE else None
    return {"failures": page, "next_cursor": next_cursor, "cursor": cursor}


def _notice(request: web.Request) -> str | None:
    # Built from numbers only: the query string never reaches the page as text.
    if (n := parse_count(request.query.get("retried", ""))) is not None:
        return f"{n} failed file{'' if n == 1 else 's'} queued again." if n else "There was nothing to retry."
    if request.query.get("cancelled") == "1":
        return "The import was cancelled."
    if request.query.get("cancelled") == "0":
        return "The import had already finished."
    return None


async def import_page(request: web.Request) -> web.Response:
    import_id = _id(request)
    imp = progress_context(Import.from_row(await api.fetch_import(request, import_id)).body())
    failures = await _failures(request, import_id, request.query.get("failures_cursor") or None)
    removed = await sync_parts.removed_list(request, imp, request.query.get("removed_cursor") or None)
    return render(request, "import.html", imp=imp, notice=_notice(request), removed=removed, **failures)


async def progress_fragment(request: web.Request) -> web.Response:
    import_id = _id(request)
    imp = progress_context(Import.from_row(await api.fetch_import(request, import_id)).body())
    # live=1: asked for by live.js on a Server-Sent Event, so the fragment need not poll.
    response = render(request, "_progress.html", imp=imp, oob_title=True, live=request.query.get("live") == "1")
    seen = parse_count(request.query.get("seen_failed", ""))
    # Only an active import is polled, so a finished one here has just finished: its failures list
    # (below the bar, outside this fragment) reloads itself on this event, as on any new failure.
    if not imp["active"] or (seen is not None and seen != imp["counts"]["failed"]):
        response.headers["HX-Trigger"] = "failures-changed"
    return response


async def failures_fragment(request: web.Request) -> web.Response:
    import_id = _id(request)
    imp = progress_context(Import.from_row(await api.fetch_import(request, import_id)).body())
    failures = await _failures(request, import_id, request.query.get("cursor") or None)
    return render(request, "_failures.html", imp=imp, **failures)


async def retry(request: web.Request) -> web.Response:
    import_id = _id(request)
    await checked_form(request)
    require_unlocked(request)
    count = await control.retry_failed(request.app[DB], request.app[ARQ], import_id, request.app[SETTINGS])
    if count is None:
        raise ApiError(404, "not_found", f"There is no import {import_id}.")
    return see_other(request, f"/ui/imports/{import_id}?retried={count}")


async def cancel(request: web.Request) -> web.Response:
    import_id = _id(request)
    await checked_form(request)
    require_unlocked(request)
    status, stopped = await control.cancel_import(request.app[DB], request.app[SETTINGS], import_id)
    if status is None:
        raise ApiError(404, "not_found", f"There is no import {import_id}.")
    return see_other(request, f"/ui/imports/{import_id}?cancelled={int(stopped)}")


# --- gallery and image view -----------------------------------------------------------------------


def _fit(width: int | None, height: int | None, box: int) -> tuple[int, int]:
    """The thumbnail's own size (long side `box`), so the page reserves the right space before it loads."""
    if not width or not height:
        return box, box
    scale = min(1.0, box / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def _tile(row: asyncpg.Record, box: int) -> dict[str, Any]:
    image = Image.from_row(row).body()
    width, height = _fit(image["width"], image["height"], box)
    return {**image, "thumb_width": width, "thumb_height": height}


def _limit(raw: str | None) -> int:
    if not raw:
        return GRID_PAGE
    limit = parse_count(raw)
    if limit is None or not 1 <= limit <= GRID_PAGE_MAX:
        raise ApiError(400, "invalid_parameter", f"'limit' must be between 1 and {GRID_PAGE_MAX}.")
    return limit


async def _grid(request: web.Request) -> dict[str, Any]:
    limit = _limit(request.query.get("limit"))
    rows, next_cursor = await api.query_images(request, limit, page=True)
    box = request.app[SETTINGS].thumbnail_px
    filters = {k: request.query[k] for k in ("q", "import_id", "source") if request.query.get(k)}
    if limit != GRID_PAGE:
        filters["limit"] = str(limit)
    next_page = next_grid = None
    if next_cursor:
        query = urlencode({**filters, "cursor": next_cursor})
        next_page, next_grid = f"/ui/gallery?{query}", f"/ui/gallery/_grid?{query}"
    return {"tiles": [_tile(r, box) for r in rows], "next_page": next_page, "next_grid": next_grid, "filters": filters}


async def gallery(request: web.Request) -> web.Response:
    grid = await _grid(request)
    imports = await request.app[DB].fetch(
        "SELECT id, folder_name, folder_id FROM imports ORDER BY id DESC LIMIT $1", FILTER_IMPORTS
    )
    first_page = "/ui/gallery?" + urlencode(grid["filters"])
    return render(
        request,
        "gallery.html",
        imports=imports,
        q=request.query.get("q", ""),
        import_id=request.query.get("import_id", ""),
        paged=bool(request.query.get("cursor")),
        first_page=first_page.rstrip("?"),
        **grid,
    )


async def grid_fragment(request: web.Request) -> web.Response:
    return render(request, "_grid.html", **await _grid(request))


async def image_page(request: web.Request) -> web.Response:
    image = Image.from_row(await api.fetch_image(request)).body()
    # Shown inline only when something could read it as an image (Drive or our thumbnailer): a
    # "JPEG" that is really text would otherwise be a broken image.
    image["inline"] = image["mime_type"] in api.INLINE_TYPES and bool(
        image["thumbnail_url"] or (image["width"] and image["height"])
    )
    return render(request, "image.html", image=image)


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/", home, name="home")
    app.router.add_get("/ui/_imports", imports_fragment, name="ui_imports_fragment")
    app.router.add_post("/ui/imports", submit, name="ui_submit")
    app.router.add_get("/ui/imports/{id}", import_page, name="ui_import")
    app.router.add_get("/ui/imports/{id}/_progress", progress_fragment, name="ui_progress")
    app.router.add_get("/ui/imports/{id}/_failures", failures_fragment, name="ui_failures")
    app.router.add_post("/ui/imports/{id}/retry", retry, name="ui_retry")
    app.router.add_post("/ui/imports/{id}/cancel", cancel, name="ui_cancel")
    app.router.add_get("/ui/gallery", gallery, name="ui_gallery")
    app.router.add_get("/ui/gallery/_grid", grid_fragment, name="ui_grid")
    app.router.add_get("/ui/images/{id}", image_page, name="ui_image")
    app.router.add_get("/ui/unlock", unlock_page, name="ui_unlock_page")
    app.router.add_post("/ui/unlock", unlock, name="ui_unlock")
    app.router.add_post("/ui/lock", lock, name="ui_lock")
    # Without the folder (an install without the source tree) the pages still work, unstyled.
    if folder("static").is_dir():
        app.router.add_static("/static/", folder("static"), name="static")
