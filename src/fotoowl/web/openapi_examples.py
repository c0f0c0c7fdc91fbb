"""Sample answers of the OpenAPI document (GET /openapi.json); docs/curl.md shows the same ones."""

from __future__ import annotations

from typing import Any

IMPORT_EXAMPLE: dict[str, Any] = {
    "id": 42,
    "source": "google_drive",
    "folder_id": "1AbCdEfGhIjKlMnOpQrStUvWxYz012345",
    "folder_url": "https://drive.google.com/drive/folders/1AbCdEfGhIjKlMnOpQrStUvWxYz012345",
    "folder_name": "Wedding 2026",
    "recursive": True,
    "reader": "api",
    "status": "running",
    "counts": {"found": 1200, "imported": 480, "skipped": 10, "failed": 2, "pending": 708},
    "bytes": {"found": 3145728000, "imported": 1258291200},
    "rate": {"files_per_s": 16.0, "bytes_per_s": 41943040},
    "eta_s": 44.2,
    "error": None,
    "created_at": "2026-05-01T10:00:00Z",
    "started_at": "2026-05-01T10:00:01Z",
    "finished_at": None,
    "urls": {
        "self": "/imports/42",
        "failures": "/imports/42/failures",
        "images": "/images?import_id=42",
        "page": "/ui/imports/42",
    },
}
IMAGE_EXAMPLE: dict[str, Any] = {
    "id": 1001,
    "name": "IMG_0001.jpg",
    "source": "google_drive",
    "source_id": "1ZyXwVuTsRqPoNmLkJiHgFeDcBa987654",
    "google_drive_id": "1ZyXwVuTsRqPoNmLkJiHgFeDcBa987654",
    "size": 2621440,
    "mime_type": "image/jpeg",
    "storage_path": "s3://fotoowl/images/1ZyXwVuTsRqPoNmLkJiHgFeDcBa987654",
    "md5": "9e107d9d372bb6826bd81d3542a419d6",
    "checksum": "9e107d9d372bb6826bd81d3542a419d6",
    "checksum_kind": "md5",
    "width": 4032,
    "height": 3024,
    "taken_time": "2026:04:30 18:22:05",
    "camera": {"make": "Canon", "model": "EOS R6"},
    "folder_path": "Ceremony",
    "import_id": 42,
    "imported_at": "2026-05-01T10:00:03Z",
    "drive_created_at": "2026-04-30T20:00:00Z",
    "drive_modified_at": "2026-04-30T20:00:00Z",
    "url": "/images/1001/content",
    "thumbnail_url": "/images/1001/thumbnail",
}
FAILURE_EXAMPLE: dict[str, Any] = {
    "file_id": "1QwErTyUiOpAsDfGhJkLzXcVbNm567890",
    "name": "IMG_0077.jpg",
    "folder_path": "Ceremony/Party",
    "mime_type": "image/jpeg",
    "size": 3145728,
    "attempts": 3,
    "error": {"code": "downloadQuotaExceeded", "message": "The download quota for this file has been exceeded."},
    "failed_at": "2026-05-01T10:02:10Z",
}
NOT_FOUND_EXAMPLE = {"error": {"code": "not_found", "message": "There is no import 999999."}}
