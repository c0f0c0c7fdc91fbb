"""The OpenAPI 3.1 description of the JSON API, served at GET /openapi.json.

The schemas are generated from the pydantic models the handlers answer with (fotoowl.models); the
paths, parameters and error answers are a small table kept here. Schemas are strict (every field
required, no others allowed), so the tests that validate real answers against them catch any drift.
"""

from __future__ import annotations

import copy
import functools
import json
from importlib import metadata
from typing import Any

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from fotoowl.models import SCHEMA_MODELS, ImportRequest
from fotoowl.web.api import MAX_PAGE, MAX_QUERY_CHARS
from fotoowl.web.keys import SETTINGS
from fotoowl.web.openapi_examples import FAILURE_EXAMPLE, IMAGE_EXAMPLE, IMPORT_EXAMPLE
from fotoowl.web.params import INT64_MAX
from fotoowl.web.security import CROSS_SITE_MESSAGE

Schema = dict[str, Any]

JSON = "application/json"


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


STRING: Schema = {"type": "string"}
# What a URL may name: PostgreSQL's bigint.
ID_PARAM: Schema = {"type": "integer", "minimum": 1, "maximum": INT64_MAX}


def schemas() -> dict[str, Schema]:
    """Generated from the models in fotoowl.models: bodies as they are validated, answers as they are
    written (every field required, no other field allowed)."""
    pairs: list[tuple[type[BaseModel], JsonSchemaMode]] = [
        (model, "validation" if model is ImportRequest else "serialization") for model in SCHEMA_MODELS]
    _, top = models_json_schema(pairs, ref_template="#/components/schemas/{model}")
    return {name: _without_titles(schema) for name, schema in top["$defs"].items()}


def _without_titles(schema: Any) -> Any:
    """Pydantic titles every schema after its Python name; the document's names say it already."""
    if isinstance(schema, dict):
        return {k: _without_titles(v) for k, v in schema.items() if not (k == "title" and isinstance(v, str))}
    if isinstance(schema, list):
        return [_without_titles(v) for v in schema]
    return schema


# --- responses and parameters -------------------------------------------------------------------

def _error(description: str, code: str, message: str) -> Schema:
    return {"description": description,
            "content": {JSON: {"schema": _ref("Error"), "example": {"error": {"code": code, "message": message}}}}}


def _json(description: str, schema: str, example: Any = None) -> Schema:
    media: Schema = {"schema": _ref(schema)}
    if example is not None:
        media["example"] = example
    return {"description": description, "content": {JSON: media}}


RESPONSES: dict[str, Schema] = {
    "BadRequest": _error("A query parameter or the cursor is invalid (`invalid_parameter`, `invalid_cursor`), "
                         "or the body is not UTF-8 JSON (`invalid_json`).",
                         "invalid_parameter", f"'limit' must be between 1 and {MAX_PAGE}."),
    "Unauthorized": _error("FOTOOWL_API_TOKEN is set and the request has no matching bearer token.",
                           "unauthorized", "This endpoint needs 'Authorization: Bearer <FOTOOWL_API_TOKEN>'."),
    "NotFound": _error("There is no such resource.", "not_found", "There is no import 999999."),
    "TooLarge": _error("The request body is larger than 64 KiB.", "request_entity_too_large",
                       "Request Entity Too Large"),
    "CrossSite": _error("A browser sent this from another site: `Sec-Fetch-Site: cross-site`, or an `Origin` "
                        "other than this server's.", "csrf_failed", CROSS_SITE_MESSAGE),
    "NotJson": _error("The request is not sent as `Content-Type: application/json` (a write without a body "
                      "needs it too).", "unsupported_media_type",
                      "Send the request with 'Content-Type: application/json'."),
    "Internal": _error("An unexpected error; details are in the server's log.", "internal_error",
                       "Something went wrong on our side."),
}


def _limit(default: int) -> Schema:
    return {"name": "limit", "in": "query", "required": False, "description": "Page size.",
            "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": default}}


PARAMETERS: dict[str, Schema] = {
    "Id": {"name": "id", "in": "path", "required": True, "schema": ID_PARAM},
    "Cursor": {"name": "cursor", "in": "query", "required": False,
               "description": "`next_cursor` of the previous page.", "schema": STRING},
    "ImportFilter": {"name": "import_id", "in": "query", "required": False,
                     "description": "Only images stored by this import.", "schema": ID_PARAM},
    "SourceFilter": {"name": "source", "in": "query", "required": False, "schema": STRING,
                     "example": "google_drive"},
    "FolderFilter": {"name": "folder", "in": "query", "required": False, "schema": STRING,
                     "description": "Images in this folder (path relative to the import) and its subfolders.",
                     "example": "Ceremony"},
    "MimeTypeFilter": {"name": "mime_type", "in": "query", "required": False, "schema": STRING,
                       "example": "image/jpeg"},
    "NameSearch": {"name": "q", "in": "query", "required": False,
                   "description": "Case-insensitive substring of the file name.",
                   "schema": {"type": "string", "maxLength": MAX_QUERY_CHARS}},
}


