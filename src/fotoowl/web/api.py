"""The JSON API. Every error, from any route, has the shape {"error": {"code", "message"}}."""

from __future__ import annotations

import hmac
import logging
from collections.abc import AsyncGenerator
from datetime import UTC, datetime
from typing import Any

import asyncpg
from aiohttp import web

from fotoowl import importer
from fotoowl.drive import InvalidFolderLink, parse_folder_link
from fotoowl.storage import ObjectNotFound
from fotoowl.web.app import ARQ, DB, SETTINGS, STORAGE
from fotoowl.web.errors import ApiError
from fotoowl.web.params import (
    INT64_MAX,
    decode_cursor,
    encode_cursor,
    int_param,
    json_object,
    path_id,
    storable,
    text_param,
)

log = logging.getLogger("fotoowl.web")

MAX_URL_CHARS = 2000
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


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value else None


# --- imports ------------------------------------------------------------------------------------

async def start_import(request: web.Request) -> web.Response:
    require_token(request)
    body = await json_object(request)
    folder_url = body.get("folder_url")
    recursive = body.get("recursive", True)
    if folder_url is None:
        raise ApiError(422, "missing_field", "'folder_url' is required.")
    if not isinstance(folder_url, str):
        raise ApiError(422, "invalid_field", "'folder_url' must be a string.")
    if not isinstance(recursive, bool):
        raise ApiError(422, "invalid_field", "'recursive' must be true or false.")
    row = await submit_import(request, folder_url, recursive)
    return web.json_response(
        {"import_id": row["id"], "status": row["status"], "status_url": f"/imports/{row['id']}"},
        status=202,
        headers={"Location": f"/imports/{row['id']}"},
    )


async def submit_import(request: web.Request, folder_url: str, recursive: bool) -> asyncpg.Record:
    """Shared by the JSON API and the HTML form: validate the link, record the import, queue listing."""
    if len(folder_url) > MAX_URL_CHARS:
        raise ApiError(422, "invalid_folder_url", f"'folder_url' is longer than {MAX_URL_CHARS} characters.")
    if not storable(folder_url):
        raise ApiError(422, "invalid_folder_url", "The link contains a character no link has (NUL).")
    try:
        ref = parse_folder_link(folder_url)
    except InvalidFolderLink as exc:
        raise ApiError(422, "invalid_folder_url", str(exc)) from None
    row = await importer.create_import(request.app[DB], request.app[ARQ], ref, folder_url.strip(),
                                       recursive=recursive)
    log.info("import queued", extra={"import_id": row["id"], "folder_id": ref.folder_id})
    return row


def import_json(row: asyncpg.Record) -> dict[str, Any]:
    found, imported, skipped, failed = (row["found_count"], row["imported_count"], row["skipped_count"],
                                        row["failed_count"])
    pending = max(0, found - imported - skipped - failed)
    rate_files_per_s = rate_bytes_per_s = eta_s = None
    started: datetime | None = row["started_at"]
    if started is not None and imported:
        end = row["finished_at"] or datetime.now(UTC)
        elapsed_s = max((end - started).total_seconds(), 0.001)
        rate_files_per_s = round(imported / elapsed_s, 2)
        rate_bytes_per_s = round(row["bytes_imported"] / elapsed_s)
        if row["status"] in importer.ACTIVE and pending:
            eta_s = round(pending / rate_files_per_s, 1)
    error = ({"code": row["error_code"], "message": row["error_message"]} if row["error_code"] else None)
    return {
        "id": row["id"],
        "source": row["source"],
        "folder_id": row["folder_id"],
        "folder_url": row["folder_url"],
        "folder_name": row["folder_name"],
        "recursive": row["recursive"],
        "status": row["status"],
        "counts": {"found": found, "imported": imported, "skipped": skipped, "failed": failed,
                   "pending": pending},
        "bytes": {"found": row["bytes_found"], "imported": row["bytes_imported"]},
        "rate": {"files_per_s": rate_files_per_s, "bytes_per_s": rate_bytes_per_s},
        "eta_s": eta_s,
        "error": error,
        "created_at": _iso(row["created_at"]),
        "started_at": _iso(row["started_at"]),
        "finished_at": _iso(row["finished_at"]),
        "urls": {"self": f"/imports/{row['id']}", "failures": f"/imports/{row['id']}/failures",
                 "images": f"/images?import_id={row['id']}", "page": f"/ui/imports/{row['id']}"},
    }


