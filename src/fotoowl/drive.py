"""Google Drive v3 client for public ("Anyone with the link") folders, authenticated by an API key only.

Covers what an import needs: parsing the folder links people paste, checking the folder, walking it
page by page (subfolders, shortcuts, resource keys), and streaming file bytes with resume.

Transient failures (429, 403 rate limits, 5xx, dropped connections, timeouts) are retried here, with
truncated exponential backoff and full jitter, honouring Retry-After; everything else is raised at
once as a DriveError. The API key travels as the `key` query parameter and is scrubbed from every
message this module produces: aiohttp exceptions quote request URLs, so they are never chained.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
import re
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import parse_qs, quote, urlsplit

import aiohttp
from yarl import URL

from fotoowl.metrics import DRIVE_REQUESTS, DRIVE_RETRIES
from fotoowl.pacer import Pacer

__all__ = [
    "DRIVE_API_URL",
    "Download",
    "DriveClient",
    "DriveConfigError",
    "DriveError",
    "DriveFile",
    "FolderNotAccessible",
    "FolderRef",
    "InvalidFolderLink",
    "SkippedFile",
    "parse_folder_link",
]

log = logging.getLogger("fotoowl.drive")

DRIVE_API_URL = "https://www.googleapis.com/drive/v3"
FOLDER_MIME_TYPE = "application/vnd.google-apps.folder"
SHORTCUT_MIME_TYPE = "application/vnd.google-apps.shortcut"
GOOGLE_APPS_PREFIX = "application/vnd.google-apps."
RESOURCE_KEYS_HEADER = "X-Goog-Drive-Resource-Keys"

T = TypeVar("T")

# ---------------------------------------------------------------------------------------------------
# Links
# ---------------------------------------------------------------------------------------------------

MAX_LINK_CHARS = 2000
# Drive ids seen in the wild run from 19 (shared-drive roots) to 72+ characters.
_ID_RE = re.compile(r"[A-Za-z0-9_-]{10,100}")
_RESOURCE_KEY_RE = re.compile(r"[A-Za-z0-9_-]{1,200}")
_QUERY_ID_PAGES = frozenset({"open", "folderview", "embeddedfolderview"})
_SHARE_HINT = "Open the folder in Google Drive, choose Share > Copy link, and paste that link here."


class InvalidFolderLink(ValueError):
    """The pasted text is not a Google Drive folder link; the message says why, for the user."""


@dataclass(frozen=True, slots=True)
class FolderRef:
    folder_id: str
    resource_key: str | None = None


def _shown(text: str, limit_chars: int = 80) -> str:
    return text if len(text) <= limit_chars else text[: limit_chars - 1] + "…"


def _first_query_value(query: Mapping[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[0] if values else None


def _folder_id_from_path(segments: list[str], query: Mapping[str, list[str]]) -> str:
    if segments[:1] == ["file"] or segments == ["uc"]:
        raise InvalidFolderLink(f"This is a link to a single file, not to a folder. {_SHARE_HINT}")
    if len(segments) == 1 and segments[0] in _QUERY_ID_PAGES:
        folder_id = _first_query_value(query, "id")
        if not folder_id:
            raise InvalidFolderLink("The link has no folder id (its 'id=' part is missing).")
        return folder_id
    rest = segments[1:] if segments[:1] == ["drive"] else None
    if rest is not None and len(rest) >= 2 and rest[0] == "u" and rest[1].isdigit():
        rest = rest[2:]
    if rest is not None and rest[:1] == ["mobile"]:
        rest = rest[1:]
    if rest is None or len(rest) < 2 or rest[0] != "folders":
        raise InvalidFolderLink(f"This Google Drive link does not point to a folder. {_SHARE_HINT}")
    # /drive/u/0/mobile/folders/<parent>/<id>: the folder to open is the last segment.
    return rest[-1]


def parse_folder_link(text: str) -> FolderRef:
    """Turn a pasted Google Drive folder link (or a bare folder id) into a FolderRef."""
    text = text.strip()
    if not text:
        raise InvalidFolderLink("Paste the link of a Google Drive folder.")
    if len(text) > MAX_LINK_CHARS:
        raise InvalidFolderLink(f"The link is too long ({len(text)} characters); Drive folder links are short.")
    if _ID_RE.fullmatch(text):
        return FolderRef(text)
    if any(char.isspace() for char in text):
        raise InvalidFolderLink("The link contains spaces; paste a single Google Drive folder link.")
    url = text if "://" in text else "https://" + text
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise InvalidFolderLink("This is not a valid web link.") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise InvalidFolderLink("Only http(s) links to drive.google.com are accepted.")
    if "@" in parts.netloc:
        raise InvalidFolderLink("The link hides another address behind an '@'; paste the link from Google Drive.")
    host = (parts.hostname or "").rstrip(".")
    if host == "docs.google.com":
        raise InvalidFolderLink(f"This is a Google Docs, Sheets or Slides link, not a Drive folder. {_SHARE_HINT}")
    if host != "drive.google.com" or port not in (None, 80, 443):
        raise InvalidFolderLink(
            f"Only drive.google.com links are accepted; this one points to {_shown(parts.netloc)!r}."
        )
    query = parse_qs(parts.query)
    folder_id = _folder_id_from_path([s for s in parts.path.split("/") if s], query)
    if not _ID_RE.fullmatch(folder_id):
        raise InvalidFolderLink(f"The folder id {_shown(folder_id)!r} in the link looks malformed.")
    resource_key = _first_query_value(query, "resourcekey")
    if resource_key is not None and not _RESOURCE_KEY_RE.fullmatch(resource_key):
        raise InvalidFolderLink("The link's 'resourcekey' part looks malformed.")
    return FolderRef(folder_id, resource_key)


# ---------------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------------


class DriveError(Exception):
    """A failed Drive request. `reason` is Google's first errors[].reason, else a code of ours."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 0,
        reason: str = "",
        transient: bool = False,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.reason = reason
        self.transient = transient
        self.retry_after_s = retry_after_s


