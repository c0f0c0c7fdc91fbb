"""The JSON API. Every error, from any route, has the shape {"error": {"code", "message"}}."""

from __future__ import annotations

import dataclasses
import hmac
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable

import asyncpg
from aiohttp import web

from fotoowl.callbacks import verify_callback_url
from fotoowl.models import (
    MAX_URL_CHARS,
    CancelAccepted,
    Failure,
    FailureList,
    Image,
    ImageList,
    ImageTotal,
    Import,
    ImportAccepted,
    ImportList,
    ImportRequest,
    RetryAccepted,
)
from fotoowl.pipeline import control
from fotoowl.sources.base import FolderLink, InvalidLink
from fotoowl.sources.links import parse_link
from fotoowl.storage import ObjectNotFound
from fotoowl.web.errors import ApiError
from fotoowl.web.image_query import ImageCriteria, count_images, fetch_images
from fotoowl.web.keys import ARQ, DB, SETTINGS, STORAGE
from fotoowl.web.params import (
    INT64_MAX,
    decode_cursor,
    encode_cursor,
    flag_param,
    int_param,
    json_object,
    parse_body,
    path_id,
    storable,
    text_param,
)

log = logging.getLogger("fotoowl.web")

MAX_PAGE = 500
MAX_QUERY_CHARS = 200
# Raster types every browser renders without running anything; the rest is served as a download.
INLINE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp", "image/avif", "image/bmp"})


def require_token(request: web.Request) -> None:
    token = request.app[SETTINGS].api_token
    if not token:
        return
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    # Header bytes that are not UTF-8 arrive as surrogate escapes; they must not make encode() fail.
    sent = value.strip().encode("utf-8", "surrogateescape")
    if scheme.lower() != "bearer" or not hmac.compare_digest(sent, token.get().encode()):
        raise ApiError(401, "unauthorized", "This endpoint needs 'Authorization: Bearer <FOTOOWL_API_TOKEN>'.")


# --- imports ------------------------------------------------------------------------------------


def _import_handler(source: str | None) -> Callable[[web.Request], Awaitable[web.Response]]:
    """POST /import/google-drive and /import/dropbox take that source's links; POST /imports takes any."""

    async def start_import(request: web.Request) -> web.Response:
        require_token(request)
        # An unusable link gets the code every unusable link gets, however it was found unusable.
        body = parse_body(ImportRequest, await json_object(request), value_codes={"folder_url": "invalid_folder_url"})
        row = await submit_import(
            request,
            body.folder_url,
            body.recursive,
            source=source,
            password=body.password,
            prune=body.prune,
            callback_url=body.callback_url,
        )
        accepted = ImportAccepted(import_id=row["id"], status=row["status"], status_url=f"/imports/{row['id']}")
        return web.json_response(accepted.body(), status=202, headers={"Location": accepted.status_url})

    return start_import


async def submit_import(
    request: web.Request,
    folder_url: str,
    recursive: bool,
    *,
    source: str | None = None,
    password: str | None = None,
    prune: bool = False,
    callback_url: str | None = None,
) -> asyncpg.Record:
    """Shared by the JSON API and the HTML form: validate the link, record the import, queue listing."""
    link = await checked_link(request, folder_url, source=source, password=password)
    if callback_url is not None:
        callback_url = await checked_callback(request, callback_url)
    reader = request.app[SETTINGS].drive_reader_in_use() if link.source == "google_drive" else None
    row = await control.create_import(
        request.app[DB],
        request.app[ARQ],
        link,
        recursive=recursive,
        reader=reader,
        prune=prune,
        callback_url=callback_url,
    )
    log.info("import queued", extra={"import_id": row["id"], "folder_id": link.folder_id, "source": link.source})
    return row


async def checked_callback(request: web.Request, callback_url: str) -> str:
    try:
        return await verify_callback_url(callback_url, request.app[SETTINGS])
    except ValueError as exc:
        raise ApiError(422, "invalid_callback_url", str(exc)) from None


async def checked_link(
    request: web.Request, folder_url: str, *, source: str | None = None, password: str | None = None
) -> FolderLink:
    """A pasted link as its source reads it, or a 422 saying why it is not usable."""
    if len(folder_url) > MAX_URL_CHARS:
        raise ApiError(422, "invalid_folder_url", f"'folder_url' is longer than {MAX_URL_CHARS} characters.")
    if not storable(folder_url) or (password is not None and not storable(password)):
        raise ApiError(422, "invalid_folder_url", "The link contains a character no link has (NUL).")
    try:
        link = parse_link(folder_url, source)
    except InvalidLink as exc:
        raise ApiError(422, "invalid_folder_url", str(exc)) from None
    if password:
        link = dataclasses.replace(link, password=password)
    return link


