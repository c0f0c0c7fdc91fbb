"""The pieces the OpenAPI paths are built from: shared answers, parameters and small builders."""

from __future__ import annotations

from typing import Any

from fotoowl.web.api import MAX_PAGE, MAX_QUERY_CHARS
from fotoowl.web.params import INT64_MAX
from fotoowl.web.security import CROSS_SITE_MESSAGE

Schema = dict[str, Any]
JSON = "application/json"
STRING: Schema = {"type": "string"}
# What a URL may name: PostgreSQL's bigint.
ID_PARAM: Schema = {"type": "integer", "minimum": 1, "maximum": INT64_MAX}


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


# --- responses and parameters -------------------------------------------------------------------


def _error(description: str, code: str, message: str) -> Schema:
    return {
        "description": description,
        "content": {JSON: {"schema": _ref("Error"), "example": {"error": {"code": code, "message": message}}}},
    }


def _json(description: str, schema: str, example: Any = None) -> Schema:
    media: Schema = {"schema": _ref(schema)}
    if example is not None:
        media["example"] = example
    return {"description": description, "content": {JSON: media}}


RESPONSES: dict[str, Schema] = {
    "BadRequest": _error(
        "A query parameter or the cursor is invalid (`invalid_parameter`, `invalid_cursor`), "
        "or the body is not UTF-8 JSON (`invalid_json`).",
        "invalid_parameter",
        f"'limit' must be between 1 and {MAX_PAGE}.",
    ),
    "Unauthorized": _error(
        "FOTOOWL_API_TOKEN is set and the request has no matching bearer token.",
        "unauthorized",
        "This endpoint needs 'Authorization: Bearer <FOTOOWL_API_TOKEN>'.",
    ),
    "NotFound": _error("There is no such resource.", "not_found", "There is no import 999999."),
    "TooLarge": _error(
        "The request body is larger than 64 KiB.", "request_entity_too_large", "Request Entity Too Large"
    ),
    "CrossSite": _error(
        "A browser sent this from another site: `Sec-Fetch-Site: cross-site`, or an `Origin` other than this server's.",
        "csrf_failed",
        CROSS_SITE_MESSAGE,
    ),
    "NotJson": _error(
        "The request is not sent as `Content-Type: application/json` (a write without a body needs it too).",
        "unsupported_media_type",
        "Send the request with 'Content-Type: application/json'.",
    ),
    "Internal": _error(
        "An unexpected error; details are in the server's log.", "internal_error", "Something went wrong on our side."
    ),
    "Unavailable": _error(
        "The server's database or queue is briefly unavailable; `Retry-After` says when to ask again.",
        "service_unavailable",
        "The service is briefly unavailable (its database or queue); try again shortly.",
    ),
}


def _limit(default: int) -> Schema:
    return {
        "name": "limit",
        "in": "query",
        "required": False,
        "description": "Page size.",
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": default},
    }


PARAMETERS: dict[str, Schema] = {
    "Id": {"name": "id", "in": "path", "required": True, "schema": ID_PARAM},
    "Cursor": {
        "name": "cursor",
        "in": "query",
        "required": False,
        "description": "`next_cursor` of the previous page.",
        "schema": STRING,
    },
    "ImportFilter": {
        "name": "import_id",
        "in": "query",
        "required": False,
        "description": "Only images stored by this import.",
        "schema": ID_PARAM,
    },
    "SourceFilter": {"name": "source", "in": "query", "required": False, "schema": STRING, "example": "google_drive"},
    "FolderFilter": {
        "name": "folder",
        "in": "query",
        "required": False,
        "schema": STRING,
        "description": "Images in this folder (path relative to the import) and its subfolders.",
        "example": "Ceremony",
    },
    "MimeTypeFilter": {
        "name": "mime_type",
        "in": "query",
        "required": False,
        "schema": STRING,
        "example": "image/jpeg",
    },
    "NameSearch": {
        "name": "q",
        "in": "query",
        "required": False,
        "description": "Case-insensitive substring of the file name.",
        "schema": {"type": "string", "maxLength": MAX_QUERY_CHARS},
    },
    "CountImages": {
        "name": "count",
        "in": "query",
        "required": False,
        "description": (
            "Also answer `total`: how many images match the filters, counted (`exact: true`) when the "
            "database expects at most 10,000 and counts them within 50 ms, else its estimate (`exact: false`)."
        ),
        "schema": {"type": "boolean", "default": False},
    },
}


def _param(name: str) -> Schema:
    return {"$ref": f"#/components/parameters/{name}"}


def response_ref(name: str) -> Schema:
    return {"$ref": f"#/components/responses/{name}"}


def _no_body() -> Schema:
    return {
        "required": False,
        "description": "None needed (an empty body or `{}`), but sent as `application/json` all the same: "
        "an HTML form on another site cannot send that type.",
        "content": {JSON: {"schema": {"type": "object", "description": "Ignored."}, "example": {}}},
    }


def write_operation(op: Schema, auth_required: bool) -> Schema:
    """A write: the answers every write may give, and the bearer token when the server needs one."""
    op["responses"].update(
        {
            "400": response_ref("BadRequest"),
            "403": response_ref("CrossSite"),
            "413": response_ref("TooLarge"),
            "415": response_ref("NotJson"),
        }
    )
    if auth_required:
        op["security"] = [{"bearerAuth": []}]
        op["responses"]["401"] = response_ref("Unauthorized")
    return op