class DriveConfigError(DriveError):
    """The API key is missing, invalid or restricted, or the Drive API is not enabled for it."""


class FolderNotAccessible(DriveError):
    """The root folder does not exist, is not shared publicly, is trashed, or is not a folder."""


NOT_SHARED_MESSAGE = (
    "Google Drive cannot find this folder. Check the link, and make sure the folder is shared as "
    "'Anyone with the link' (General access > Anyone with the link > Viewer)."
)

_RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_RATE_LIMIT_REASONS = frozenset({"userRateLimitExceeded", "rateLimitExceeded"})
_CONFIG_REASONS = frozenset(
    {
        "keyInvalid",
        "keyExpired",
        "accessNotConfigured",
        "ipRefererBlocked",
        "API_KEY_INVALID",
        "API_KEY_EXPIRED",
        "API_KEY_SERVICE_BLOCKED",
        "API_KEY_HTTP_REFERRER_BLOCKED",
        "API_KEY_IP_ADDRESS_BLOCKED",
        "SERVICE_DISABLED",
        "CONSUMER_INVALID",
    }
)


def is_rate_limit(error: DriveError) -> bool:
    """Google asking us to slow down (not a per-file download quota, which says nothing of pace)."""
    return error.status == 429 or (error.status == 403 and error.reason in _RATE_LIMIT_REASONS)


# Retry-After is honoured, but a broken proxy must not park a worker for a day.
MAX_RETRY_AFTER_S = 600.0


@dataclass(frozen=True, slots=True)
class _ErrorBody:
    reasons: tuple[str, ...]
    message: str


