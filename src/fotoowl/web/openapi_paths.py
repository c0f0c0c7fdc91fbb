"""The paths of the OpenAPI document: operations, their parameters and answers, as a small table.

Bodies and answers refer to the schemas generated from fotoowl.models (web/openapi.py)."""

from __future__ import annotations

from typing import Any

from fotoowl.web.api import MAX_PAGE, MAX_QUERY_CHARS
from fotoowl.web.openapi_examples import FAILURE_EXAMPLE, IMAGE_EXAMPLE, IMPORT_EXAMPLE
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
}


def _param(name: str) -> Schema:
    return {"$ref": f"#/components/parameters/{name}"}


def response_ref(name: str) -> Schema:
    return {"$ref": f"#/components/responses/{name}"}


def _binary(description: str, media_types: list[str]) -> Schema:
    redirect = {
        "description": "With FOTOOWL_PRESIGN_DOWNLOADS on: a short-lived presigned URL to the object.",
        "headers": {"Location": {"schema": {"type": "string", "format": "uri"}}},
    }
    return {
        "200": {
            "description": description,
            "content": {media: {} for media in media_types},
            "headers": {"Content-Disposition": {"schema": STRING}},
        },
        "302": redirect,
        "404": _error(
            "No such image, no thumbnail (`no_thumbnail`), or the object is missing from storage (`object_missing`).",
            "not_found",
            "There is no image 999999.",
        ),
    }


def _no_body() -> Schema:
    return {
        "required": False,
        "description": "None needed (an empty body or `{}`), but sent as `application/json` all the same: "
        "an HTML form on another site cannot send that type.",
        "content": {JSON: {"schema": {"type": "object", "description": "Ignored."}, "example": {}}},
    }


def _start_import(operation_id: str, summary: str, folder_url: str) -> Schema:
    return {
        "operationId": operation_id,
        "tags": ["imports"],
        "summary": summary,
        "requestBody": {
            "required": True,
            "content": {
                JSON: {"schema": _ref("ImportRequest"), "example": {"folder_url": folder_url, "recursive": True}}
            },
        },
        "responses": {
            "202": {
                **_json(
                    "Queued; poll `status_url`.",
                    "ImportAccepted",
                    {"import_id": 42, "status": "queued", "status_url": "/imports/42"},
                ),
                "headers": {"Location": {"description": "The new import.", "schema": STRING}},
            },
            "422": _error(
                "The body is JSON but unusable (`missing_field`, `invalid_field`, `invalid_folder_url`).",
                "invalid_folder_url",
                "Paste the link of a shared Google Drive or Dropbox folder.",
            ),
        },
    }


