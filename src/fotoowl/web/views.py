"""HTML pages (Jinja, autoescaped) and the partials htmx swaps in.

Every page works without JavaScript: forms post and redirect (303), live fragments fall back to a
meta refresh, infinite scroll falls back to a "More" link. htmx only swaps fragments in place.

Write actions (import, retry, cancel) need the CSRF token of the client's cookie in the form and,
when FOTOOWL_API_TOKEN is set, an "unlocked" UI: the user typed the token once at /ui/unlock and
holds a cookie derived from it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime
from functools import lru_cache
from typing import Any
from urllib.parse import urlencode, urlsplit

import asyncpg
import jinja2
from aiohttp import web

from fotoowl import importer
from fotoowl.web import api
from fotoowl.web.app import ARQ, DB, DEMO_FOLDER_URL, SETTINGS, TEMPLATES, static_dir, templates_dir

CSRF_COOKIE = "fotoowl_csrf"
CSRF_FIELD = "csrf_token"
UNLOCK_COOKIE = "fotoowl_unlock"
UNLOCK_MAX_AGE_S = 30 * 24 * 3600
RECENT_IMPORTS = 20
GRID_PAGE = 48
GRID_PAGE_MAX = 120
FAILURES_PAGE = 50
FILTER_IMPORTS = 100

_CSRF = web.RequestKey("csrf_token", str)
_CSRF_IS_NEW = web.RequestKey("csrf_is_new", bool)

STATUS_LABELS = {
    "queued": "Queued",
    "listing": "Listing files",
    "running": "Copying",
    "completed": "Completed",
    "completed_with_errors": "Completed with errors",
    "failed": "Failed",
    "cancelled": "Cancelled",
}
_KIND_LABELS = {
    "jpeg": "JPEG",
    "svg+xml": "SVG",
    "vnd.adobe.photoshop": "PSD",
    "vnd.microsoft.icon": "ICO",
    "x-icon": "ICO",
    "octet-stream": "FILE",
}


# --- templates ----------------------------------------------------------------------------------


def make_templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(templates_dir()),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        enable_async=False,
    )
    env.filters.update(
        bytes=format_bytes,
        duration=format_duration,
        when=format_when,
        kind=file_kind,
        status_label=lambda status: STATUS_LABELS.get(status, status),
    )
    env.globals.update(static=static_url, htmx=(static_dir() / "vendor" / "htmx.min.js").is_file())
    return env


@lru_cache(maxsize=64)
def static_url(name: str) -> str:
    """A URL with a content hash, so browsers may cache assets and still see a changed file."""
    try:
        digest = hashlib.sha256((static_dir() / name).read_bytes()).hexdigest()[:10]
    except OSError:
        return f"/static/{name}"
    return f"/static/{name}?v={digest}"


def format_bytes(value: int | None) -> str:
    if value is None:
        return "—"
    size = float(value)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    total = round(seconds)
    if total < 60:
        return f"{total} s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def format_when(iso: str | None) -> str:
    if not iso:
        return "—"
    return datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M:%S UTC")


def file_kind(mime_type: str) -> str:
    """A short label such as JPEG or HEIC for placeholders of images without a preview."""
    subtype = mime_type.partition("/")[2].lower()
    if subtype in _KIND_LABELS:
        return _KIND_LABELS[subtype]
    subtype = subtype.removeprefix("x-").split("+")[0]
    label = subtype.replace(".", "-").rsplit("-", 1)[-1].upper()
    return label[:5] if label else "FILE"


# --- rendering ----------------------------------------------------------------------------------


def csrf_token(request: web.Request) -> str:
    """The client's token from its cookie, or a new one that `render` will set as the cookie."""
    if _CSRF in request:
        return request[_CSRF]
    token = request.cookies.get(CSRF_COOKIE, "")
    is_new = not (32 <= len(token) <= 128 and token.isascii())
    if is_new:
        token = secrets.token_urlsafe(32)
    request[_CSRF] = token
    request[_CSRF_IS_NEW] = is_new
    return token


def _finish(request: web.Request, response: web.Response) -> web.Response:
    if request.get(_CSRF_IS_NEW):
        response.set_cookie(CSRF_COOKIE, request[_CSRF], httponly=True, samesite="Lax", path="/", secure=request.secure)
    # Live status and per-client tokens: never serve a page from a cache.
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Content-Security-Policy"] = _csp(request)
    return response