async def fetch_import(request: web.Request, import_id: int) -> asyncpg.Record:
    row = await request.app[DB].fetchrow("SELECT * FROM imports WHERE id = $1", import_id)
    if row is None:
        raise ApiError(404, "not_found", f"There is no import {import_id}.")
    return row


async def get_import(request: web.Request) -> web.Response:
    return web.json_response(import_json(await fetch_import(request, path_id(request))))


async def list_imports(request: web.Request) -> web.Response:
    limit = int_param(request, "limit", 50, hi=MAX_PAGE)
    cursor = request.query.get("cursor")
    before = decode_cursor(cursor) if cursor else 2**62
    rows = await request.app[DB].fetch(
        "SELECT * FROM imports WHERE id < $1 ORDER BY id DESC LIMIT $2", before, limit)
    next_cursor = encode_cursor(rows[-1]["id"]) if rows and len(rows) == limit else None
    return web.json_response({"imports": [import_json(r) for r in rows], "next_cursor": next_cursor})


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
        import_id, after, limit,
    )
    failures = [{
        "file_id": r["file_id"], "name": r["name"], "folder_path": r["folder_path"],
        "mime_type": r["mime_type"], "size": r["size_bytes"], "attempts": r["attempts"],
        "error": {"code": r["error_code"], "message": r["error_message"]}, "failed_at": _iso(r["updated_at"]),
    } for r in rows]
    next_cursor = encode_cursor(rows[-1]["id"]) if rows and len(rows) == limit else None
    return web.json_response({"failures": failures, "next_cursor": next_cursor})


async def retry_import(request: web.Request) -> web.Response:
    require_token(request)
    # No body needed, but the JSON type all the same: an HTML form cannot send it cross-site.
    await json_object(request, optional=True)
    import_id = path_id(request)
    count = await importer.retry_failed(request.app[DB], request.app[ARQ], import_id,
                                        request.app[SETTINGS])
    if count is None:
        raise ApiError(404, "not_found", f"There is no import {import_id}.")
    row = await fetch_import(request, import_id)
    return web.json_response({"import_id": import_id, "requeued": count, "status": row["status"]},
                             status=202)


async def cancel_import(request: web.Request) -> web.Response:
    require_token(request)
    await json_object(request, optional=True)
    import_id = path_id(request)
    status, stopped = await importer.cancel_import(request.app[DB], import_id)
    if status is None:
        raise ApiError(404, "not_found", f"There is no import {import_id}.")
    if not stopped:
        raise ApiError(409, "already_finished", f"Import {import_id} has already finished ({status}).")
    return web.json_response({"import_id": import_id, "status": status}, status=202)


# --- images -------------------------------------------------------------------------------------

def image_json(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        "google_drive_id": row["google_drive_id"],
        "size": row["size"],
        "mime_type": row["mime_type"],
        "storage_path": row["storage_path"],
        "source": row["source"],
        "md5": row["md5"],
        "width": row["width"],
        "height": row["height"],
        "taken_time": row["taken_time"],
        "camera": {"make": row["camera_make"], "model": row["camera_model"]},
        "folder_path": row["folder_path"],
        "import_id": row["import_id"],
        "imported_at": _iso(row["imported_at"]),
        "drive_created_at": _iso(row["drive_created_at"]),
        "drive_modified_at": _iso(row["drive_modified_at"]),
        "url": f"/images/{row['id']}/content",
        "thumbnail_url": f"/images/{row['id']}/thumbnail" if row["thumbnail_key"] else None,
    }


