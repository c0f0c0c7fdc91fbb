"""What a shared-link listing holds, as fotoowl entries: files become Entry or Skipped, folders paths.

Dropbox sends no media types, so the type comes from the file name's extension, from a fixed table
(Python's own `mimetypes` reads the host's /etc/mime.types, which would make results differ between
machines). Entries listed through a link carry no path_lower / path_display: paths are built from the
folder listed plus the name, relative to the link's root.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from fotoowl.sources.base import Entry, Skipped

__all__ = ["CHECKSUM_KIND", "api_child_path", "folder_child_path", "guess_mime_type", "to_entry"]

CHECKSUM_KIND = "dropbox_content_hash"
GENERIC_MIME_TYPE = "application/octet-stream"

# Checked before mimetypes' defaults, which lack webp (before Python 3.13) and every camera RAW format.
_IMAGE_TYPES = {
    "jpg": "image/jpeg", "jpeg": "image/jpeg", "jpe": "image/jpeg", "png": "image/png", "gif": "image/gif",
    "webp": "image/webp", "heic": "image/heic", "heif": "image/heif", "avif": "image/avif", "jxl": "image/jxl",
    "tif": "image/tiff", "tiff": "image/tiff", "bmp": "image/bmp",
    "dng": "image/x-adobe-dng", "cr2": "image/x-canon-cr2", "cr3": "image/x-canon-cr3", "crw": "image/x-canon-crw",
    "nef": "image/x-nikon-nef", "nrw": "image/x-nikon-nrw", "arw": "image/x-sony-arw", "srf": "image/x-sony-srf",
    "sr2": "image/x-sony-sr2", "orf": "image/x-olympus-orf", "rw2": "image/x-panasonic-rw2",
    "raf": "image/x-fuji-raf", "pef": "image/x-pentax-pef", "srw": "image/x-samsung-srw",
    "x3f": "image/x-sigma-x3f", "3fr": "image/x-hasselblad-3fr", "iiq": "image/x-phaseone-iiq",
    "rwl": "image/x-leica-rwl", "raw": "image/x-panasonic-raw", "kdc": "image/x-kodak-kdc",
    "erf": "image/x-epson-erf", "mos": "image/x-leaf-mos", "mrw": "image/x-minolta-mrw",
}  # fmt: skip
# The interpreter's built-in table only: MimeTypes() never reads the host's files.
_BUILT_IN_TYPES = mimetypes.MimeTypes()


def guess_mime_type(name: str) -> str:
    extension = name.rsplit(".", 1)[-1].lower() if "." in name.strip(".") else ""
    if extension in _IMAGE_TYPES:
        return _IMAGE_TYPES[extension]
    guessed, _ = _BUILT_IN_TYPES.guess_type("x." + extension, strict=False) if extension else (None, None)
    return guessed or GENERIC_MIME_TYPE


def _safe_segment(name: str) -> str:
    """A folder name as one path segment: "/" inside names and "."/".." would change the path's shape."""
    cleaned = "".join("_" if char in "/\\" or ord(char) < 32 else char for char in name).strip()
    return cleaned if cleaned not in ("", ".", "..") else "_" + cleaned


def folder_child_path(parent: str, name: str) -> str:
    """The folder_path shown for a subfolder: names joined by "/", "" at the link's root."""
    segment = _safe_segment(name)
    return f"{parent}/{segment}" if parent else segment


def api_child_path(parent: str, name: str) -> str:
    """The path Dropbox takes for an item of the folder at `parent` ("" for the link's root): "/Sub/a.jpg"."""
    return f"{parent}/{name}"


def _optional_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _optional_size(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _optional_str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def to_entry(item: Mapping[str, Any], folder_path: str, api_folder: str) -> Entry | Skipped | None:
    """A listed file (`.tag` "file") as an Entry to copy or a Skipped; None when it has no id.

    `folder_path` is where it is shown ("Sub/Deeper"), `api_folder` the listed folder's API path
    ("/Sub/Deeper", "" at the root); the file's API path becomes the Entry's locator.
    """
    file_id = _optional_str(item.get("id"))
    if file_id is None:
        return None
    name = str(item.get("name") or "")
    mime_type = guess_mime_type(name)
    if not mime_type.startswith("image/"):
        extension = name.rsplit(".", 1)[-1].lower() if "." in name.strip(".") else ""
        why = f"the extension .{extension}" if extension else "no extension"
        return Skipped(file_id, name, folder_path, mime_type, "not_image", f"Not an image ({why}).")
    if item.get("is_downloadable") is False or item.get("export_info") is not None:
        return Skipped(
            file_id,
            name,
            folder_path,
            mime_type,
            "not_downloadable",
            "Dropbox does not allow downloading this file (its owner disabled downloads, or it exists only "
            "as an export).",
        )
    content_hash = _optional_str(item.get("content_hash"))
    return Entry(
        source_id=file_id,
        name=name,
        folder_path=folder_path,
        mime_type=mime_type,
        size_bytes=_optional_size(item.get("size")),
        checksum=content_hash,
        checksum_kind=CHECKSUM_KIND if content_hash else None,
        modified_at=_optional_time(item.get("server_modified")),
        locator=api_child_path(api_folder, name),
    )