def operations(auth_required: bool) -> dict[str, dict[str, Schema]]:
    def write(op: Schema) -> Schema:
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

    page = [_limit(100), _param("Cursor")]
    return {
        "/imports": {
            "post": write(
                _start_import(
                    "start_import_any",
                    "Import a shared folder; its source is recognised from the link",
                    IMPORT_EXAMPLE["folder_url"],
                )
            ),
            "get": {
                "operationId": "list_imports",
                "tags": ["imports"],
                "summary": "Imports, newest first",
                "parameters": [_limit(50), _param("Cursor")],
                "responses": {
                    "200": _json(
                        "A page of imports.", "ImportList", {"imports": [IMPORT_EXAMPLE], "next_cursor": None}
                    ),
                    "400": response_ref("BadRequest"),
                },
            },
        },
        "/import/google-drive": {
            "post": write(
                _start_import("start_import", "Import a public Google Drive folder", IMPORT_EXAMPLE["folder_url"])
            )
        },
        "/import/dropbox": {
            "post": write(
                _start_import(
                    "start_import_dropbox",
                    "Import a Dropbox shared folder",
                    "https://www.dropbox.com/scl/fo/a1b2c3d4e5f6g7h8i9j0k/AAbbCCddEEff?rlkey=q1w2e3r4t5y6u7i8o9p0&dl=0",
                )
            )
        },
        "/imports/{id}": {
            "get": {
                "operationId": "get_import",
                "tags": ["imports"],
                "summary": "An import's status and progress",
                "parameters": [_param("Id")],
                "responses": {"200": _json("The import.", "Import", IMPORT_EXAMPLE), "404": response_ref("NotFound")},
            }
        },
        "/imports/{id}/failures": {
            "get": {
                "operationId": "list_failures",
                "tags": ["imports"],
                "summary": "Files of an import that failed",
                "parameters": [_param("Id"), *page],
                "responses": {
                    "200": _json(
                        "A page of failed files, oldest first.",
                        "FailureList",
                        {"failures": [FAILURE_EXAMPLE], "next_cursor": None},
                    ),
                    "400": response_ref("BadRequest"),
                    "404": response_ref("NotFound"),
                },
            }
        },
        "/imports/{id}/retry": {
            "post": write(
                {
                    "operationId": "retry_import",
                    "tags": ["imports"],
                    "summary": "Queue an import's failed files again",
                    "parameters": [_param("Id")],
                    "requestBody": _no_body(),
                    "responses": {
                        "202": _json(
                            "Requeued (0 when there was nothing to retry).",
                            "RetryAccepted",
                            {"import_id": 42, "requeued": 2, "status": "running"},
                        ),
                        "404": response_ref("NotFound"),
                    },
                }
            )
        },
        "/imports/{id}/cancel": {
            "post": write(
                {
                    "operationId": "cancel_import",
                    "tags": ["imports"],
                    "summary": "Stop an active import",
                    "parameters": [_param("Id")],
                    "requestBody": _no_body(),
                    "responses": {
                        "202": _json(
                            "Cancelled; files in flight are abandoned within a second.",
                            "CancelAccepted",
                            {"import_id": 42, "status": "cancelled"},
                        ),
                        "404": response_ref("NotFound"),
                        "409": _error(
                            "The import had already finished.",
                            "already_finished",
                            "Import 42 has already finished (completed).",
                        ),
                    },
                }
            )
        },
        "/images": {
            "get": {
                "operationId": "list_images",
                "tags": ["images"],
                "summary": "Stored images, newest first",
                "parameters": [
                    *page,
                    _param("ImportFilter"),
                    _param("SourceFilter"),
                    _param("FolderFilter"),
                    _param("MimeTypeFilter"),
                    _param("NameSearch"),
                ],
                "responses": {
                    "200": _json("A page of images.", "ImageList", {"images": [IMAGE_EXAMPLE], "next_cursor": None}),
                    "400": response_ref("BadRequest"),
                },
            }
        },
        "/images/{id}": {
            "get": {
                "operationId": "get_image",
                "tags": ["images"],
                "summary": "An image's metadata",
                "parameters": [_param("Id")],
                "responses": {"200": _json("The image.", "Image", IMAGE_EXAMPLE), "404": response_ref("NotFound")},
            }
        },
        "/images/{id}/content": {
            "get": {
                "operationId": "image_content",
                "tags": ["images"],
                "summary": "The original file",
                "description": "Raster types browsers render are served inline; anything else as a download.",
                "parameters": [_param("Id")],
                "responses": _binary("The original bytes.", ["image/*", "application/octet-stream"]),
            }
        },
        "/images/{id}/thumbnail": {
            "get": {
                "operationId": "image_thumbnail",
                "tags": ["images"],
                "summary": "A small JPEG preview",
                "parameters": [_param("Id")],
                "responses": _binary("The thumbnail (JPEG).", ["image/jpeg"]),
            }
        },
        "/healthz": {
            "get": {
                "operationId": "healthz",
                "tags": ["operations"],
                "summary": "Liveness: the process answers",
                "responses": {"200": _json("Alive.", "Health", {"status": "ok"})},
            }
        },
        "/readyz": {
            "get": {
                "operationId": "readyz",
                "tags": ["operations"],
                "summary": "Readiness: PostgreSQL, Redis and storage answer",
                "responses": {
                    "200": _json(
                        "Ready.",
                        "Ready",
                        {"status": "ready", "checks": {"database": "ok", "redis": "ok", "storage": "ok"}},
                    ),
                    "503": _json(
                        "A dependency is unavailable.",
                        "NotReady",
                        {
                            "error": {"code": "not_ready", "message": "unavailable: redis"},
                            "checks": {"database": "ok", "redis": "unavailable: ConnectionError", "storage": "ok"},
                        },
                    ),
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "tags": ["operations"],
                "summary": "Prometheus metrics",
                "responses": {
                    "200": {
                        "description": "The Prometheus text exposition format.",
                        "content": {"text/plain": {"schema": STRING}},
                    }
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "tags": ["operations"],
                "summary": "This document",
                "responses": {
                    "200": {
                        "description": "The OpenAPI 3.1 document.",
                        "content": {JSON: {"schema": {"type": "object"}}},
                    }
                },
            }
        },
    }
