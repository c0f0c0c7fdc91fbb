"""The paths of the OpenAPI document: operations, their parameters and answers, as a small table.

Bodies and answers refer to the schemas generated from fotoowl.models (web/openapi.py)."""

from __future__ import annotations

from fotoowl.web.openapi_examples import FAILURE_EXAMPLE, IMAGE_EXAMPLE, IMPORT_EXAMPLE
from fotoowl.web.openapi_parts import (
    ID_PARAM,
    JSON,
    STRING,
    Schema,
    _error,
    _json,
    _limit,
    _no_body,
    _param,
    _ref,
    response_ref,
    write_operation,
)


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
        return write_operation(op, auth_required)

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
                "parameters": [
                    _limit(50),
                    _param("Cursor"),
                    {
                        "name": "watch_id",
                        "in": "query",
                        "required": False,
                        "description": "Only the syncs this watch started.",
                        "schema": ID_PARAM,
                    },
                ],
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
                    _param("CountImages"),
                ],
                "responses": {
                    "200": _json(
                        "A page of images.",
                        "ImageList",
                        {"images": [IMAGE_EXAMPLE], "next_cursor": None, "total": {"count": 1, "exact": True}},
                    ),
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
