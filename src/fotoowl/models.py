"""The shapes of the API: request bodies and answers, one pydantic model each.

They are the single source of truth: handlers build answers with them, the CLI reads answers with
them, and the OpenAPI document's schemas are generated from them (web/openapi.py). Rows become
models here (`Import.from_row`, `Image.from_row`), so no other layer knows a JSON shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, WithJsonSchema

from fotoowl.statuses import ACTIVE, ImportStatus

MAX_URL_CHARS = 2000

# "2026-05-01T10:00:00Z": UTC with a Z, as every answer has always written times.
Time = Annotated[
    datetime,
    PlainSerializer(lambda t: t.astimezone(UTC).isoformat().replace("+00:00", "Z"), return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time"}, mode="serialization"),
]
Count = Annotated[int, Field(ge=0)]
SourceName = Literal["google_drive", "dropbox"]
Id = Annotated[int, Field(ge=1)]
Cursor = Annotated[str | None, Field(description="Pass as `cursor` to get the next page; null on the last page.")]


class Answer(BaseModel):
    """An answer: every field always present (required in the schema), nothing else allowed."""

    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_serialization_defaults_required=True)

    def body(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


# --- errors ---------------------------------------------------------------------------------------


class ErrorDetail(Answer):
    code: str
    message: str | None


class Error(Answer):
    """Every error, from any route, has this shape; `code` is stable, `message` is for people."""

    error: ErrorDetail


# --- imports --------------------------------------------------------------------------------------


class ImportRequest(BaseModel):
    """The body of POST /imports, /import/google-drive and /import/dropbox."""

    model_config = ConfigDict(extra="ignore", strict=True)

    folder_url: str = Field(
        max_length=MAX_URL_CHARS,
        description="A link to a shared folder: Google Drive (or a Drive folder id) or Dropbox.",
    )
    recursive: bool = Field(default=True, description="Also import the images of every subfolder.")
    password: str | None = Field(
        default=None, max_length=500, description="The password of a password-protected Dropbox link."
    )
    prune: bool = Field(
        default=False,
        description="When the folder was imported before: remove from storage and the database the images of "
        "files that are no longer in it (they are reported either way).",
    )
    callback_url: str | None = Field(
        default=None,
        max_length=MAX_URL_CHARS,
        description="Also send this import's webhook events (`images.added`, `import.finished`) here.",
    )


class ImportAccepted(Answer):
    import_id: Id
    status: ImportStatus
    status_url: str


class Counts(Answer):
    """Files found in the folder: each one ends imported, deduplicated, unchanged, skipped or failed
    (pending until then). `removed` counts files earlier imports of the folder stored that it no longer
    has; `pruned` how many of those were deleted (with `prune`)."""

    found: Count
    imported: Count = Field(description="Downloaded from the source and stored.")
    deduplicated: Count = Field(
        description="Stored by copying identical bytes (same checksum and size) already in storage, server-side: "
        "nothing downloaded."
    )
    unchanged: Count = Field(description="Stored already by an earlier import, same checksum and modified time.")
    skipped: Count = Field(description="Not images, or not downloadable (the reason is on each file).")
    failed: Count
    pending: Count
    removed: Count
    pruned: Count


class PreviewCounts(Answer):
    done: Count
    pending: Count
    none: Count = Field(description="No preview (the image's `preview_reason` says why): a placeholder instead.")


class ByteCounts(Answer):
    found: Count
    imported: Count


class Rate(Answer):
    """Average since the import started; null before the first image lands."""

    files_per_s: float | None = Field(ge=0)
    bytes_per_s: int | None = Field(ge=0)


class ImportProblem(Answer):
    """Why the import failed or stopped."""

    code: str
    message: str | None


class ImportUrls(Answer):
    self: str
    failures: str
    removed: str
    images: str
    events: str = Field(description="Server-Sent Events: status, counts and images as they land.")
    webhooks: str = Field(description="This import's webhook deliveries.")
    page: str


class Import(Answer):
    id: Id
    source: SourceName
    folder_id: str
    folder_url: str
    folder_name: str | None = Field(description="Known once listing has started.")
    recursive: bool
    reader: Literal["api", "public_page"] | None = Field(
        description="How a Drive folder is read: `api` (with a key: sizes and MD5s listed by Drive and checked) "
        "or `public_page` (no key: sizes and MD5s computed from the bytes, not checked against "
        "Drive); null for other sources."
    )
    status: ImportStatus = Field(
        description="queued, listing and running are active; deleting: its images are being removed; "
        "the others are final."
    )
    prune: bool
    watch_id: int | None = Field(ge=1, description="The watch that started this import (a sync), if one did.")
    callback_url: str | None
    counts: Counts
    previews: PreviewCounts = Field(description="Made after the originals: `status` does not wait for them.")
    bytes: ByteCounts
    rate: Rate
    eta_s: float | None = Field(ge=0, description="Seconds left at the current rate, while the import is active.")
    error: ImportProblem | None
    created_at: Time
    started_at: Time | None
    finished_at: Time | None
    urls: ImportUrls

    @classmethod
    def from_row(cls, row: Mapping[str, Any], *, now: datetime | None = None) -> Import:
        found, imported, skipped, failed = (
            row["found_count"],
            row["imported_count"],
            row["skipped_count"],
            row["failed_count"],
        )
        deduplicated, unchanged = row["deduplicated_count"], row["unchanged_count"]
        pending = max(0, found - imported - deduplicated - unchanged - skipped - failed)
        files_per_s: float | None = None
        bytes_per_s = eta_s = None
        started: datetime | None = row["started_at"]
        if started is not None and imported:
            end = row["finished_at"] or now or datetime.now(UTC)
            elapsed_s = max((end - started).total_seconds(), 0.001)
            files_per_s = round(imported / elapsed_s, 2)
            bytes_per_s = round(row["bytes_imported"] / elapsed_s)
            if row["status"] in ACTIVE and pending:
                eta_s = round(pending / files_per_s, 1)
        import_id = row["id"]
        return cls(
            id=import_id,
            source=row["source"],
            folder_id=row["folder_id"],
            folder_url=row["folder_url"],
            folder_name=row["folder_name"],
            recursive=row["recursive"],
            reader=row["reader"],
            status=row["status"],
            prune=row["prune"],
            watch_id=row["watch_id"],
            callback_url=row["callback_url"],
            counts=Counts(
                found=found,
                imported=imported,
                deduplicated=deduplicated,
                unchanged=unchanged,
                skipped=skipped,
                failed=failed,
                pending=pending,
                removed=row["removed_count"],
                pruned=row["pruned_count"],
            ),
            previews=PreviewCounts(
                done=row["previews_done_count"], pending=row["previews_pending_count"], none=row["previews_none_count"]
            ),
            bytes=ByteCounts(found=row["bytes_found"], imported=row["bytes_imported"]),
            rate=Rate(files_per_s=files_per_s, bytes_per_s=bytes_per_s),
            eta_s=eta_s,
            error=ImportProblem(code=row["error_code"], message=row["error_message"]) if row["error_code"] else None,
            created_at=row["created_at"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
            urls=ImportUrls(
                self=f"/imports/{import_id}",
                failures=f"/imports/{import_id}/failures",
                removed=f"/imports/{import_id}/removed",
                images=f"/images?import_id={import_id}",
                events=f"/imports/{import_id}/events",
                webhooks=f"/imports/{import_id}/webhooks",
                page=f"/ui/imports/{import_id}",
            ),
        )


class ImportList(Answer):
    imports: list[Import]
    next_cursor: Cursor


class FailureError(Answer):
    code: str | None
    message: str | None


class Failure(Answer):
    file_id: str
    name: str
    folder_path: str
    mime_type: str
    size: Count
    attempts: Count
    error: FailureError
    failed_at: Time

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Failure:
        return cls(
            file_id=row["file_id"],
            name=row["name"],
            folder_path=row["folder_path"],
            mime_type=row["mime_type"],
            size=row["size_bytes"],
            attempts=row["attempts"],
            error=FailureError(code=row["error_code"], message=row["error_message"]),
            failed_at=row["updated_at"],
        )


class FailureList(Answer):
    failures: list[Failure]
    next_cursor: Cursor


class RetryAccepted(Answer):
    import_id: Id
    requeued: Count = Field(description="Failed files queued again.")
    status: ImportStatus


class CancelAccepted(Answer):
    import_id: Id
    status: Literal["cancelled"]


# --- images ---------------------------------------------------------------------------------------


class Camera(Answer):
    make: str | None
    model: str | None


class Image(Answer):
    id: Id
    name: str
    source: SourceName
    source_id: str = Field(description="The file's id at its source.")
    google_drive_id: str | None = Field(description="The Drive file id (Drive images only; null for others).")
    size: Count
    mime_type: str
    storage_path: str = Field(description="Where the original is, e.g. s3://bucket/key.")
    md5: str | None = Field(description="MD5 of the stored bytes.")
    checksum: str | None = Field(description="The checksum the source lists for the file, verified on copy.")
    checksum_kind: str | None = Field(
        description="How `checksum` is computed: `md5` (Drive) or `dropbox_content_hash` (Dropbox)."
    )
    width: int | None = Field(ge=0)
    height: int | None = Field(ge=0)
    taken_time: str | None = Field(description="As the camera wrote it (EXIF DateTimeOriginal).")
    camera: Camera
    folder_path: str = Field(description="Relative to the imported folder; '' at its top.")
    import_id: int | None = Field(ge=1)
    imported_at: Time
    drive_created_at: Time | None
    drive_modified_at: Time | None
    url: str
    thumbnail_url: str | None = Field(description="null until the preview is made, and when there is none.")
    preview_status: Literal["pending", "done", "none"] = Field(
        description="`pending` until the preview is made, after the image is recorded; `none`: there is none."
    )
    preview_reason: Literal["undecodable", "too_large", "missing", "failed", "disabled"] | None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Image:
        image_id = row["id"]
        return cls(
            id=image_id,
            name=row["name"],
            source=row["source"],
            source_id=row["source_id"],
            google_drive_id=row["google_drive_id"],
            size=row["size"],
            mime_type=row["mime_type"],
            storage_path=row["storage_path"],
            md5=row["md5"],
            checksum=row["checksum"],
            checksum_kind=row["checksum_kind"],
            width=row["width"],
            height=row["height"],
            taken_time=row["taken_time"],
            camera=Camera(make=row["camera_make"], model=row["camera_model"]),
            folder_path=row["folder_path"],
            import_id=row["import_id"],
            imported_at=row["imported_at"],
            drive_created_at=row["drive_created_at"],
            drive_modified_at=row["drive_modified_at"],
            url=f"/images/{image_id}/content",
            thumbnail_url=f"/images/{image_id}/thumbnail" if row["thumbnail_key"] else None,
            preview_status=row["preview_status"],
            preview_reason=row["preview_reason"],
        )


class ImageTotal(Answer):
    """How many images match the filters: counted (`exact`), or the database's estimate."""

    count: int
    exact: bool