def _param(name: str) -> Schema:
    return {"$ref": f"#/components/parameters/{name}"}


def _response(name: str) -> Schema:
    return {"$ref": f"#/components/responses/{name}"}


def _binary(description: str, media_types: list[str]) -> Schema:
    redirect = {"description": "With FOTOOWL_PRESIGN_DOWNLOADS on: a short-lived presigned URL to the object.",
                "headers": {"Location": {"schema": {"type": "string", "format": "uri"}}}}
    return {
        "200": {"description": description, "content": {media: {} for media in media_types},
                "headers": {"Content-Disposition": {"schema": STRING}}},
        "302": redirect,
        "404": _error("No such image, no thumbnail (`no_thumbnail`), or the object is missing from storage "
                      "(`object_missing`).", "not_found", "There is no image 999999."),
    }


def _no_body() -> Schema:
    return {"required": False,
            "description": "None needed (an empty body or `{}`), but sent as `application/json` all the same: "
                           "an HTML form on another site cannot send that type.",
            "content": {JSON: {"schema": {"type": "object", "description": "Ignored."}, "example": {}}}}


def _start_import(operation_id: str, summary: str, folder_url: str) -> Schema:
    return {
        "operationId": operation_id, "tags": ["imports"], "summary": summary,
        "requestBody": {"required": True, "content": {JSON: {
            "schema": _ref("ImportRequest"), "example": {"folder_url": folder_url, "recursive": True}}}},
        "responses": {
            "202": {**_json("Queued; poll `status_url`.", "ImportAccepted",
                            {"import_id": 42, "status": "queued", "status_url": "/imports/42"}),
                    "headers": {"Location": {"description": "The new import.", "schema": STRING}}},
            "422": _error("The body is JSON but unusable (`missing_field`, `invalid_field`, "
                          "`invalid_folder_url`).", "invalid_folder_url",
                          "Paste the link of a shared Google Drive or Dropbox folder."),
        },
    }


def _operations(auth_required: bool) -> dict[str, dict[str, Schema]]:
    def write(op: Schema) -> Schema:
        op["responses"].update({"400": _response("BadRequest"), "403": _response("CrossSite"),
                                "413": _response("TooLarge"), "415": _response("NotJson")})
        if auth_required:
            op["security"] = [{"bearerAuth": []}]
            op["responses"]["401"] = _response("Unauthorized")
        return op

    page = [_limit(100), _param("Cursor")]
    return {
        "/imports": {"post": write(_start_import(
            "start_import_any", "Import a shared folder; its source is recognised from the link",
            IMPORT_EXAMPLE["folder_url"])),
            "get": {
                "operationId": "list_imports", "tags": ["imports"], "summary": "Imports, newest first",
                "parameters": [_limit(50), _param("Cursor")],
                "responses": {"200": _json("A page of imports.", "ImportList",
                                           {"imports": [IMPORT_EXAMPLE], "next_cursor": None}),
                              "400": _response("BadRequest")},
            }},
        "/import/google-drive": {"post": write(_start_import(
            "start_import", "Import a public Google Drive folder", IMPORT_EXAMPLE["folder_url"]))},
        "/import/dropbox": {"post": write(_start_import(
            "start_import_dropbox", "Import a Dropbox shared folder",
            "https://www.dropbox.com/scl/fo/a1b2c3d4e5f6g7h8i9j0k/AAbbCCddEEff?rlkey=q1w2e3r4t5y6u7i8o9p0&dl=0"))},
        "/imports/{id}": {"get": {
            "operationId": "get_import", "tags": ["imports"], "summary": "An import's status and progress",
            "parameters": [_param("Id")],
            "responses": {"200": _json("The import.", "Import", IMPORT_EXAMPLE), "404": _response("NotFound")},
        }},
        "/imports/{id}/failures": {"get": {
            "operationId": "list_failures", "tags": ["imports"], "summary": "Files of an import that failed",
            "parameters": [_param("Id"), *page],
            "responses": {"200": _json("A page of failed files, oldest first.", "FailureList",
                                       {"failures": [FAILURE_EXAMPLE], "next_cursor": None}),
                          "400": _response("BadRequest"), "404": _response("NotFound")},
        }},
        "/imports/{id}/retry": {"post": write({
            "operationId": "retry_import", "tags": ["imports"], "summary": "Queue an import's failed files again",
            "parameters": [_param("Id")], "requestBody": _no_body(),
            "responses": {"202": _json("Requeued (0 when there was nothing to retry).", "RetryAccepted",
                                       {"import_id": 42, "requeued": 2, "status": "running"}),
                          "404": _response("NotFound")},
        })},
        "/imports/{id}/cancel": {"post": write({
            "operationId": "cancel_import", "tags": ["imports"], "summary": "Stop an active import",
            "parameters": [_param("Id")], "requestBody": _no_body(),
            "responses": {
                "202": _json("Cancelled; files in flight are abandoned within a second.", "CancelAccepted",
                             {"import_id": 42, "status": "cancelled"}),
                "404": _response("NotFound"),
                "409": _error("The import had already finished.", "already_finished",
                              "Import 42 has already finished (completed)."),
            },
        })},
        "/images": {"get": {
            "operationId": "list_images", "tags": ["images"], "summary": "Stored images, newest first",
            "parameters": [*page, _param("ImportFilter"), _param("SourceFilter"), _param("FolderFilter"),
                           _param("MimeTypeFilter"), _param("NameSearch")],
            "responses": {"200": _json("A page of images.", "ImageList",
                                       {"images": [IMAGE_EXAMPLE], "next_cursor": None}),
                          "400": _response("BadRequest")},
        }},
        "/images/{id}": {"get": {
            "operationId": "get_image", "tags": ["images"], "summary": "An image's metadata",
            "parameters": [_param("Id")],
            "responses": {"200": _json("The image.", "Image", IMAGE_EXAMPLE), "404": _response("NotFound")},
        }},
        "/images/{id}/content": {"get": {
            "operationId": "image_content", "tags": ["images"], "summary": "The original file",
            "description": "Raster types browsers render are served inline; anything else as a download.",
            "parameters": [_param("Id")],
            "responses": _binary("The original bytes.", ["image/*", "application/octet-stream"]),
        }},
        "/images/{id}/thumbnail": {"get": {
            "operationId": "image_thumbnail", "tags": ["images"], "summary": "A small JPEG preview",
            "parameters": [_param("Id")],
            "responses": _binary("The thumbnail (JPEG).", ["image/jpeg"]),
        }},
        "/healthz": {"get": {
            "operationId": "healthz", "tags": ["operations"], "summary": "Liveness: the process answers",
            "responses": {"200": _json("Alive.", "Health", {"status": "ok"})},
        }},
        "/readyz": {"get": {
            "operationId": "readyz", "tags": ["operations"],
            "summary": "Readiness: PostgreSQL, Redis and storage answer",
            "responses": {
                "200": _json("Ready.", "Ready",
                             {"status": "ready", "checks": {"database": "ok", "redis": "ok", "storage": "ok"}}),
                "503": _json("A dependency is unavailable.", "NotReady",
                             {"error": {"code": "not_ready", "message": "unavailable: redis"},
                              "checks": {"database": "ok", "redis": "unavailable: ConnectionError",
                                         "storage": "ok"}}),
            },
        }},
        "/metrics": {"get": {
            "operationId": "metrics", "tags": ["operations"], "summary": "Prometheus metrics",
            "responses": {"200": {"description": "The Prometheus text exposition format.",
                                  "content": {"text/plain": {"schema": STRING}}}},
        }},
        "/openapi.json": {"get": {
            "operationId": "openapi", "tags": ["operations"], "summary": "This document",
            "responses": {"200": {"description": "The OpenAPI 3.1 document.",
                                  "content": {JSON: {"schema": {"type": "object"}}}}},
        }},
    }


