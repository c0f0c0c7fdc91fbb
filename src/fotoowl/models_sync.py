"""The shapes of keeping folders in step: watches, removed files, deletions (see fotoowl.models for
the conventions: answers forbid unknown fields and always carry every field)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from fotoowl.models import MAX_URL_CHARS, Answer, Count, Counts, Cursor, Id, Import, SourceName, Time
from fotoowl.statuses import ACTIVE, ImportStatus

MAX_INTERVAL_S = 7 * 24 * 3600

WatchState = Literal["watching", "syncing", "backing_off", "paused"]


class WatchRequest(BaseModel):
    """The body of POST /watches."""

    model_config = ConfigDict(extra="ignore", strict=True)

    url: str = Field(
        max_length=MAX_URL_CHARS,
        validation_alias=AliasChoices("url", "folder_url"),
        description="A link to a shared folder (Google Drive or Dropbox); `folder_url` is accepted too.",
    )
    interval_s: int = Field(default=300, ge=1, le=MAX_INTERVAL_S, description="Seconds between checks of the folder.")
    recursive: bool = True
    prune: bool = Field(default=False, description="Syncs delete the images of files removed from the folder.")
    callback_url: str | None = Field(default=None, max_length=MAX_URL_CHARS)
    password: str | None = Field(default=None, max_length=500)


class WatchUpdate(BaseModel):
    """The body of PATCH /watches/{id}: only the fields given change."""

    model_config = ConfigDict(extra="forbid", strict=True)

    paused: bool | None = None
    interval_s: int | None = Field(default=None, ge=1, le=MAX_INTERVAL_S)
    prune: bool | None = None


class WatchError(Answer):
    code: str
    message: str | None
    failures: Count = Field(description="Checks that failed in a row; each doubles the wait before the next.")


class LastSync(Answer):
    """The import the last change started, and what it found."""

    import_id: Id
    status: ImportStatus
    counts: Counts


class WatchUrls(Answer):
    self: str
    imports: str
    images_page: str


class Watch(Answer):
    id: Id
    source: SourceName
    folder_id: str
    folder_url: str
    recursive: bool
    prune: bool
    callback_url: str | None
    interval_s: int = Field(ge=1)
    state: WatchState = Field(
        description="watching (waiting for the next check), syncing (its last sync import is running), "
        "backing_off (checks are failing: see `error`), paused."
    )
    last_checked_at: Time | None
    last_result: Literal["unchanged", "sync_started", "sync_running", "error"] | None
    next_check_at: Time | None = Field(description="null while paused.")
    last_sync_at: Time | None
    last_sync: LastSync | None
    error: WatchError | None
    created_at: Time
    urls: WatchUrls

    @classmethod
    def from_row(cls, row: Mapping[str, Any], last: Mapping[str, Any] | None) -> Watch:
        """`last`: the row of the watch's last sync import, if it still exists."""
        last_sync = None
        if last is not None:
            last_sync = LastSync(import_id=last["id"], status=last["status"], counts=Import.from_row(last).counts)
        state: WatchState = "watching"
        if row["paused"]:
            state = "paused"
        elif row["failures"]:
            state = "backing_off"
        elif last is not None and last["status"] in ACTIVE:
            state = "syncing"
        watch_id = row["id"]
        return cls(
            id=watch_id,
            source=row["source"],
            folder_id=row["folder_id"],
            folder_url=row["folder_url"],
            recursive=row["recursive"],
            prune=row["prune"],
            callback_url=row["callback_url"],
            interval_s=row["interval_s"],
            state=state,
            last_checked_at=row["last_checked_at"],
            last_result=row["last_result"],
            next_check_at=None if row["paused"] else row["next_check_at"],
            last_sync_at=row["last_sync_at"],
            last_sync=last_sync,
            error=WatchError(code=row["error_code"], message=row["error_message"], failures=row["failures"])
            if row["error_code"]
            else None,
            created_at=row["created_at"],
            urls=WatchUrls(
                self=f"/watches/{watch_id}",
                imports=f"/imports?watch_id={watch_id}",
                images_page=f"/ui/watches/{watch_id}",
            ),
        )


class WatchList(Answer):
    watches: list[Watch]
    next_cursor: Cursor


class SyncAccepted(Answer):
    watch_id: Id
    next_check_at: Time


class DeleteAccepted(Answer):
    import_id: Id
    status: Literal["deleting"] = Field(
        description="Its images, previews and rows are being removed; GET then answers 404."
    )


class RemovedFile(Answer):
    file_id: str
    name: str
    folder_path: str
    mime_type: str
    size: Count
    pruned: bool = Field(description="Its image was deleted (the import asked for prune).")
    image_id: int | None = Field(ge=1, description="The image still stored for it (null once pruned).")

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> RemovedFile:
        return cls(
            file_id=row["file_id"],
            name=row["name"],
            folder_path=row["folder_path"],
            mime_type=row["mime_type"],
            size=row["size_bytes"],
            pruned=row["error_code"] == "pruned",
            image_id=row["image_id"],
        )


class RemovedList(Answer):
    removed: list[RemovedFile]
    next_cursor: Cursor


SYNC_MODELS: tuple[type[BaseModel], ...] = (
    WatchRequest,
    WatchUpdate,
    WatchError,
    LastSync,
    WatchUrls,
    Watch,
    WatchList,
    SyncAccepted,
    DeleteAccepted,
    RemovedFile,
    RemovedList,
)
# Bodies: described as they are validated, not as they are written.
SYNC_REQUESTS: tuple[type[BaseModel], ...] = (WatchRequest, WatchUpdate)