async def fetch_import(request: web.Request, import_id: int) -> asyncpg.Record:
    row = await request.app[DB].fetchrow("SELECT * FROM imports WHERE id = $1", import_id)
    if row is None:
        raise ApiError(404, "not_found", f"There is no import {import_id}.")
    return row


async def get_import(request: web.Request) -> web.Response:
    return web.json_response(Import.from_row(await fetch_import(request, path_id(request))).body())


async def list_imports(request: web.Request) -> web.Response:
    limit = int_param(request, "limit", 50, hi=MAX_PAGE)
    cursor = request.query.get("cursor")
    before = decode_cursor(cursor) if cursor else 2**62
    watch_id = int_param(request, "watch_id", hi=INT64_MAX)
    rows = await request.app[DB].fetch(
        """SELECT * FROM imports WHERE id < $1 AND ($3::bigint IS NULL OR watch_id = $3)
           ORDER BY id DESC LIMIT $2""",
        before,
        limit,
        watch_id,
    )
    next_cursor = encode_cursor(rows[-1]["id"]) if rows and len(rows) == limit else None
    return web.json_response(ImportList(imports=[Import.from_row(r) for r in rows], next_cursor=next_cursor).body())


async def list_failures(request: web.Request) -> web.Response:
    import_id = path_id(request)
    await fetch_import(request, import_id)
    limit = int_param(request, "limit", 100, hi=MAX_PAGE)
    cursor = request.query.get("cursor")
    after = decode_cursor(cursor) if cursor else 0
    rows = await request.app[DB].fetch(
        """SELECT id, file_id, name, folder_path, mime_type, size_bytes, attempts, error_code, error_message,
                  updated_at
           FROM import_items WHERE import_id = $1 AND status = 'failed' AND id > $2
           ORDER BY id LIMIT $3""",
        import_id,
        after,
        limit,
    )
    next_cursor = encode_cursor(rows[-1]["id"]) if rows and len(rows) == limit else None
    page = FailureList(failures=[Failure.from_row(r) for r in rows], next_cursor=next_cursor)
    return web.json_response(page.body())


async def retry_import(request: web.Request) -> web.Response:
    require_token(request)
    # No body needed, but the JSON type all the same: an HTML form cannot send it cross-site.
    await json_object(request, optional=True)
    import_id = path_id(request)
    count = await control.retry_failed(request.app[DB], request.app[ARQ], import_id, request.app[SETTINGS])
    if count is None:
        raise ApiError(404, "not_found", f"There is no import {import_id}.")
    row = await fetch_import(request, import_id)
    return web.json_response(
        RetryAccepted(import_id=import_id, requeued=count, status=row["status"]).body(), status=202
    )


async def cancel_import(request: web.Request) -> web.Response:
    require_token(request)
    await json_object(request, optional=True)
    import_id = path_id(request)
    status, stopped = await control.cancel_import(request.app[DB], request.app[SETTINGS], import_id)
    if status is None:
        raise ApiError(404, "not_found", f"There is no import {import_id}.")
    if not stopped:
        raise ApiError(409, "already_finished", f"Import {import_id} has already finished ({status}).")
    return web.json_response(CancelAccepted(import_id=import_id, status="cancelled").body(), status=202)


# --- images -------------------------------------------------------------------------------------


def image_criteria(request: web.Request, *, page: bool = False) -> ImageCriteria:
    """The filters of GET /images (and the gallery `page`) from the query string."""
    import_id = int_param(request, "import_id", hi=INT64_MAX, blank_is_absent=page)
    source, mime_type = text_param(request, "source"), text_param(request, "mime_type")
    # folder=/ stays a filter: the images at the top of their import's folder.
    folder = text_param(request, "folder").strip("/") if request.query.get("folder") else None
    if len(q := text_param(request, "q").strip()) > MAX_QUERY_CHARS:
        raise ApiError(400, "invalid_parameter", f"'q' is longer than {MAX_QUERY_CHARS} characters.")
    return ImageCriteria(import_id, source or None, mime_type or None, folder, q or None)


async def query_images(
    request: web.Request, limit: int, *, page: bool = False, filters: ImageCriteria | None = None
) -> tuple[list[asyncpg.Record], str | None]:
    """Newest first, keyset-paginated; shared with the gallery `page`. The SQL is image_query's."""
    cursor = request.query.get("cursor")
    before_id = decode_cursor(cursor) if cursor else INT64_MAX
    filters = filters or image_criteria(request, page=page)
    rows = await fetch_images(request.app[DB], filters, before_id=before_id, limit=limit)
    next_cursor = encode_cursor(rows[-1]["id"]) if rows and len(rows) == limit else None
    return rows, next_cursor