def build_document(*, auth_required: bool) -> dict[str, Any]:
    """The document; `auth_required` marks the write endpoints as needing the bearer token."""
    operations = _operations(auth_required)
    for path_item in operations.values():
        for op in path_item.values():
            op["responses"].setdefault("500", _response("Internal"))
    auth_note = ("This server requires it." if auth_required
                 else "This server has none set, so they are open.")
    # A deep copy: the shared constants above must not change when a caller edits its document.
    return copy.deepcopy({
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://spec.openapis.org/oas/3.1/dialect/base",
        "info": {
            "title": "fotoowl",
            "version": _version(),
            "description": "Copies every image of a public Google Drive folder into S3-compatible storage, "
                           "with metadata in PostgreSQL. Lists are keyset-paginated: pass `next_cursor` back "
                           "as `cursor`. Write endpoints take `Content-Type: application/json` only, even "
                           "without a body, refuse what a browser marks as cross-site, and need "
                           "`Authorization: Bearer <token>` when the server sets FOTOOWL_API_TOKEN. "
                           f"{auth_note}",
        },
        "tags": [{"name": "imports"}, {"name": "images"}, {"name": "operations"}],
        "paths": operations,
        "components": {
            "schemas": schemas(),
            "responses": RESPONSES,
            "parameters": PARAMETERS,
            "securitySchemes": {"bearerAuth": {
                "type": "http", "scheme": "bearer",
                "description": "The value of FOTOOWL_API_TOKEN; only checked when the server sets one."}},
        },
    })


def _version() -> str:
    try:
        return metadata.version("fotoowl")
    except metadata.PackageNotFoundError:
        return "0.0.0"


@functools.cache
def _document_text(auth_required: bool) -> str:
    return json.dumps(build_document(auth_required=auth_required), indent=1)


async def openapi_json(request: web.Request) -> web.Response:
    text = _document_text(bool(request.app[SETTINGS].api_token))
    return web.Response(text=text, content_type="application/json")


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/openapi.json", openapi_json, name="openapi")