def _csp(request: web.Request) -> str:
    # Defence in depth behind autoescaping: no inline script, nothing from other origins, except
    # presigned image URLs pointing at the S3 endpoint.
    img_src = "'self' data:"
    settings = request.app[SETTINGS]
    if settings.presign_downloads:
        endpoint = urlsplit(settings.s3_endpoint_url)
        img_src += f" {endpoint.scheme}://{endpoint.netloc}" if endpoint.netloc else " https:"
    return (
        f"default-src 'self'; img-src {img_src}; script-src 'self'; style-src 'self'; "
        "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )


def render(request: web.Request, template: str, status: int = 200, **context: object) -> web.Response:
    html = (
        request.app[TEMPLATES]
        .get_template(template)
        .render(
            request=request,
            csrf_token=csrf_token(request),
            csrf_field=CSRF_FIELD,
            token_required=bool(request.app[SETTINGS].api_token),
            unlocked=is_unlocked(request),
            **context,
        )
    )
    return _finish(request, web.Response(text=html, status=status, content_type="text/html"))


def render_error(request: web.Request, status: int, message: str) -> web.Response:
    return render(request, "error.html", status=status, status_code=status, message=message)


def see_other(request: web.Request, location: str) -> web.Response:
    """A 303 after a POST (returned, not raised, so cookies set on it survive)."""
    response = web.Response(status=303, headers={"Location": location})
    return _finish(request, response)


# --- CSRF and the access token --------------------------------------------------------------------


async def checked_form(request: web.Request) -> dict[str, str]:
    """The POSTed text fields, once their CSRF token matches the cookie's; 403 otherwise."""
    form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
    cookie = request.cookies.get(CSRF_COOKIE, "")
    sent = form.get(CSRF_FIELD, "")
    if not (cookie and hmac.compare_digest(cookie.encode(), sent.encode())):
        raise api.ApiError(
            403,
            "csrf_failed",
            "This form has expired or came from another site. Go back, reload the page and try again.",
        )
    return form


def _unlock_value(token: str) -> str:
    # Derived from, never equal to, the token: a leaked cookie does not reveal the API token, and
    # changing the token locks every browser out again.
    return hmac.new(token.encode(), b"fotoowl-ui-unlock-v1", hashlib.sha256).hexdigest()


def is_unlocked(request: web.Request) -> bool:
    token = request.app[SETTINGS].api_token
    if not token:
        return True
    cookie = request.cookies.get(UNLOCK_COOKIE, "")
    return hmac.compare_digest(cookie.encode(), _unlock_value(token.get()).encode())


def require_unlocked(request: web.Request) -> None:
    if not is_unlocked(request):
        raise api.ApiError(
            401,
            "unauthorized",
            "This server needs its access token (FOTOOWL_API_TOKEN) before it imports, retries or cancels anything.",
        )


def _local_path(value: str | None) -> str:
    """Only same-site paths as redirect targets: no open redirect through ?next=."""
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/"


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
        _unlock_value(token.get()),
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
    return [progress_context(api.import_json(row)) for row in rows]


async def _home(
    request: web.Request, *, status: int = 200, error: str | None = None, folder_url: str = "", recursive: bool = True
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
        demo_folder_url=_demo_folder_url(request.app),
    )


def _demo_folder_url(app: web.Application) -> str | None:
    # Set only by `fotoowl dev` in demo mode (mypy cannot pick Application.get's overload here).
    if DEMO_FOLDER_URL in app:
        return app[DEMO_FOLDER_URL]
    return None


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
    try:
        row = await api.submit_import(request, folder_url, recursive)
    except api.ApiError as exc:
        if exc.status_code != 422:
            raise
        return await _home(
            request, status=422, error=exc.message, folder_url=folder_url[: api.MAX_URL_CHARS], recursive=recursive
        )
    return see_other(request, f"/ui/imports/{row['id']}")


# --- one import: progress, failures, retry and cancel ---------------------------------------------


def _id(request: web.Request) -> int:
    try:
        value = int(request.match_info["id"])
    except ValueError:
        raise api.ApiError(404, "not_found", "There is no such page.") from None
    if not 1 <= value < 2**63:
        raise api.ApiError(404, "not_found", "There is no such page.")
    return value


def progress_context(imp: dict[str, Any]) -> dict[str, Any]:
    """import_json plus what the progress bar and the badges need."""
    counts = imp["counts"]
    done = counts["imported"] + counts["skipped"] + counts["failed"]
    found = counts["found"]
    active = imp["status"] in importer.ACTIVE
    return {
        **imp,
        "active": active,
        "done": done,
        "percent": (100 if not active else 0) if not found else min(100, done * 100 // found),
        "can_retry": counts["failed"] > 0 and imp["status"] in ("listing", "running", "completed_with_errors"),
        # The folder's name arrives with the listing; until then, its id.
        "title": imp["folder_name"] or f"Drive folder {imp['folder_id']}",
        "drive_link": imp["folder_url"] if imp["folder_url"].startswith(("https://", "http://")) else None,
    }


async def _failures(request: web.Request, import_id: int, cursor: str | None) -> dict[str, Any]:
    after = api.decode_cursor(cursor) if cursor else 0
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
    next_cursor = api.encode_cursor(page[-1]["id"]) if len(rows) > FAILURES_PAGE else None
    return {"failures": page, "next_cursor": next_cursor, "cursor": cursor}


def _notice(request: web.Request) -> str | None:
    # Built from numbers only: the query string never reaches the page as text.
    if (retried := request.query.get("retried", "")).isdigit():
        n = int(retried)
        return f"{n} failed file{'' if n == 1 else 's'} queued again." if n else "There was nothing to retry."
    if request.query.get("cancelled") == "1":
        return "The import was cancelled."
    if request.query.get("cancelled") == "0":
        return "The import had already finished."
    return None


async def import_page(request: web.Request) -> web.Response:
    import_id = _id(request)
    imp = progress_context(api.import_json(await api.fetch_import(request, import_id)))
    failures = await _failures(request, import_id, request.query.get("failures_cursor") or None)
    return render(request, "import.html", imp=imp, notice=_notice(request), **failures)


async def progress_fragment(request: web.Request) -> web.Response:
    import_id = _id(request)
    imp = progress_context(api.import_json(await api.fetch_import(request, import_id)))
    response = render(request, "_progress.html", imp=imp, oob_title=True)
    seen = request.query.get("seen_failed", "")
    # Only an active import is polled, so a finished one here has just finished: its failures list
    # (below the bar, outside this fragment) reloads itself on this event, as on any new failure.
    if not imp["active"] or (seen.isdigit() and int(seen) != imp["counts"]["failed"]):
        response.headers["HX-Trigger"] = "failures-changed"
    return response


async def failures_fragment(request: web.Request) -> web.Response:
    import_id = _id(request)
    imp = progress_context(api.import_json(await api.fetch_import(request, import_id)))
    failures = await _failures(request, import_id, request.query.get("cursor") or None)
    return render(request, "_failures.html", imp=imp, **failures)


async def retry(request: web.Request) -> web.Response:
    import_id = _id(request)
    await checked_form(request)
    require_unlocked(request)
    count = await importer.retry_failed(request.app[DB], request.app[ARQ], import_id)
    if count is None:
        raise api.ApiError(404, "not_found", f"There is no import {import_id}.")
    return see_other(request, f"/ui/imports/{import_id}?retried={count}")


async def cancel(request: web.Request) -> web.Response:
    import_id = _id(request)
    await checked_form(request)
    require_unlocked(request)
    status, stopped = await importer.cancel_import(request.app[DB], import_id)
    if status is None:
        raise api.ApiError(404, "not_found", f"There is no import {import_id}.")
    return see_other(request, f"/ui/imports/{import_id}?cancelled={int(stopped)}")


# --- gallery and image view -----------------------------------------------------------------------


def _fit(width: int | None, height: int | None, box: int) -> tuple[int, int]:
    """The thumbnail's own size (long side `box`), so the page reserves the right space before it loads."""
    if not width or not height:
        return box, box
    scale = min(1.0, box / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def _tile(row: asyncpg.Record, box: int) -> dict[str, Any]:
    image = api.image_json(row)
    width, height = _fit(image["width"], image["height"], box)
    return {**image, "thumb_width": width, "thumb_height": height}


def _limit(raw: str | None) -> int:
    if not raw:
        return GRID_PAGE
    if not raw.isdigit() or not 1 <= int(raw) <= GRID_PAGE_MAX:
        raise api.ApiError(400, "invalid_parameter", f"'limit' must be between 1 and {GRID_PAGE_MAX}.")
    return int(raw)


async def _grid(request: web.Request) -> dict[str, Any]:
    limit = _limit(request.query.get("limit"))
    rows, next_cursor = await api.query_images(request, limit)
    box = request.app[SETTINGS].thumbnail_px
    filters = {k: request.query[k] for k in ("q", "import_id") if request.query.get(k)}
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
    image = api.image_json(await api.fetch_image(request))
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
    if static_dir().is_dir():
        app.router.add_static("/static/", static_dir(), name="static")