def _parse_error_body(body: bytes) -> _ErrorBody:
    """Read Google's {"error": {"errors": [{"reason"}], "details": [{"reason"}], "message"}}."""
    try:
        error = json.loads(body.decode("utf-8", "replace")).get("error")
    except (ValueError, AttributeError):
        return _ErrorBody((), "")
    if not isinstance(error, dict):
        return _ErrorBody((), str(error) if isinstance(error, str) else "")
    reasons = [e.get("reason") for e in error.get("errors") or [] if isinstance(e, dict)]
    reasons += [d.get("reason") for d in error.get("details") or [] if isinstance(d, dict)]
    message = error.get("message")
    return _ErrorBody(tuple(r for r in reasons if isinstance(r, str) and r), str(message or ""))


def _parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        delay_s = float(value)
    except ValueError:
        try:
            delay_s = (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds()
        except (TypeError, ValueError):
            return None
    return min(max(delay_s, 0.0), MAX_RETRY_AFTER_S)


def _config_hint(status: int, reasons: tuple[str, ...], message: str, has_key: bool) -> str | None:
    """A user-facing explanation when the failure is the API key's or project's, else None."""
    lowered = message.lower()
    if "accessNotConfigured" in reasons or "SERVICE_DISABLED" in reasons:
        return "The Google Drive API is not enabled for the API key's Google Cloud project: enable it there."
    if set(reasons) & _CONFIG_REASONS or (status == 400 and "api key" in lowered):
        return "The Google API key is not valid (or is restricted): check the configured key."
    if status == 401 or (
        status == 403 and "forbidden" in reasons and (not has_key or "unregistered" in lowered or "api key" in lowered)
    ):
        return "Google Drive refused the request for lack of a valid API key: configure one."
    return None


def _error_from_response(
    status: int, body: bytes, headers: Mapping[str, str], *, has_key: bool, redact: Callable[[str], str]
) -> DriveError:
    parsed = _parse_error_body(body)
    reason = parsed.reasons[0] if parsed.reasons else f"http{status}"
    message = redact(parsed.message or f"Google Drive answered HTTP {status}")
    hint = _config_hint(status, parsed.reasons, message, has_key)
    if hint is not None:
        return DriveConfigError(f"{hint} (Google Drive said: {message})", status=status, reason=reason)
    transient = status in _RETRYABLE_STATUSES or (status == 403 and reason in _RATE_LIMIT_REASONS)
    return DriveError(
        message,
        status=status,
        reason=reason,
        transient=transient,
        retry_after_s=_parse_retry_after(headers.get("Retry-After")),
    )


_KEY_PARAM_RE = re.compile(r"(?i)([?&;]key=)[^&#\s'\"]*")


# ---------------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------------
# Client
# ---------------------------------------------------------------------------------------------------

_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 5
_GOOGLE_DOWNLOAD_HOSTS = frozenset({"www.googleapis.com", "drive.google.com", "drive.usercontent.google.com"})
_TRANSPORT_ERRORS = (aiohttp.ClientError, TimeoutError, OSError)
_CONTENT_RANGE_RE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


@dataclass(slots=True)
class _WalkState:
    recursive: bool
    resource_keys: dict[str, str]
    visited_folders: set[str]
    seen_items: set[str] = field(default_factory=set)
    pending: deque[tuple[str, str]] = field(default_factory=deque)

    def enqueue_folder(self, folder_id: str, folder_path: str) -> None:
        if self.recursive and folder_id not in self.visited_folders:
            self.visited_folders.add(folder_id)
            self.pending.append((folder_id, folder_path))


class DriveClient:
    """Drive v3 with an API key. The session is the caller's; this client never closes it."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        api_url: str,
        api_key: str | None,
        pacer: Pacer | None = None,
        max_tries: int = 8,
        backoff_base_s: float = 1.0,
        backoff_cap_s: float = 32.0,
        read_timeout_s: float = 60.0,
        page_size: int = 1000,
        connect_timeout_s: float = 15.0,
    ) -> None:
        self._session = session
        self._api_url = api_url.rstrip("/")
        self._api_key = api_key or None
        self._pacer = pacer
        self.max_tries = max(1, max_tries)
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.page_size = min(1000, max(1, page_size))
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout_s, sock_read=read_timeout_s)
        self._api_origin = URL(self._api_url).origin()
        self._rng = random.Random()

    def __repr__(self) -> str:
        return f"DriveClient(api_url={self._api_url!r})"

    # -- plumbing ------------------------------------------------------------------------------------

    def redact(self, text: str) -> str:
        """Remove the API key from text that may quote a request URL."""
        if self._api_key:
            text = text.replace(self._api_key, "REDACTED")
        return _KEY_PARAM_RE.sub(r"\1REDACTED", text)

    def _transport_error(self, exc: BaseException) -> DriveError:
        detail = self.redact(f"{type(exc).__name__}: {exc}".rstrip(": "))
        return DriveError(f"Network error talking to Google Drive ({detail})", reason="transport", transient=True)

    def _http_error(self, status: int, body: bytes, headers: Mapping[str, str]) -> DriveError:
        return _error_from_response(status, body, headers, has_key=self._api_key is not None, redact=self.redact)

    def _key_params(self) -> dict[str, str]:
        return {"key": self._api_key} if self._api_key else {}

    @staticmethod
    def _resource_key_headers(item_id: str, resource_keys: Mapping[str, str]) -> dict[str, str]:
        key = resource_keys.get(item_id)
        return {RESOURCE_KEYS_HEADER: f"{item_id}/{key}"} if key else {}

    def backoff_s(self, attempt: int, retry_after_s: float | None) -> float:
        """Full jitter over a doubling, capped ceiling; never shorter than the server's Retry-After."""
        ceiling_s = min(self.backoff_cap_s, self.backoff_base_s * 2.0 ** min(attempt - 1, 30))
        delay_s = self._rng.uniform(0.0, ceiling_s)
        return max(delay_s, retry_after_s) if retry_after_s is not None else delay_s

    async def _pause_before_retry(self, error: DriveError, attempt: int, kind: str, item_id: str) -> None:
        pace = ""
        extra: dict[str, object] = {}
        if self._pacer is not None and is_rate_limit(error):
            pace_per_s = await self._pacer.slow_down()
            pace = f"; pacing Drive requests at {pace_per_s:.1f}/s"
            extra["pace_per_s"] = round(pace_per_s, 1)
        delay_s = self.backoff_s(attempt, error.retry_after_s)
        DRIVE_RETRIES.labels(error.reason or "unknown").inc()
        log.warning(
            "Drive %s request for %s failed (%s %s, attempt %d); retrying in %.2f s%s",
            kind,
            item_id,
            error.status,
            error.reason,
            attempt,
            delay_s,
            pace,
            extra={
                "drive_kind": kind,
                "file_id": item_id,
                "status": error.status,
                "reason": error.reason,
                "attempt": attempt,
                "delay_s": round(delay_s, 3),
                **extra,
            },
        )
        await asyncio.sleep(delay_s)

    async def _retrying(self, kind: str, item_id: str, attempt_once: Callable[[], Awaitable[T]]) -> T:
        attempt = 0
        while True:
            attempt += 1
            if self._pacer is not None:
                await self._pacer.acquire()
            try:
                return await attempt_once()
            except DriveError as error:
                if not error.transient or attempt >= self.max_tries:
                    raise
                await self._pause_before_retry(error, attempt, kind, item_id)

    async def _get_json_once(
        self, kind: str, url: str, params: Mapping[str, str], headers: Mapping[str, str]
    ) -> dict[str, Any]:
        try:
            async with self._session.get(
                url,
                params={**params, **self._key_params()},
                headers=headers,
                timeout=self._timeout,
                allow_redirects=False,
            ) as response:
                DRIVE_REQUESTS.labels(kind, str(response.status)).inc()
                body = await response.read()
                status, response_headers = response.status, response.headers
        except _TRANSPORT_ERRORS as exc:
            DRIVE_REQUESTS.labels(kind, "error").inc()
            raise self._transport_error(exc) from None
        if status != 200:
            raise self._http_error(status, body, response_headers)
        return self._json_object(body)

    @staticmethod
    def _json_object(body: bytes) -> dict[str, Any]:
        try:
            value = json.loads(body)
        except ValueError:
            value = None
        if not isinstance(value, dict):
            raise DriveError(
                "Google Drive sent an unreadable answer", status=200, reason="invalidResponse", transient=True
            )
        return value

    async def _get_json(
        self, kind: str, path: str, params: Mapping[str, str], item_id: str, resource_keys: Mapping[str, str]
    ) -> dict[str, Any]:
        url = self._api_url + path
        headers = self._resource_key_headers(item_id, resource_keys)
        log.debug("Drive %s request for %s", kind, item_id, extra={"drive_kind": kind, "file_id": item_id})
        return await self._retrying(kind, item_id, lambda: self._get_json_once(kind, url, params, headers))

    async def _get_item(self, item_id: str, fields: str, resource_keys: Mapping[str, str]) -> dict[str, Any]:
        params = {"fields": fields, "supportsAllDrives": "true"}
        return await self._get_json("get", f"/files/{quote(item_id, safe='')}", params, item_id, resource_keys)

    async def _list_page(
        self, folder_id: str, page_token: str | None, resource_keys: Mapping[str, str]
    ) -> dict[str, Any]:
        escaped = folder_id.replace("\\", "\\\\").replace("'", "\\'")
        params = {
            "q": f"'{escaped}' in parents and trashed = false",
            "fields": LIST_FIELDS,
            "pageSize": str(self.page_size),
            "supportsAllDrives": "true",
            "includeItemsFromAllDrives": "true",
        }
        if page_token:
            params["pageToken"] = page_token
        return await self._get_json("list", "/files", params, folder_id, resource_keys)

    # -- folders -------------------------------------------------------------------------------------

    async def get_folder(self, ref: FolderRef) -> dict[str, Any]:
        """Metadata of the root folder; raises FolderNotAccessible unless it is a visible folder."""
        keys = {ref.folder_id: ref.resource_key} if ref.resource_key else {}
        item = await self._get_root_item(ref.folder_id, keys)
        if item.get("mimeType") == SHORTCUT_MIME_TYPE:
            details = item.get("shortcutDetails") or {}
            target_id = str(details.get("targetId") or "")
            if details.get("targetResourceKey"):
                keys[target_id] = str(details["targetResourceKey"])
            if target_id:
                item = await self._get_root_item(target_id, keys)
        if item.get("trashed") is True:
            raise FolderNotAccessible("This folder is in its owner's trash.", status=200, reason="trashed")
        if item.get("mimeType") != FOLDER_MIME_TYPE:
            raise FolderNotAccessible(
                "The link points to a file, not a folder: paste the link of the folder holding the images.",
                status=200,
                reason="notAFolder",
            )
        return item

    async def _get_root_item(self, item_id: str, resource_keys: Mapping[str, str]) -> dict[str, Any]:
        try:
            return await self._get_item(item_id, ITEM_FIELDS, resource_keys)
        except DriveError as error:
            if error.status == 404:
                raise FolderNotAccessible(NOT_SHARED_MESSAGE, status=404, reason=error.reason) from None
            raise

    async def walk(self, ref: FolderRef, *, recursive: bool = True) -> AsyncIterator[list[DriveFile | SkippedFile]]:
        """Yield, per listed page, the images found and the items skipped (empty batches are not yielded).

        Folders are listed breadth first. Each file is yielded once even when shortcuts reach it
        again; a folder reached again (a shortcut loop) is not listed again; trashed items are not
        listed. A shortcut to a file yields the target (its id, name and metadata) at the
        shortcut's folder path; a shortcut to a folder is walked under the shortcut's name.
        """
        root = await self.get_folder(ref)
        root_id = str(root["id"])
        keys: dict[str, str] = {}
        root_key = _optional_str(root.get("resourceKey")) or (ref.resource_key if root_id == ref.folder_id else None)
        if root_key:
            keys[root_id] = root_key
        state = _WalkState(recursive=recursive, resource_keys=keys, visited_folders={root_id})
        state.pending.append((root_id, ""))
        while state.pending:
            folder_id, folder_path = state.pending.popleft()
            seen_tokens: set[str] = set()
            page_token: str | None = None
            while True:
                page = await self._list_page(folder_id, page_token, keys)
                batch: list[DriveFile | SkippedFile] = []
                for item in page.get("files") or []:
                    entry = await self._visit(item, folder_path, state)
                    if entry is not None:
                        batch.append(entry)
                if batch:
                    yield batch
                page_token = _optional_str(page.get("nextPageToken"))
                if page_token is None or page_token in seen_tokens:
                    break
                seen_tokens.add(page_token)

    async def _visit(
        self, item: Mapping[str, Any], folder_path: str, state: _WalkState
    ) -> DriveFile | SkippedFile | None:
        item_id = _optional_str(item.get("id"))
        if item_id is None:
            return None
        if key := _optional_str(item.get("resourceKey")):
            state.resource_keys[item_id] = key
        mime_type = item.get("mimeType")
        if mime_type == FOLDER_MIME_TYPE:
            state.enqueue_folder(item_id, _join_path(folder_path, _item_name(item)))
            return None
        if mime_type == SHORTCUT_MIME_TYPE:
            return await self._visit_shortcut(item, item_id, folder_path, state)
        if item_id in state.seen_items:
            return None
        state.seen_items.add(item_id)
        return _to_entry(item, folder_path)

    async def _visit_shortcut(
        self, item: Mapping[str, Any], shortcut_id: str, folder_path: str, state: _WalkState
    ) -> DriveFile | SkippedFile | None:
        details = item.get("shortcutDetails")
        details = details if isinstance(details, dict) else {}
        target_id = _optional_str(details.get("targetId"))
        name = _item_name(item)

        def dangling(why: str) -> SkippedFile:
            return SkippedFile(shortcut_id, name, SHORTCUT_MIME_TYPE, folder_path, "dangling_shortcut", why)

        if target_id is None:
            return dangling("The shortcut has no target.")
        if key := _optional_str(details.get("targetResourceKey")):
            state.resource_keys[target_id] = key
        if details.get("targetMimeType") == FOLDER_MIME_TYPE and not state.recursive:
            return None
        if target_id in state.visited_folders or target_id in state.seen_items:
            return None
        try:
            # The target type recorded in the shortcut can be stale: ask for the target itself.
            target = await self._get_item(target_id, ITEM_FIELDS, state.resource_keys)
        except DriveConfigError:
            raise
        except DriveError as error:
            if error.transient:
                raise
            return dangling(f"The shortcut's target cannot be opened ({error.reason}).")
        if key := _optional_str(target.get("resourceKey")):
            state.resource_keys[target_id] = key
        if target.get("trashed") is True:
            return dangling("The shortcut's target is in the trash.")
        target_type = target.get("mimeType")
        if target_type == FOLDER_MIME_TYPE:
            state.enqueue_folder(target_id, _join_path(folder_path, name))
            return None
        if target_type == SHORTCUT_MIME_TYPE:
            return dangling("The shortcut points to another shortcut.")
        state.seen_items.add(target_id)
        return _to_entry(target, folder_path)

    # -- downloads -----------------------------------------------------------------------------------

    def download(
        self,
        file_id: str,
        *,
        resource_key: str | None = None,
        chunk_size_bytes: int = 1 << 20,
        expected_size_bytes: int | None = None,
        compute_md5: bool = True,
    ) -> Download:
        """Stream a file's bytes; iterate the result, then read md5_hex and bytes_read.

        `compute_md5=False` for a consumer that hashes the bytes itself (storage does): MD5 costs
        about 2 ms of event-loop time per MiB.
        """
        return Download(
            self,
            file_id,
            resource_key=resource_key,
            chunk_size_bytes=chunk_size_bytes,
            expected_size_bytes=expected_size_bytes,
            compute_md5=compute_md5,
        )

    def _allowed_download_url(self, url: URL) -> bool:
        if url.origin() == self._api_origin:
            return True
        host = (url.host or "").lower()
        return url.scheme == "https" and (host in _GOOGLE_DOWNLOAD_HOSTS or host.endswith(".googleusercontent.com"))

    async def _open_media(self, file_id: str, resource_key: str | None, offset_bytes: int) -> aiohttp.ClientResponse:
        """One media request, following redirects by hand; returns an open 200/206 response."""
        url = URL(f"{self._api_url}/files/{quote(file_id, safe='')}").update_query(
            {"alt": "media", "supportsAllDrives": "true", **self._key_params()}
        )
        headers = {"Accept-Encoding": "identity"}
        if offset_bytes > 0:
            headers["Range"] = f"bytes={offset_bytes}-"
        api_headers = {
            **headers,
            **({RESOURCE_KEYS_HEADER: f"{file_id}/{resource_key}"} if resource_key else {}),
        }
        for hop in range(MAX_REDIRECTS + 1):
            try:
                response = await self._session.get(
                    url,
                    headers=api_headers if hop == 0 else headers,
                    allow_redirects=False,
                    timeout=self._timeout,
                )
            except _TRANSPORT_ERRORS as exc:
                DRIVE_REQUESTS.labels("media", "error").inc()
                raise self._transport_error(exc) from None
            DRIVE_REQUESTS.labels("media", str(response.status)).inc()
            if response.status in (200, 206):
                return response
            if response.status in _REDIRECT_STATUSES:
                location = response.headers.get("Location", "")
                response.release()
                target = _redirect_target(url, location)
                if target is None or not self._allowed_download_url(target):
                    host = target.host if target is not None else None
                    raise DriveError(
                        f"Google Drive redirected the download to an unexpected host ({host or 'none'}).",
                        status=response.status,
                        reason="unexpectedRedirect",
                    )
                url = target
                continue
            try:
                body = await response.read()
            except _TRANSPORT_ERRORS:
                body = b""
            finally:
                response.release()
            raise self._http_error(response.status, body, response.headers)
        raise DriveError("Too many redirects while downloading from Google Drive.", reason="tooManyRedirects")


def _redirect_target(current: URL, location: str) -> URL | None:
    """Where a Location header points, resolved against the current URL; None if it names no usable host.

    yarl raises ValueError for malformed URLs (`http://[::1`, a port over 65535); escaping from here it
    would end the whole transfer batch instead of failing one file. yarl also resolves an empty authority
    (`//`, `///x`) to the current host, which would send us round in circles until tooManyRedirects.
    """
    location = location.strip()
    if not location:
        return None
    try:
        reference = URL(location)
        if (reference.scheme or location.startswith("//")) and not reference.host:
            return None
        target = current.join(reference)
    except ValueError:
        return None
    if target.scheme not in ("http", "https") or not target.host:
        return None
    return target


def _content_range(value: str | None) -> tuple[int, int | None] | None:
    """(first byte, total size or None) from a Content-Range header."""
    match = _CONTENT_RANGE_RE.fullmatch((value or "").strip())
    if match is None:
        return None
    total = match.group(3)
    return int(match.group(1)), (None if total == "*" else int(total))


class Download:
    """Async iterator of a file's bytes, resuming with Range after a dropped connection.

    Use `async with client.download(...) as d: async for chunk in d: ...` or call aclose() when
    stopping early, so the connection is released.
    """

    def __init__(
        self,
        client: DriveClient,
        file_id: str,
        *,
        resource_key: str | None,
        chunk_size_bytes: int,
        expected_size_bytes: int | None,
        compute_md5: bool = True,
    ) -> None:
        if chunk_size_bytes < 1:
            raise ValueError("chunk_size_bytes must be positive")
        self.file_id = file_id
        self.bytes_read = 0
        self._client = client
        self._resource_key = resource_key
        self._chunk_size_bytes = chunk_size_bytes
        self._total_bytes = expected_size_bytes
        self._md5 = hashlib.md5(usedforsecurity=False) if compute_md5 else None
        self._chunks: AsyncGenerator[bytes, None] | None = None

    def __repr__(self) -> str:
        return f"Download(file_id={self.file_id!r}, bytes_read={self.bytes_read})"

    @property
    def md5_hex(self) -> str:
        if self._md5 is None:
            raise ValueError("this download was opened with compute_md5=False")
        return self._md5.hexdigest()

    def __aiter__(self) -> AsyncIterator[bytes]:
        if self._chunks is None:
            self._chunks = self._stream()
        return self._chunks

    async def aclose(self) -> None:
        if self._chunks is not None:
            await self._chunks.aclose()

    async def __aenter__(self) -> Download:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def _bytes_to_skip(self, response: aiohttp.ClientResponse) -> int:
        """Check where the response starts; returns how many leading bytes repeat what we have."""
        offset = self.bytes_read
        if response.status == 200:
            # A server may ignore Range and send everything again: drop what we already have.
            if response.content_length is not None:
                self._total_bytes = response.content_length
            return offset
        parsed = _content_range(response.headers.get("Content-Range"))
        if parsed is None or parsed[0] > offset:
            raise DriveError(
                "Google Drive answered a resumed download with an unusable range.",
                status=response.status,
                reason="badRange",
            )
        if parsed[1] is not None:
            self._total_bytes = parsed[1]
        return offset - parsed[0]

    def _finished(self) -> bool:
        # Zero bytes are never "finished" early: an empty file still needs its one request.
        return self._total_bytes is not None and self.bytes_read >= self._total_bytes and self.bytes_read > 0

    async def _stream(self) -> AsyncGenerator[bytes, None]:
        client = self._client
        attempt = 0
        while True:
            attempt += 1
            response: aiohttp.ClientResponse | None = None
            try:
                if client._pacer is not None:
                    await client._pacer.acquire()
                if attempt > 1:
                    if self._finished():
                        return
                    log.info(
                        "Retrying Drive download of %s from byte %d",
                        self.file_id,
                        self.bytes_read,
                        extra={"file_id": self.file_id, "offset_bytes": self.bytes_read, "attempt": attempt},
                    )
                response = await client._open_media(self.file_id, self._resource_key, self.bytes_read)
                skip_bytes = self._bytes_to_skip(response)
                async for chunk in response.content.iter_chunked(self._chunk_size_bytes):
                    if skip_bytes:
                        cut = min(skip_bytes, len(chunk))
                        chunk, skip_bytes = chunk[cut:], skip_bytes - cut
                        if not chunk:
                            continue
                    if self._md5 is not None:
                        self._md5.update(chunk)
                    self.bytes_read += len(chunk)
                    yield chunk
                if skip_bytes or (self._total_bytes is not None and self.bytes_read < self._total_bytes):
                    raise DriveError(
                        "The download ended early.",
                        status=response.status,
                        reason="truncated",
                        transient=True,
                    )
                return
            except DriveError as error:
                failure = error
            except _TRANSPORT_ERRORS as exc:
                DRIVE_REQUESTS.labels("media", "error").inc()
                failure = client._transport_error(exc)
            finally:
                if response is not None:
                    response.close()
            if failure.status == 416 and self._finished():
                return
            if not failure.transient or attempt >= client.max_tries:
                raise failure
            await client._pause_before_retry(failure, attempt, "media", self.file_id)
