"""The OpenAPI paths of keeping folders in step: watches, removed files, deletions."""

from __future__ import annotations

from pydantic import BaseModel

from fotoowl.models_sync import SYNC_MODELS, SYNC_REQUESTS
from fotoowl.web.openapi_examples import IMPORT_EXAMPLE, REMOVED_EXAMPLE, WATCH_EXAMPLE
from fotoowl.web.openapi_parts import (
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

MODELS: tuple[type[BaseModel], ...] = SYNC_MODELS
REQUESTS: tuple[type[BaseModel], ...] = SYNC_REQUESTS

_NO_CONTENT: Schema = {"description": "Done; nothing to answer."}


def paths(auth_required: bool) -> dict[str, dict[str, Schema]]:
    def write(op: Schema) -> Schema:
        return write_operation(op, auth_required)

    page = [_limit(100), _param("Cursor")]
    unusable_link = _error(
        "The body is JSON but unusable (`missing_field`, `invalid_field`, `invalid_folder_url`, "
        "`invalid_callback_url`).",
        "invalid_folder_url",
        "Paste the link of a shared Google Drive or Dropbox folder.",
    )
    return {
        "/watches": {
            "post": write(
                {
                    "operationId": "create_watch",
                    "tags": ["watches"],
                    "summary": "Keep a folder in step: check it every `interval_s` and sync what changed",
                    "requestBody": {
                        "required": True,
                        "content": {
                            JSON: {
                                "schema": _ref("WatchRequest"),
                                "example": {"url": WATCH_EXAMPLE["folder_url"], "interval_s": 300},
                            }
                        },
                    },
                    "responses": {
                        "201": {
                            **_json("Watching; the first check comes at once.", "Watch", WATCH_EXAMPLE),
                            "headers": {"Location": {"description": "The new watch.", "schema": STRING}},
                        },
                        "422": unusable_link,
                    },
                }
            ),
            "get": {
                "operationId": "list_watches",
                "tags": ["watches"],
                "summary": "Watches, newest first",
                "parameters": [_limit(50), _param("Cursor")],
                "responses": {
                    "200": _json("A page of watches.", "WatchList", {"watches": [WATCH_EXAMPLE], "next_cursor": None}),
                    "400": response_ref("BadRequest"),
                },
            },
        },
        "/watches/{id}": {
            "get": {
                "operationId": "get_watch",
                "tags": ["watches"],
                "summary": "A watch: its state, last check, next check and what its last sync found",
                "parameters": [_param("Id")],
                "responses": {"200": _json("The watch.", "Watch", WATCH_EXAMPLE), "404": response_ref("NotFound")},
            },
            "patch": write(
                {
                    "operationId": "update_watch",
                    "tags": ["watches"],
                    "summary": "Pause, resume (checks at once) or change the interval or prune",
                    "parameters": [_param("Id")],
                    "requestBody": {
                        "required": True,
                        "content": {JSON: {"schema": _ref("WatchUpdate"), "example": {"paused": True}}},
                    },
                    "responses": {
                        "200": _json("The watch as it is now.", "Watch", WATCH_EXAMPLE),
                        "404": response_ref("NotFound"),
                        "422": _error("A field is unusable.", "invalid_field", "'interval_s' must be a whole number."),
                    },
                }
            ),
            "delete": write(
                {
                    "operationId": "delete_watch",
                    "tags": ["watches"],
                    "summary": "Stop watching (the imports it started and their images stay)",
                    "parameters": [_param("Id")],
                    "requestBody": _no_body(),
                    "responses": {"204": _NO_CONTENT, "404": response_ref("NotFound")},
                }
            ),
        },
        "/watches/{id}/sync": {
            "post": write(
                {
                    "operationId": "sync_watch",
                    "tags": ["watches"],
                    "summary": "Check the folder now rather than at the next interval",
                    "parameters": [_param("Id")],
                    "requestBody": _no_body(),
                    "responses": {
                        "202": _json(
                            "Due now; a worker checks it within a second or two.",
                            "SyncAccepted",
                            {"watch_id": 7, "next_check_at": "2026-05-01T12:01:00Z"},
                        ),
                        "404": response_ref("NotFound"),
                    },
                }
            )
        },
        "/imports/{id}/events": {
            "get": {
                "operationId": "import_events",
                "tags": ["imports"],
                "summary": "Live progress as Server-Sent Events: status, images as they land, end",
                "description": "Events: `status` (the Import JSON, whenever it changes), `images` "
                '(`{"images": [Image, ...]}`, with the last image id as the event id: a reconnecting '
                'browser resumes after it through `Last-Event-ID`), `end` (`{"status": ...}`, then the '
                "stream closes) and `gone` (the import was deleted). Without `Last-Event-ID` or `after`, "
                "images stored before the stream opened are not sent.",
                "parameters": [
                    _param("Id"),
                    {
                        "name": "after",
                        "in": "query",
                        "required": False,
                        "description": "Send images with a larger id than this (as `Last-Event-ID` does).",
                        "schema": {"type": "integer", "minimum": 0},
                    },
                ],
                "responses": {
                    "200": {
                        "description": "The event stream; it closes once the import has finished.",
                        "content": {
                            "text/event-stream": {
                                # One event: its name, its id (images events) and its JSON data as text.
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "event": {"enum": ["status", "images", "end", "gone"]},
                                        "id": STRING,
                                        "data": {"type": "string", "contentMediaType": JSON},
                                        "retry": {"type": "integer"},
                                    },
                                    "required": ["event", "data"],
                                },
                                "example": {"event": "status", "data": '{"id": 42, "status": "running", ...}'},
                            }
                        },
                    },
                    "404": response_ref("NotFound"),
                },
            }
        },
        "/imports/{id}/removed": {
            "get": {
                "operationId": "list_removed",
                "tags": ["imports"],
                "summary": "Files earlier imports of the folder stored that this sync no longer found",
                "parameters": [_param("Id"), *page],
                "responses": {
                    "200": _json(
                        "A page of removed files.", "RemovedList", {"removed": [REMOVED_EXAMPLE], "next_cursor": None}
                    ),
                    "400": response_ref("BadRequest"),
                    "404": response_ref("NotFound"),
                },
            }
        },
        "/imports/{id}": {
            "delete": write(
                {
                    "operationId": "delete_import",
                    "tags": ["imports"],
                    "summary": "Delete an import with its images, their objects and previews (stops it first)",
                    "parameters": [_param("Id")],
                    "requestBody": _no_body(),
                    "responses": {
                        "202": {
                            **_json(
                                "Deleting; GET answers 404 once it is gone. Asking again changes nothing.",
                                "DeleteAccepted",
                                {"import_id": IMPORT_EXAMPLE["id"], "status": "deleting"},
                            ),
                            "headers": {"Location": {"description": "The import.", "schema": STRING}},
                        },
                        "404": response_ref("NotFound"),
                    },
                }
            )
        },
        "/images/{id}": {
            "delete": write(
                {
                    "operationId": "delete_image",
                    "tags": ["images"],
                    "summary": "Delete one image with its object and preview",
                    "parameters": [_param("Id")],
                    "requestBody": _no_body(),
                    "responses": {
                        "204": _NO_CONTENT,
                        "404": response_ref("NotFound"),
                        "503": _error(
                            "Storage did not delete the objects; nothing was changed.",
                            "storage_unavailable",
                            "Storage did not delete the image's objects; try again.",
                        ),
                    },
                }
            )
        },
    }
