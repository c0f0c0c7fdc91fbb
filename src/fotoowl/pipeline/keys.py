"""Where a file's bytes go in storage, and with which Content-Type.

Keys derive from the source's file id, never from the file name: no traversal, no same-name collisions."""

from __future__ import annotations

import mimetypes
import re
import uuid

from fotoowl.config import AppSettings

_SAFE_ID = re.compile(r"^[A-Za-z0-9_-]{1,200}$")
# Stored objects carry their type only when it is an image type browsers render without running
# anything; whatever else Drive claims (SVG, HTML, junk) is stored as opaque bytes.
SAFE_CONTENT_TYPES = frozenset(
    {
        "image/jpeg",
        "image/png",
        "image/gif",
        "image/webp",
        "image/avif",
        "image/bmp",
        "image/tiff",
        "image/heic",
        "image/heif",
    }
)
# Where each process writes to find out whether storage takes writes again after an outage.


def object_key(settings: AppSettings, source: str, file_id: str, mime_type: str) -> str:
    """Derived from the Drive id, never from the file name: no traversal, no same-name collisions."""
    safe_id = file_id if _SAFE_ID.match(file_id) else uuid.uuid5(uuid.NAMESPACE_URL, file_id).hex
    # No extension for types stored as opaque bytes: S3 servers guess a Content-Type from it.
    ext = _extension(mime_type) if mime_type in SAFE_CONTENT_TYPES else ""
    return f"{source_prefix(settings, source)}{safe_id}{ext}"


def source_prefix(settings: AppSettings, source: str) -> str:
    """Where the originals of one source go: `images/google_drive/`, `images/dropbox/`."""
    return f"{settings.s3_prefix_normalised}{source}/"


def thumbnail_key(settings: AppSettings, source: str, file_id: str) -> str:
    safe_id = file_id if _SAFE_ID.match(file_id) else uuid.uuid5(uuid.NAMESPACE_URL, file_id).hex
    return f"{settings.s3_prefix_normalised}thumbnails/{source}/{safe_id}.jpg"


def _extension(mime_type: str) -> str:
    special = {"image/jpeg": ".jpg", "image/heic": ".heic", "image/heif": ".heif", "image/webp": ".webp"}
    ext = special.get(mime_type) or mimetypes.guess_extension(mime_type) or ""
    return ext if re.fullmatch(r"\.[a-z0-9]{1,8}", ext) else ""


def stored_content_type(mime_type: str) -> str:
    return mime_type if mime_type in SAFE_CONTENT_TYPES else "application/octet-stream"
