"""Jinja templates (autoescaped everywhere) and the response helpers every page goes through."""

from __future__ import annotations

import hashlib
from datetime import datetime
from functools import lru_cache
from urllib.parse import urlsplit

import jinja2
from aiohttp import web

from fotoowl.resources import folder
from fotoowl.statuses import ImportStatus
from fotoowl.web.keys import SETTINGS, TEMPLATES
from fotoowl.web.security import CSRF_COOKIE, CSRF_FIELD, CSRF_IS_NEW, CSRF_SESSION, csrf_token, is_unlocked

STATUS_LABELS: dict[str, str] = {
    ImportStatus.QUEUED: "Queued",
    ImportStatus.LISTING: "Listing files",
    ImportStatus.RUNNING: "Copying",
    ImportStatus.COMPLETED: "Completed",
    ImportStatus.COMPLETED_WITH_ERRORS: "Completed with errors",
    ImportStatus.FAILED: "Failed",
    ImportStatus.CANCELLED: "Cancelled",
    ImportStatus.DELETING: "Deleting",
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


SOURCE_LABELS = {"google_drive": "Google Drive", "dropbox": "Dropbox"}


def source_label(source: str) -> str:
    return SOURCE_LABELS.get(source, source)


def make_templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(folder("templates")),
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
        source_label=source_label,
    )
    env.globals.update(static=static_url, htmx=(folder("static") / "vendor" / "htmx.min.js").is_file())
    return env


@lru_cache(maxsize=64)
def static_url(name: str) -> str:
    """A URL with a content hash, so browsers may cache assets and still see a changed file."""
    try:
        digest = hashlib.sha256((folder("static") / name).read_bytes()).hexdigest()[:10]
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


# --- responses ----------------------------------------------------------------------------------


def _finish(request: web.Request, response: web.Response) -> web.Response:
    if request.get(CSRF_IS_NEW):
        response.set_cookie(
            CSRF_COOKIE, request[CSRF_SESSION], httponly=True, samesite="Lax", path="/", secure=request.secure
        )
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
