"""The shapes of webhooks: the events fotoowl sends, and its record of their deliveries.

Events are built with these models only (pipeline/outbox.py), and the OpenAPI document describes them
from the same models (web/openapi_webhooks.py), so a receiver's contract has one source of truth."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field

from fotoowl.models import Answer, Count, Cursor, Id, Image, Import, Time

EventType = Literal["images.added", "import.finished"]
Destination = Literal["webhook_url", "callback_url"]
DeliveryStatus = Literal["pending", "delivered", "failed"]
EVENT_TYPES: tuple[EventType, ...] = ("images.added", "import.finished")

EventId = Annotated[
    str,
    Field(
        description="The event's id (a UUID), the same at every destination and on every retry: receivers "
        "deduplicate by it. Also sent as `X-Fotoowl-Delivery`."
    ),
]


class ImagesAddedData(Answer):
    import_id: Id
    watch_id: int | None = Field(ge=1, description="The watch that started the import, if one did.")
    images: list[Image] = Field(description="Images the import stored since its previous `images.added`.")


class ImagesAddedEvent(Answer):
    """Sent as images land, in batches of at most 100: each stored image is in exactly one event."""

    id: EventId
    type: Literal["images.added"]
    created_at: Time
    data: ImagesAddedData


class ImportFinishedEvent(Answer):
    """Sent when an import reaches a final status (completed, completed_with_errors, failed or
    cancelled), and again when a retry of its failed files ends; `data` is the import as
    `GET /imports/{id}` shows it at that moment, counts included."""

    id: EventId
    type: Literal["import.finished"]
    created_at: Time
    data: Import


class WebhookDelivery(Answer):
    """One event on its way to one destination."""

    event_id: EventId
    type: EventType
    destination: Destination = Field(
        description="`webhook_url`: the server's FOTOOWL_WEBHOOK_URL; `callback_url`: the import's own."
    )
    url: str = Field(
        description="Where it is sent. For `webhook_url` only the scheme and host are shown: the server's "
        "URL may hold a token."
    )
    status: DeliveryStatus = Field(
        description="pending: not yet accepted, tried again at `next_attempt_at`; delivered: the receiver "
        "answered 2xx; failed: given up (FOTOOWL_WEBHOOK_GIVE_UP_S after the event, or a refused address)."
    )
    attempts: Count
    next_attempt_at: Time | None = Field(description="When it is tried next; null unless pending.")
    last_attempt_at: Time | None
    last_status: int | None = Field(description="The HTTP status of the last answer; null if none came.")
    last_error: str | None = Field(description="Why the last attempt did not deliver it.")
    created_at: Time
    delivered_at: Time | None
    gave_up_at: Time | None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> WebhookDelivery:
        if row["delivered_at"] is not None:
            status: DeliveryStatus = "delivered"
        elif row["gave_up_at"] is not None:
            status = "failed"
        else:
            status = "pending"
        url = row["url"]
        if row["destination"] == "webhook_url":
            parts = urlsplit(url)
            url = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"
        return cls(
            event_id=str(row["event_id"]),
            type=row["event_type"],
            destination=row["destination"],
            url=url,
            status=status,
            attempts=row["attempts"],
            next_attempt_at=row["next_attempt_at"] if status == "pending" else None,
            last_attempt_at=row["last_attempt_at"],
            last_status=row["last_status"],
            last_error=row["last_error"],
            created_at=row["created_at"],
            delivered_at=row["delivered_at"],
            gave_up_at=row["gave_up_at"],
        )


class WebhookDeliveryList(Answer):
    deliveries: list[WebhookDelivery]
    next_cursor: Cursor


# Every model the OpenAPI document gets from here, by the name it has there.
SCHEMA_MODELS: tuple[type[BaseModel], ...] = (
    ImagesAddedData,
    ImagesAddedEvent,
    ImportFinishedEvent,
    WebhookDelivery,
    WebhookDeliveryList,
)
