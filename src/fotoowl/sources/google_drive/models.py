"""What Drive lists: DriveFile and SkippedFile, the fields masks asked for, and the parsing of file resources."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

__all__ = ["DriveFile", "SkippedFile"]

FOLDER_MIME_TYPE = "application/vnd.google-apps.folder"
SHORTCUT_MIME_TYPE = "application/vnd.google-apps.shortcut"
GOOGLE_APPS_PREFIX = "application/vnd.google-apps."
RESOURCE_KEYS_HEADER = "X-Goog-Drive-Resource-Keys"


@dataclass(frozen=True, slots=True)
class DriveFile:
    """An image to copy. `folder_path` is "" in the root folder, else folder names joined by "/"."""

    id: str
    name: str
    mime_type: str
    folder_path: str
    size_bytes: int
    md5: str | None
    resource_key: str | None
    created_time: datetime | None
    modified_time: datetime | None
    width: int | None
    height: int | None
    taken_time: str | None
    camera_make: str | None
    camera_model: str | None


@dataclass(frozen=True, slots=True)
class SkippedFile:
    """An item of the folder that will not be copied, with a stable reason code and a message."""

    id: str
    name: str
    mime_type: str
    folder_path: str
    reason: str
    message: str


# Drive usually recognises images itself; camera RAW and newer formats often arrive as
# application/octet-stream, so for generic types only the extension decides.
_GENERIC_MIME_TYPES = frozenset(
    {
        "",
        "application/octet-stream",
        "binary/octet-stream",
        "application/unknown",
        "application/x-unknown",
    }
)
IMAGE_EXTENSIONS_FOR_GENERIC_TYPES = frozenset({
    "3fr", "arw", "avif", "cr2", "cr3", "crw", "dcr", "dng", "erf", "heic", "heif", "iiq", "jxl", "k25",
    "kdc", "mef", "mos", "mrw", "nef", "nrw", "orf", "pef", "raf", "raw", "rw2", "rwl", "sr2", "srf",
    "srw", "x3f",
})  # fmt: skip

_IMAGE_METADATA_FIELDS = "imageMediaMetadata(width,height,time,cameraMake,cameraModel)"
_SHORTCUT_FIELDS = "shortcutDetails(targetId,targetMimeType,targetResourceKey)"
ITEM_FIELDS = (
    "id,name,mimeType,size,md5Checksum,resourceKey,createdTime,modifiedTime,trashed,"
    f"{_IMAGE_METADATA_FIELDS},{_SHORTCUT_FIELDS}"
)
LIST_FIELDS = f"nextPageToken,files({ITEM_FIELDS})"


def _skip_reason(mime_type: str, name: str) -> tuple[str, str] | None:
    if mime_type.startswith(GOOGLE_APPS_PREFIX):
        return (
            "google_native",
            "Google Docs, Sheets, Slides and other Google-native files have no image to copy.",
        )
    if mime_type.startswith("image/"):
        return None
    extension = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    if mime_type in _GENERIC_MIME_TYPES and extension in IMAGE_EXTENSIONS_FOR_GENERIC_TYPES:
        return None
    return "not_image", f"Not an image (type {mime_type or 'unknown'})."


def _optional_int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return None
    return None


def _optional_str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _optional_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _safe_segment(name: str) -> str:
    """A folder name as one path segment: "/" inside names and "."/".." would change the path's shape."""
    cleaned = "".join("_" if char in "/\\" or ord(char) < 32 else char for char in name).strip()
    return cleaned if cleaned not in ("", ".", "..") else "_" + cleaned


def _join_path(parent: str, name: str) -> str:
    segment = _safe_segment(name)
    return f"{parent}/{segment}" if parent else segment


def _item_name(item: Mapping[str, Any]) -> str:
    return str(item.get("name") or "")


def _to_entry(item: Mapping[str, Any], folder_path: str) -> DriveFile | SkippedFile:
    mime_type = str(item.get("mimeType") or "")
    name = _item_name(item)
    skip = _skip_reason(mime_type, name)
    if skip is not None:
        return SkippedFile(str(item["id"]), name, mime_type, folder_path, skip[0], skip[1])
    metadata = item.get("imageMediaMetadata")
    metadata = metadata if isinstance(metadata, dict) else {}
    return DriveFile(
        id=str(item["id"]),
        name=name,
        mime_type=mime_type,
        folder_path=folder_path,
        size_bytes=_optional_int(item.get("size")) or 0,
        md5=_optional_str(item.get("md5Checksum")),
        resource_key=_optional_str(item.get("resourceKey")),
        created_time=_optional_time(item.get("createdTime")),
        modified_time=_optional_time(item.get("modifiedTime")),
        width=_optional_int(metadata.get("width")),
        height=_optional_int(metadata.get("height")),
        taken_time=_optional_str(metadata.get("time")),
        camera_make=_optional_str(metadata.get("cameraMake")),
        camera_model=_optional_str(metadata.get("cameraModel")),
    )