async def query_images(
    request: web.Request, limit: int, *, page: bool = False
) -> tuple[list[asyncpg.Record], str | None]:
    """Newest first, keyset-paginated; shared with the gallery `page`."""
    where = ["id < $1"]
    cursor = request.query.get("cursor")
    args: list[Any] = [decode_cursor(cursor) if cursor else 2**62]
    import_id = int_param(request, "import_id", hi=INT64_MAX, blank_is_absent=page)
    if import_id is not None:
        args.append(import_id)
        where.append(f"import_id = ${len(args)}")
    if source := text_param(request, "source"):
        args.append(source)
        where.append(f"source = ${len(args)}")
    if mime_type := text_param(request, "mime_type"):
        args.append(mime_type)
        where.append(f"mime_type = ${len(args)}")
    if folder := text_param(request, "folder"):
        folder = folder.strip("/")
        args.append(folder)
        like = folder.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "/%"
        args.append(like)
        where.append(f"(folder_path = ${len(args) - 1} OR folder_path LIKE ${len(args)})")
    if q := text_param(request, "q").strip():
        if len(q) > MAX_QUERY_CHARS:
            raise ApiError(400, "invalid_parameter", f"'q' is longer than {MAX_QUERY_CHARS} characters.")
        args.append("%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%")
        where.append(f"name ILIKE ${len(args)}")
    args.append(limit)
    rows = await request.app[DB].fetch(
        f"SELECT * FROM images WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT ${len(args)}", *args)
    next_cursor = encode_cursor(rows[-1]["id"]) if rows and len(rows) == limit else None
    return list(rows), next_cursor


async def list_images(request: web.Request) -> web.Response:
    limit = int_param(request, "limit", 100, hi=MAX_PAGE)
    assert limit is not None
    rows, next_cursor = await query_images(request, limit)
    return web.json_response({"images": [image_json(r) for r in rows], "next_cursor": next_cursor})


async def fetch_image(request: web.Request) -> asyncpg.Record:
    image_id = path_id(request)
    row = await request.app[DB].fetchrow("SELECT * FROM images WHERE id = $1", image_id)
    if row is None:
        raise ApiError(404, "not_found", f"There is no image {image_id}.")
    return row


async def get_image(request: web.Request) -> web.Response:
    return web.json_response(image_json(await fetch_image(request)))


async def image_content(request: web.Request) -> web.StreamResponse:
    row = await fetch_image(request)
    return await _serve_object(request, row["storage_key"], row["mime_type"], row["name"])


async def image_thumbnail(request: web.Request) -> web.StreamResponse:
    row = await fetch_image(request)
    if not row["thumbnail_key"]:
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
        url = await storage.presigned_url(key, expires_s=300, content_type=content_type,
                                          disposition=disposition)
        if url:
            raise web.HTTPFound(url, headers={"Cache-Control": "no-store"})
    try:
        size = await storage.size(key)
    except ObjectNotFound:
        raise ApiError(404, "object_missing", "The stored object is missing from storage.") from None
    response = web.StreamResponse(headers={
        "Content-Type": content_type,
        "Content-Length": str(size),
        "Content-Disposition": disposition,
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "default-src 'none'; sandbox",
        "Cache-Control": "private, max-age=3600",
    })
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
    app.router.add_post("/import/google-drive", start_import, name="start_import")
    app.router.add_get("/imports", list_imports, name="list_imports")
    app.router.add_get("/imports/{id}", get_import, name="get_import")
    app.router.add_get("/imports/{id}/failures", list_failures, name="list_failures")
    app.router.add_post("/imports/{id}/retry", retry_import, name="retry_import")
    app.router.add_post("/imports/{id}/cancel", cancel_import, name="cancel_import")
    app.router.add_get("/images", list_images, name="list_images")
    app.router.add_get("/images/{id}", get_image, name="get_image")
    app.router.add_get("/images/{id}/content", image_content, name="image_content")
    app.router.add_get("/images/{id}/thumbnail", image_thumbnail, name="image_thumbnail")
