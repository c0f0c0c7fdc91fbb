"""The webhooks' part of the OpenAPI document: the deliveries endpoint, and the events themselves
(OpenAPI 3.1 `webhooks`: what fotoowl POSTs to a receiver), from the models in fotoowl.models_webhooks."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from fotoowl.models_webhooks import EVENT_TYPES, SCHEMA_MODELS
from fotoowl.web.api import MAX_PAGE
from fotoowl.web.openapi_examples import IMAGE_EXAMPLE, IMPORT_EXAMPLE
from fotoowl.web.openapi_parts import response_ref

Schema = dict[str, Any]
JSON = "application/json"

MODELS: tuple[type[BaseModel], ...] = SCHEMA_MODELS

EVENT_ID_EXAMPLE = "0b7e6a52-3f1c-4a5e-9d1e-2f0c8b6a4d11"
DELIVERY_EXAMPLES: list[Schema] = [
    {
        "event_id": EVENT_ID_EXAMPLE,
        "type": "images.added",
        "destination": "webhook_url",
        "url": "https://hooks.example.com",
        "status": "delivered",
        "attempts": 1,
        "next_attempt_at": None,
        "last_attempt_at": "2026-05-01T10:00:04Z",
        "last_status": 204,
        "last_error": None,
        "created_at": "2026-05-01T10:00:03Z",
        "delivered_at": "2026-05-01T10:00:04Z",
        "gave_up_at": None,
    },
    {
        "event_id": "5d1f0e3c-8a2b-4c7d-b6e5-9f4a3c2b1d00",
        "type": "import.finished",
        "destination": "callback_url",
        "url": "https://example.com/fotoowl/callback?shoot=2026-05-01",
        "status": "pending",
        "attempts": 2,
        "next_attempt_at": "2026-05-01T10:05:40Z",
        "last_attempt_at": "2026-05-01T10:05:20Z",
        "last_status": 503,
        "last_error": "HTTP 503: Service Unavailable",
        "created_at": "2026-05-01T10:05:10Z",
        "delivered_at": None,
        "gave_up_at": None,
    },
]
IMAGES_ADDED_EXAMPLE: Schema = {
    "id": EVENT_ID_EXAMPLE,
    "type": "images.added",
    "created_at": "2026-05-01T10:00:03Z",
    "data": {"import_id": 42, "watch_id": None, "images": [IMAGE_EXAMPLE]},
}
IMPORT_FINISHED_EXAMPLE: Schema = {
    "id": "5d1f0e3c-8a2b-4c7d-b6e5-9f4a3c2b1d00",
    "type": "import.finished",
    "created_at": "2026-05-01T10:05:10Z",
    "data": {**IMPORT_EXAMPLE, "status": "completed_with_errors", "eta_s": None, "finished_at": "2026-05-01T10:05:10Z"},
}


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def paths(auth_required: bool) -> dict[str, dict[str, Schema]]:
    # A read: open like every other read, whether or not the server has a token.
    del auth_required
    return {
        "/imports/{id}/webhooks": {
            "get": {
                "operationId": "list_webhooks",
                "tags": ["imports"],
                "summary": "An import's webhook deliveries",
                "description": "One entry per event and destination, oldest first: whether it was delivered, "
                "is still being retried (and when next), or was given up, with the last answer or error.",
                "parameters": [
                    {"$ref": "#/components/parameters/Id"},
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "description": "Page size.",
                        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": 100},
                    },
                    {"$ref": "#/components/parameters/Cursor"},
                    {
                        "name": "status",
                        "in": "query",
                        "required": False,
                        "description": "Only deliveries in this state.",
                        "schema": {"type": "string", "enum": ["pending", "delivered", "failed"]},
                    },
                ],
                "responses": {
                    "200": {
                        "description": "A page of deliveries, oldest first.",
                        "content": {
                            JSON: {
                                "schema": _ref("WebhookDeliveryList"),
                                "example": {"deliveries": DELIVERY_EXAMPLES, "next_cursor": None},
                            }
                        },
                    },
                    "400": response_ref("BadRequest"),
                    "404": response_ref("NotFound"),
                },
            }
        }
    }


_HEADERS: list[Schema] = [
    {
        "name": "X-Fotoowl-Signature",
        "in": "header",
        "required": True,
        "description": "`sha256=` and the hex HMAC-SHA256 of the exact body bytes, keyed with "
        "FOTOOWL_WEBHOOK_SECRET. Compute it over the raw body before parsing it, and compare in constant time.",
        "schema": {"type": "string", "pattern": "^sha256=[0-9a-f]{64}$"},
    },
    {
        "name": "X-Fotoowl-Event",
        "in": "header",
        "required": True,
        "description": "The event's type, as in the body.",
        "schema": {"type": "string", "enum": list(EVENT_TYPES)},
    },
    {
        "name": "X-Fotoowl-Delivery",
        "in": "header",
        "required": True,
        "description": "The event's id, as in the body: the same on every retry, deduplicate by it.",
        "schema": {"type": "string", "format": "uuid"},
    },
]
_RECEIVER_ANSWERS: Schema = {
    "2XX": {"description": "Delivered. Answer quickly (within 10 s); do the work afterwards."},
    "default": {
        "description": "Anything else, no answer within 10 s, or a redirect (not followed): tried again with "
        "exponential backoff until FOTOOWL_WEBHOOK_GIVE_UP_S (a day) after the event."
    },
}


def _event(operation_id: str, summary: str, schema: str, example: Schema) -> Schema:
    return {
        "post": {
            "operationId": operation_id,
            "tags": ["webhooks"],
            "summary": summary,
            "parameters": _HEADERS,
            "requestBody": {"required": True, "content": {JSON: {"schema": _ref(schema), "example": example}}},
            "responses": _RECEIVER_ANSWERS,
        }
    }


WEBHOOKS: dict[str, Schema] = {
    "images.added": _event(
        "webhook_images_added",
        "Images an import stored (in batches of at most 100)",
        "ImagesAddedEvent",
        IMAGES_ADDED_EXAMPLE,
    ),
    "import.finished": _event(
        "webhook_import_finished",
        "An import reached its final status, with its counts",
        "ImportFinishedEvent",
        IMPORT_FINISHED_EXAMPLE,
    ),
}