async def list_images(request: web.Request) -> web.Response:
    limit = int_param(request, "limit", 100, hi=MAX_PAGE)
    assert limit is not None
    filters, total = image_criteria(request), None
    if flag_param(request, "count"):
        counted = await count_images(request.app[DB], filters)
        total = ImageTotal(count=counted.count, exact=counted.exact)
    rows, next_cursor = await query_images(request, limit, filters=filters)
    images = [Image.from_row(r) for r in rows]
    return web.json_response(ImageList(images=images, next_cursor=next_cursor, total=total).body())


async def fetch_image(request: web.Request) -> asyncpg.Record:
    image_id = path_id(request)
    row = await request.app[DB].fetchrow("SELECT * FROM images WHERE id = $1", image_id)
    if row is None:
        raise ApiError(404, "not_found", f"There is no image {image_id}.")
    return row


async def get_image(request: web.Request) -> web.Response:
    return web.json_response(Image.from_row(await fetch_image(request)).body())


async def image_content(request: web.Request) -> web.StreamResponse:
    row = await fetch_image(request)
    return await _serve_object(request, row["storage_key"], row["mime_type"], row["name"])


async def image_thumbnail(request: web.Request) -> web.StreamResponse:
    row = await fetch_image(request)
    if not row["thumbnail_key"]:
        if row["preview_status"] == "pending":
            raise ApiError(404, "no_thumbnail", "This image's thumbnail is not made yet: previews follow the import.")
        raise ApiError(404, "no_thumbnail", "This image has no thumbnail (its format could not be decoded).")
    return await _serve_object(request, row["thumbnail_key"], "image/jpeg", row["name"] + ".jpg")


def _disposition(mime_type: str, name: str) -> str:
    kind = "inline" if mime_type in INLINE_TYPES else "attachment"
    ascii_name = "".join(c if 32 <= ord(c) < 127 and c not in '"\\;' else "_" for c in name) or "image"
    from urllib.parse import quote

    return f"{kind}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name)}"


async def _serve_object(request: web.Request, key: str, mime_type: str, name: str) -> web.StreamResponse:
    storage = request.app[STORAGE]
    settings = request.app[SETTINGS]
    content_type = mime_type if mime_type in INLINE_TYPES else "application/octet-stream"
    disposition = _disposition(mime_type, name)
    if settings.presign_downloads:
        url = await storage.presigned_url(key, expires_s=300, content_type=content_type, disposition=disposition)
        if url:
            raise web.HTTPFound(url, headers={"Cache-Control": "no-store"})
    try:
        size = await storage.size(key)
    except ObjectNotFound:
        raise ApiError(404, "object_missing", "The stored object is missing from storage.") from None
    response = web.StreamResponse(
        headers={
            "Content-Type": content_type,
            "Content-Length": str(size),
            "Content-Disposition": disposition,
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'; sandbox",
            "Cache-Control": "private, max-age=3600",
        }
    )
    await response.prepare(request)
    chunks = storage.stream(key)
    try:
        async for chunk in chunks:
            await response.write(chunk)
        await response.write_eof()
    except ConnectionResetError:  # aiohttp.ClientConnectionResetError is one too
        # A closed tab or a cancelled download: the normal end of a download nobody reads any more.
        log.debug("client went away mid-download", extra={"path": request.path})
    finally:
        # Now, not whenever the generator is collected: it holds a storage connection.
        if isinstance(chunks, AsyncGenerator):
            await chunks.aclose()
    return response


def setup_routes(app: web.Application) -> None:
    app.router.add_post("/imports", _import_handler(None), name="start_import_any")
    app.router.add_post("/import/google-drive", _import_handler("google_drive"), name="start_import")
    app.router.add_post("/import/dropbox", _import_handler("dropbox"), name="start_import_dropbox")
    app.router.add_get("/imports", list_imports, name="list_imports")
    app.router.add_get("/imports/{id}", get_import, name="get_import")
    app.router.add_get("/imports/{id}/failures", list_failures, name="list_failures")
    app.router.add_post("/imports/{id}/retry", retry_import, name="retry_import")
    app.router.add_post("/imports/{id}/cancel", cancel_import, name="cancel_import")
    app.router.add_get("/images", list_images, name="list_images")
    app.router.add_get("/images/{id}", get_image, name="get_image")
    app.router.add_get("/images/{id}/content", image_content, name="image_content")
    app.router.add_get("/images/{id}/thumbnail", image_thumbnail, name="image_thumbnail")