class ImageList(Answer):
    images: list[Image]
    next_cursor: Cursor
    total: ImageTotal | None = None  # asked for with count=true


# --- operations -----------------------------------------------------------------------------------


class Health(Answer):
    status: Literal["ok"]


CheckResult = Annotated[str, Field(description="'ok' or 'unavailable: <reason>'")]


class Checks(Answer):
    """`workers` only in a process that runs embedded workers."""

    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_serialization_defaults_required=False)

    database: CheckResult
    redis: CheckResult
    storage: CheckResult
    workers: CheckResult | None = None

    def body(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


class Ready(Answer):
    status: Literal["ready"]
    checks: Checks

    def body(self) -> dict[str, Any]:
        return {"status": self.status, "checks": self.checks.body()}


class NotReady(Answer):
    error: ErrorDetail
    checks: Checks

    def body(self) -> dict[str, Any]:
        return {"error": self.error.body(), "checks": self.checks.body()}


# Every model the OpenAPI document describes, by the name it has there.
SCHEMA_MODELS: tuple[type[BaseModel], ...] = (
    Error,
    ErrorDetail,
    ImportRequest,
    ImportAccepted,
    Import,
    ImportList,
    Failure,
    FailureList,
    RetryAccepted,
    CancelAccepted,
    Image,
    ImageList,
    Health,
    Checks,
    Ready,
    NotReady,
)
