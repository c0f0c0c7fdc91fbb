"""A Google Drive v3 emulator for public folders, so the real client runs against it unchanged.

Serves files.list (`GET /drive/v3/files`) and files.get (`GET /drive/v3/files/{id}`, with
`alt=media` for the bytes) the way Google does for an API-key caller: key checks, `q` parsing,
`fields` masks, opaque page tokens, resource keys, Google-shaped error bodies, redirects to a
download host, Range requests. Faults (rate limits, 5xx, dropped connections, slow bodies...) can
be injected per file or at random from a seed, a per-second query quota can be enforced as
Google's is, and counters record what the client asked for.

The tree is declared in code (`add_folder`, `add_image`, `add_shortcut`...), or built by
`build_demo_tree`. File contents are generated images padded to any size without being held in
memory (see fotoowl.testing.images).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import random
import re
import secrets
import string
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, Literal

from aiohttp import web

from fotoowl.testing.images import FORMAT_MIME_TYPES, Content, render_image

__all__ = [
    "API_PREFIX",
    "DEMO_API_KEY",
    "DemoTree",
    "DriveEmulator",
    "Fault",
    "Item",
    "build_demo_tree",
    "error_body",
    "parse_fields",
    "parse_query",
    "parse_range",
    "running_emulator",
    "serve_demo",
    "start_emulator",
]

API_PREFIX = "/drive/v3"
DOWNLOAD_PREFIX = "/download/drive-usercontent"
DEMO_API_KEY = "emulator-key"

FOLDER_MIME_TYPE = "application/vnd.google-apps.folder"
SHORTCUT_MIME_TYPE = "application/vnd.google-apps.shortcut"
DOCUMENT_MIME_TYPE = "application/vnd.google-apps.document"
SPREADSHEET_MIME_TYPE = "application/vnd.google-apps.spreadsheet"
GOOGLE_APPS_PREFIX = "application/vnd.google-apps."
RESOURCE_KEYS_HEADER = "X-Goog-Drive-Resource-Keys"

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
_SERVE_CHUNK_BYTES = 1 << 16
_ID_ALPHABET = string.ascii_letters + string.digits + "-_"
_EPOCH = datetime(2024, 1, 1, 9, 0, tzinfo=UTC)

FaultOn = Literal["list", "get", "media", "any"]

# ---------------------------------------------------------------------------------------------------
# Error bodies
# ---------------------------------------------------------------------------------------------------

_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    416: "OUT_OF_RANGE",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_REASON_TEXT = {
    "rateLimitExceeded": ("usageLimits", "Rate Limit Exceeded"),
    "userRateLimitExceeded": (
        "usageLimits",
        "User Rate Limit Exceeded. Rate of requests for user exceed configured project quota.",
    ),
    "dailyLimitExceeded": ("usageLimits", "Daily Limit Exceeded"),
    "downloadQuotaExceeded": ("usageLimits", "The download quota for this file has been exceeded."),
    "cannotDownloadAbusiveFile": (
        "global",
        "This file has been identified as malware or spam and cannot be downloaded.",
    ),
    "cannotDownloadFile": ("global", "The requested user cannot download this file."),
    "fileNotDownloadable": (
        "global",
        "Only files with binary content can be downloaded. Use Export with Docs Editors files.",
    ),
    "backendError": ("global", "Backend Error"),
    "internalError": ("global", "Internal Error"),
}
_DEFAULT_REASONS = {429: "rateLimitExceeded", 500: "backendError", 503: "backendError", 504: "backendError"}


def error_body(
    status: int,
    reason: str,
    message: str,
    *,
    domain: str = "global",
    location: str | None = None,
    details: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Google's JSON error envelope."""
    entry: dict[str, Any] = {"message": message, "domain": domain, "reason": reason}
    if location is not None:
        entry.update(location=location, locationType="parameter")
    error: dict[str, Any] = {"code": status, "message": message, "errors": [entry]}
    if status in _STATUS_NAMES:
        error["status"] = _STATUS_NAMES[status]
    if details:
        error["details"] = details
    return {"error": error}


def error_response(
    status: int,
    reason: str,
    message: str | None = None,
    *,
    domain: str | None = None,
    location: str | None = None,
    headers: Mapping[str, str] | None = None,
    details: list[dict[str, Any]] | None = None,
) -> web.Response:
    default_domain, default_message = _REASON_TEXT.get(reason, ("global", reason))
    body = error_body(
        status,
        reason,
        message or default_message,
        domain=domain or default_domain,
        location=location,
        details=details,
    )
    return web.json_response(body, status=status, headers=headers)


def _invalid_value(location: str, message: str = "Invalid Value") -> web.Response:
    return error_response(400, "invalid", message, location=location)


def _not_found(file_id: str) -> web.Response:
    return error_response(404, "notFound", f"File not found: {file_id}.", location="fileId")


# ---------------------------------------------------------------------------------------------------
# Faults
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Fault:
    """One misbehaviour. Build with the class methods; `kind` says which stage applies it."""

    kind: Literal["status", "latency", "drop", "reset", "truncate", "slow", "ignore_range"]
    status: int = 0
    reason: str = ""
    retry_after_s: float | None = None
    after_bytes: int = 0
    latency_s: float = 0.0
    bandwidth_bytes_per_s: float = 0.0

    @classmethod
    def http(cls, status: int, reason: str | None = None, *, retry_after_s: float | None = None) -> Fault:
        """An error answer; 502 comes as an HTML page, like Google's front end sends it."""
        return cls(
            "status", status=status, reason=reason or _DEFAULT_REASONS.get(status, ""), retry_after_s=retry_after_s
        )

    @classmethod
    def rate_limited(cls, status: int = 429, reason: str = "rateLimitExceeded", retry_after_s: float = 0) -> Fault:
        return cls.http(status, reason, retry_after_s=retry_after_s)

    @classmethod
    def download_quota(cls) -> Fault:
        return cls.http(403, "downloadQuotaExceeded")

    @classmethod
    def latency(cls, latency_s: float) -> Fault:
        return cls("latency", latency_s=latency_s)

    @classmethod
    def drop(cls) -> Fault:
        """Close the connection without answering (the client sees a server disconnect)."""
        return cls("drop")

    @classmethod
    def ignore_range(cls) -> Fault:
        """Answer a Range request with 200 and the whole file, as some servers and proxies do."""
        return cls("ignore_range")

    @classmethod
    def reset(cls, after_bytes: int) -> Fault:
        """Announce the full Content-Length, send `after_bytes` of the body, then abort the connection."""
        return cls("reset", after_bytes=after_bytes)

    @classmethod
    def truncate(cls, after_bytes: int) -> Fault:
        """Send the body chunked (no Content-Length) and end it cleanly after `after_bytes`."""
        return cls("truncate", after_bytes=after_bytes)

    @classmethod
    def slow(cls, bandwidth_bytes_per_s: float) -> Fault:
        return cls("slow", bandwidth_bytes_per_s=bandwidth_bytes_per_s)

    @property
    def applies_to_body(self) -> bool:
        return self.kind in ("reset", "truncate", "slow", "ignore_range")


@dataclass(slots=True)
class _FaultRule:
    fault: Fault
    target_id: str | None
    on: FaultOn
    remaining: int | None
    probability: float = 1.0

    def matches(self, kind: str, item_id: str, body_stage: bool) -> bool:
        return (
            self.remaining != 0
            and self.fault.applies_to_body == body_stage
            and self.on in (kind, "any")
            and self.target_id in (None, item_id)
        )


# ---------------------------------------------------------------------------------------------------
# Fields masks
# ---------------------------------------------------------------------------------------------------

Mask = dict[str, "Mask | None"]
# Schema: None = a leaf, "any" = an object we do not model (any sub-selection accepted).
Schema = Mapping[str, "Schema | str | None"]


class FieldsError(ValueError):
    pass


def _leaves(names: str) -> dict[str, None]:
    """Schema leaves from whitespace-separated field names."""
    return dict.fromkeys(names.split())


_IMAGE_SCHEMA: Schema = {
    **_leaves(
        """width height rotation time cameraMake cameraModel exposureTime aperture flashUsed focalLength
        isoSpeed meteringMode sensor exposureMode colorSpace whiteBalance exposureBias maxApertureValue
        subjectDistance lens"""
    ),
    "location": "any",
}
_FILE_SCHEMA: Schema = {
    **_leaves(
        """kind id name mimeType description starred trashed explicitlyTrashed parents spaces version
        webContentLink webViewLink iconLink hasThumbnail thumbnailLink thumbnailVersion viewedByMe
        viewedByMeTime createdTime modifiedTime modifiedByMeTime modifiedByMe sharedWithMeTime driveId
        shared ownedByMe viewersCanCopyContent copyRequiresWriterPermission writersCanShare permissionIds
        hasAugmentedPermissions folderColorRgb originalFilename fullFileExtension fileExtension md5Checksum
        sha1Checksum sha256Checksum size quotaBytesUsed headRevisionId isAppAuthorized resourceKey
        teamDriveId inheritedPermissionsDisabled"""
    ),
    **{
        name: "any"
        for name in _leaves(
            """properties appProperties sharingUser owners lastModifyingUser capabilities permissions
            contentHints videoMediaMetadata exportLinks contentRestrictions linkShareMetadata labelInfo
            downloadRestrictions trashingUser"""
        )
    },
    "imageMediaMetadata": _IMAGE_SCHEMA,
    "shortcutDetails": _leaves("targetId targetMimeType targetResourceKey"),
}
_FILE_LIST_SCHEMA: Schema = {**_leaves("kind nextPageToken incompleteSearch"), "files": _FILE_SCHEMA}

_DEFAULT_FILE_MASK: Mask = {"kind": None, "id": None, "name": None, "mimeType": None}
_DEFAULT_LIST_MASK: Mask = {"kind": None, "nextPageToken": None, "incompleteSearch": None, "files": _DEFAULT_FILE_MASK}
_NAME_RE = re.compile(r"\s*([A-Za-z0-9_*]+(?:/[A-Za-z0-9_*]+)*)\s*")


def _merge_mask(mask: Mask, path: list[str], sub: Mask | None) -> None:
    node = mask
    for part in path[:-1]:
        if part in node and node[part] is None:
            return
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        node = child
    leaf = path[-1]
    if leaf in node and node[leaf] is None:
        return
    if sub is None or leaf not in node:
        node[leaf] = sub
        return
    existing = node[leaf]
    assert existing is not None
    for key, value in sub.items():
        _merge_mask(existing, [key], value)


def parse_fields(text: str) -> Mask:
    """Parse a `fields` parameter: `a,b/c,d(e,f(g))` into a nested mask."""

    def parse_list(position: int) -> tuple[Mask, int]:
        mask: Mask = {}
        while True:
            match = _NAME_RE.match(text, position)
            if match is None:
                raise FieldsError(f"Invalid field selection {text[position:]!r}")
            position = match.end()
            sub: Mask | None = None
            if position < len(text) and text[position] == "(":
                sub, position = parse_list(position + 1)
                if position >= len(text) or text[position] != ")":
                    raise FieldsError("Invalid field selection: unbalanced parentheses")
                position += 1
                while position < len(text) and text[position] == " ":
                    position += 1
            _merge_mask(mask, match.group(1).split("/"), sub)
            if position < len(text) and text[position] == ",":
                position += 1
                continue
            return mask, position

    mask, position = parse_list(0)
    if position != len(text):
        raise FieldsError(f"Invalid field selection {text[position:]!r}")
    return mask


def validate_mask(mask: Mask, schema: Schema) -> None:
    for name, sub in mask.items():
        if name == "*":
            continue
        if name not in schema:
            raise FieldsError(f"Invalid field selection {name}")
        node = schema[name]
        if sub is None or node == "any":
            continue
        if node is None or isinstance(node, str):
            raise FieldsError(f"Invalid field selection {name}")
        validate_mask(sub, node)


def apply_mask(mask: Mask, value: Mapping[str, Any]) -> dict[str, Any]:
    if "*" in mask:
        return dict(value)
    out: dict[str, Any] = {}
    for name, sub in mask.items():
        if name not in value:
            continue
        item = value[name]
        if sub is None:
            out[name] = item
        elif isinstance(item, list):
            out[name] = [apply_mask(sub, element) if isinstance(element, dict) else element for element in item]
        elif isinstance(item, dict):
            out[name] = apply_mask(sub, item)
        else:
            out[name] = item
    return out


# ---------------------------------------------------------------------------------------------------
# Queries, ranges, times
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ListQuery:
    parent_id: str | None
    trashed: bool | None


_AND_RE = re.compile(r"\s+and\s+", re.IGNORECASE)
_PARENTS_TERM_RE = re.compile(r"'((?:[^'\\]|\\.)*)'\s+in\s+parents", re.IGNORECASE)
_TRASHED_TERM_RE = re.compile(r"trashed\s*(=|!=)\s*(true|false)", re.IGNORECASE)


def _split_on_and(q: str) -> list[str]:
    """Split on `and` outside single-quoted strings (which escape with a backslash)."""
    terms: list[str] = []
    start = position = 0
    quoted = False
    while position < len(q):
        char = q[position]
        if quoted:
            position += 2 if char == "\\" else 1
            quoted = char != "'"
            continue
        if char == "'":
            quoted = True
        elif match := _AND_RE.match(q, position):
            terms.append(q[start:position])
            start = position = match.end()
            continue
        position += 1
    if quoted:
        raise ValueError("unterminated string")
    terms.append(q[start:])
    return terms


def parse_query(q: str) -> ListQuery:
    """The subset of the `q` language a folder walk uses: `'<id>' in parents` and `trashed = <bool>`."""
    parent_id: str | None = None
    trashed: bool | None = None
    for term in _split_on_and(q.strip()):
        term = term.strip()
        if match := _PARENTS_TERM_RE.fullmatch(term):
            if parent_id is not None:
                raise ValueError("only one parent is supported")
            parent_id = re.sub(r"\\(.)", r"\1", match.group(1))
        elif match := _TRASHED_TERM_RE.fullmatch(term):
            value = match.group(2).lower() == "true"
            trashed = value if match.group(1) == "=" else not value
        else:
            raise ValueError(f"unsupported query term {term!r}")
    return ListQuery(parent_id, trashed)


_RANGE_RE = re.compile(r"bytes=(\d*)-(\d*)")


def parse_range(header: str, size_bytes: int) -> tuple[int, int] | None:
    """[start, end) for a single `bytes=` range, or None when unsatisfiable or malformed."""
    match = _RANGE_RE.fullmatch(header.strip())
    if match is None or size_bytes == 0:
        return None
    first, last = match.groups()
    if not first:
        if not last:
            return None
        return max(0, size_bytes - int(last)), size_bytes
    start = int(first)
    end = min(size_bytes, int(last) + 1) if last else size_bytes
    return (start, end) if start < size_bytes and start < end else None


def rfc3339(moment: datetime) -> str:
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _parse_resource_keys(header: str | None) -> dict[str, str]:
    keys: dict[str, str] = {}
    for part in (header or "").split(","):
        item_id, _, key = part.strip().partition("/")
        if item_id and key:
            keys[item_id] = key
    return keys


# ---------------------------------------------------------------------------------------------------
# The tree
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ImageMeta:
    width: int
    height: int
    taken_time: str | None = None
    camera_make: str | None = None
    camera_model: str | None = None


@dataclass(slots=True)
class Item:
    id: str
    name: str
    mime_type: str
    parent_id: str | None
    created_time: datetime
    modified_time: datetime
    resource_key: str | None = None
    shared: bool = True
    trashed: bool = False
    content: Content | None = None
    md5_override: str | None = None
    image: ImageMeta | None = None
    shortcut_target_id: str | None = None
    shortcut_target_mime_type: str | None = None
    shortcut_target_resource_key: str | None = None

    @property
    def is_blob(self) -> bool:
        return self.content is not None


@dataclass(frozen=True, slots=True)
class _PageCursor:
    query: ListQuery
    offset: int


class DriveEmulator:
    """An in-memory Drive with an HTTP face (`make_app`). Mutate the tree freely between requests.

    Counters for tests: `requests[(kind, id)]` with kind list (id = folder), get, media (the API
    request) and download (the redirected byte request); `bytes_served[file_id]`; `range_headers`
    as (file_id, Range header or None) per byte response; `resource_key_headers` as received.
    `list_page_sizes` scripts the length of the next list pages (0 = an empty page that still
    carries a nextPageToken); `short_page_rate` shortens pages at random.
    """

    def __init__(
        self,
        *,
        api_keys: Iterable[str] = ("test-key",),
        seed: int = 0,
        redirect_downloads: bool = True,
        latency_s: float = 0.0,
        bandwidth_bytes_per_s: float | None = None,
        disabled_keys: Iterable[str] = (),
        short_page_rate: float = 0.0,
        download_base_url: str | None = None,
        quota_per_s: float | None = None,
    ) -> None:
        self.api_keys = frozenset(api_keys)
        self.disabled_keys = frozenset(disabled_keys)
        self.seed = seed
        self.redirect_downloads = redirect_downloads
        self.latency_s = latency_s
        self.bandwidth_bytes_per_s = bandwidth_bytes_per_s
        self.short_page_rate = short_page_rate
        # Where alt=media redirects to; None = this server (a foreign host tests the allow-list).
        self.download_base_url = download_base_url
        self.items: dict[str, Item] = {}
        self.requests: Counter[tuple[str, str]] = Counter()
        self.bytes_served: Counter[str] = Counter()
        self.range_headers: list[tuple[str, str | None]] = []
        self.resource_key_headers: list[str] = []
        self.list_page_sizes: deque[int] = deque()
        self._children: dict[str, list[str]] = {}
        self._rng = random.Random(seed)
        self._fault_rng = random.Random(seed + 1)
        self._fault_rules: list[_FaultRule] = []
        self._page_cursors: dict[str, _PageCursor] = {}
        self._download_secret = random.Random(seed + 2).randbytes(32)
        self._ticks = 0
        # Google's per-minute query quota, as a bucket holding one second of it: API requests past
        # it are answered 403 userRateLimitExceeded (byte downloads on the redirect host are not API
        # queries). `rate_limited` counts those answers.
        self.quota_per_s = quota_per_s
        self._quota_tokens = quota_per_s or 0.0
        self._quota_updated_s = time.monotonic()
        self.rate_limited = 0

    # -- counters ------------------------------------------------------------------------------------

    @property
    def list_calls(self) -> int:
        return sum(count for (kind, _), count in self.requests.items() if kind == "list")

    def count(self, kind: str, item_id: str) -> int:
        return self.requests[(kind, item_id)]

    def reset_counters(self) -> None:
        self.requests.clear()
        self.bytes_served.clear()
        self.range_headers.clear()
        self.resource_key_headers.clear()

    # -- building the tree ---------------------------------------------------------------------------

    def new_id(self) -> str:
        return "1" + "".join(self._rng.choice(_ID_ALPHABET) for _ in range(32))

    def _resource_key(self, resource_key: str | bool | None) -> str | None:
        if resource_key is True:
            return "0-" + "".join(self._rng.choice(_ID_ALPHABET) for _ in range(22))
        return resource_key or None

    def _next_time(self) -> datetime:
        self._ticks += 1
        return _EPOCH + timedelta(minutes=self._ticks)

    def _add(self, item: Item) -> str:
        if item.parent_id is not None and item.parent_id not in self.items:
            raise KeyError(f"unknown parent {item.parent_id}")
        self.items[item.id] = item
        if item.parent_id is not None:
            self._children.setdefault(item.parent_id, []).append(item.id)
        return item.id

    def _new_item(
        self,
        parent_id: str | None,
        name: str,
        mime_type: str,
        *,
        resource_key: str | bool | None,
        created: datetime | None,
        modified: datetime | None,
        shared: bool = True,
    ) -> Item:
        created_time = created or self._next_time()
        return Item(
            id=self.new_id(),
            name=name,
            mime_type=mime_type,
            parent_id=parent_id,
            created_time=created_time,
            modified_time=modified or created_time,
            resource_key=self._resource_key(resource_key),
            shared=shared,
        )

    def add_folder(
        self,
        parent_id: str | None,
        name: str,
        *,
        resource_key: str | bool | None = None,
        shared: bool = True,
        created: datetime | None = None,
        modified: datetime | None = None,
    ) -> str:
        """A folder; `shared=False` makes it invisible to API-key callers (404, empty listings)."""
        item = self._new_item(
            parent_id,
            name,
            FOLDER_MIME_TYPE,
            resource_key=resource_key,
            created=created,
            modified=modified,
            shared=shared,
        )
        return self._add(item)

    def add_image(
        self,
        parent_id: str | None,
        name: str,
        *,
        fmt: str = "jpeg",
        width: int | None = None,
        height: int | None = None,
        size_bytes: int | None = None,
        mime_type: str | None = None,
        md5_override: str | None = None,
        created: datetime | None = None,
        modified: datetime | None = None,
        taken_time: str | None = None,
        camera_make: str | None = None,
        camera_model: str | None = None,
        resource_key: str | bool | None = None,
        image_seed: int | None = None,
    ) -> str:
        """A generated image; `size_bytes` pads it (never shrinks it) to at least that size."""
        width = width or self._rng.randint(64, 800)
        height = height or self._rng.randint(64, 800)
        image_seed = self._rng.getrandbits(32) if image_seed is None else image_seed
        item = self._new_item(
            parent_id,
            name,
            mime_type or FORMAT_MIME_TYPES[fmt],
            resource_key=resource_key,
            created=created,
            modified=modified,
        )
        item.content = _image_content(fmt, width, height, image_seed, size_bytes, taken_time, camera_make, camera_model)
        item.md5_override = md5_override
        item.image = ImageMeta(width, height, taken_time, camera_make, camera_model)
        return self._add(item)

    def add_file(
        self,
        parent_id: str | None,
        name: str,
        mime_type: str,
        content: bytes | Content = b"",
        *,
        resource_key: str | bool | None = None,
        md5_override: str | None = None,
        created: datetime | None = None,
        modified: datetime | None = None,
    ) -> str:
        """A file with exactly these bytes (or a Content), without image metadata."""
        item = self._new_item(parent_id, name, mime_type, resource_key=resource_key, created=created, modified=modified)
        item.content = content if isinstance(content, Content) else Content.from_bytes(content)
        item.md5_override = md5_override
        return self._add(item)

    def add_native(self, parent_id: str | None, name: str, mime_type: str = DOCUMENT_MIME_TYPE) -> str:
        """A Google Docs/Sheets/... file: listed, without size or checksum, not downloadable."""
        if not mime_type.startswith(GOOGLE_APPS_PREFIX):
            raise ValueError("native files have application/vnd.google-apps.* types")
        return self._add(self._new_item(parent_id, name, mime_type, resource_key=None, created=None, modified=None))

    def add_shortcut(
        self,
        parent_id: str | None,
        name: str,
        target_id: str,
        *,
        target_mime_type: str | None = None,
        target_resource_key: str | None = None,
        resource_key: str | bool | None = None,
    ) -> str:
        """A shortcut; the target may be missing (dangling). Type and key default to the target's."""
        target = self.items.get(target_id)
        item = self._new_item(
            parent_id, name, SHORTCUT_MIME_TYPE, resource_key=resource_key, created=None, modified=None
        )
        item.shortcut_target_id = target_id
        item.shortcut_target_mime_type = target_mime_type or (target.mime_type if target else "image/jpeg")
        item.shortcut_target_resource_key = target_resource_key or (target.resource_key if target else None)
        return self._add(item)

    def trash(self, item_id: str) -> None:
        self.items[item_id].trashed = True

    def remove(self, item_id: str) -> None:
        """Delete for good: later requests for it get 404 (shortcuts to it dangle)."""
        item = self.items.pop(item_id)
        if item.parent_id is not None:
            self._children[item.parent_id].remove(item_id)

    def set_shared(self, item_id: str, shared: bool) -> None:
        self.items[item_id].shared = shared

    def set_md5_override(self, item_id: str, md5_hex: str | None) -> None:
        self.items[item_id].md5_override = md5_hex

    def replace_content(
        self,
        file_id: str,
        content: bytes | Content | None = None,
        *,
        image_seed: int | None = None,
        size_bytes: int | None = None,
        modified: datetime | None = None,
    ) -> None:
        """New bytes for a file (a new image for generated ones): new size, MD5 and modifiedTime."""
        item = self.items[file_id]
        if content is not None:
            item.content = content if isinstance(content, Content) else Content.from_bytes(content)
        elif item.image is not None:
            fmt = next((f for f, mime in FORMAT_MIME_TYPES.items() if mime == item.mime_type), "jpeg")
            seed = self._rng.getrandbits(32) if image_seed is None else image_seed
            meta = item.image
            item.content = _image_content(
                fmt, meta.width, meta.height, seed, size_bytes, meta.taken_time, meta.camera_make, meta.camera_model
            )
        else:
            raise ValueError("pass content for a file that is not a generated image")
        item.md5_override = None
        item.modified_time = modified or max(item.modified_time, self._next_time())

    # -- faults --------------------------------------------------------------------------------------

    def inject(self, target_id: str | None, fault: Fault, *, times: int | None = 1, on: FaultOn = "media") -> None:
        """Apply `fault` to the next `times` matching requests (None: all of them).

        `target_id` is the file for get/media and the folder for list; None matches any id.
        """
        self._fault_rules.append(_FaultRule(fault, target_id, on, times))

    def inject_random(self, fault: Fault, *, rate: float, on: FaultOn = "media", target_id: str | None = None) -> None:
        """Apply `fault` to each matching request with probability `rate` (seeded: reproducible)."""
        self._fault_rules.append(_FaultRule(fault, target_id, on, None, probability=rate))

    def clear_faults(self) -> None:
        self._fault_rules.clear()

    def _take_fault(self, kind: str, item_id: str, *, body_stage: bool) -> Fault | None:
        for rule in self._fault_rules:
            if not rule.matches(kind, item_id, body_stage):
                continue
            if rule.probability < 1.0 and self._fault_rng.random() >= rule.probability:
                continue
            if rule.remaining is not None:
                rule.remaining -= 1
            return rule.fault
        return None

    # -- views ---------------------------------------------------------------------------------------

    def md5_of(self, file_id: str) -> str:
        content = self.items[file_id].content
        assert content is not None, "not a file with content"
        return content.md5_hex

    def content_of(self, file_id: str) -> bytes:
        content = self.items[file_id].content
        assert content is not None, "not a file with content"
        return content.read_all()

    def _visible(self, item: Item | None, resource_keys: Mapping[str, str]) -> bool:
        if item is None or not item.shared:
            return False
        return item.resource_key is None or resource_keys.get(item.id) == item.resource_key

    def resource(self, item: Item) -> dict[str, Any]:
        """The full files resource of an item (content must be computed for blobs)."""
        resource: dict[str, Any] = {
            "kind": "drive#file",
            "id": item.id,
            "name": item.name,
            "mimeType": item.mime_type,
            "parents": [item.parent_id] if item.parent_id else [],
            "trashed": item.trashed,
            "explicitlyTrashed": item.trashed,
            "spaces": ["drive"],
            "createdTime": rfc3339(item.created_time),
            "modifiedTime": rfc3339(item.modified_time),
            "shared": item.shared,
            "ownedByMe": False,
        }
        if item.resource_key:
            resource["resourceKey"] = item.resource_key
        if item.content is not None:
            size_bytes = item.content.size_bytes
            resource.update(
                size=str(size_bytes),
                quotaBytesUsed=str(size_bytes),
                md5Checksum=item.md5_override or item.content.md5_hex,
                originalFilename=item.name,
            )
            if "." in item.name.strip("."):
                extension = item.name.rsplit(".", 1)[1]
                resource.update(fileExtension=extension, fullFileExtension=extension)
        if item.image is not None:
            meta = {
                "width": item.image.width,
                "height": item.image.height,
                "time": item.image.taken_time,
                "cameraMake": item.image.camera_make,
                "cameraModel": item.image.camera_model,
            }
            resource["imageMediaMetadata"] = {k: v for k, v in meta.items() if v is not None}
        if item.shortcut_target_id is not None:
            details = {"targetId": item.shortcut_target_id, "targetMimeType": item.shortcut_target_mime_type}
            if item.shortcut_target_resource_key:
                details["targetResourceKey"] = item.shortcut_target_resource_key
            resource["shortcutDetails"] = details
        return resource

    async def _resources(self, items: Sequence[Item]) -> list[dict[str, Any]]:
        pending = [item.content for item in items if item.content is not None and not item.content.is_computed]
        if pending:
            # Rendering images and hashing big files takes long: keep the event loop free.
            await asyncio.to_thread(lambda: [(content.size_bytes, content.md5_hex) for content in pending])
        return [self.resource(item) for item in items]

    # -- HTTP ----------------------------------------------------------------------------------------

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get(f"{API_PREFIX}/files", self._handle_list)
        app.router.add_get(API_PREFIX + "/files/{file_id}", self._handle_get)
        app.router.add_get(DOWNLOAD_PREFIX + "/{token}", self._handle_download)
        return app

    def _check_key(self, request: web.Request) -> web.Response | None:
        key = request.query.get("key")
        if not key:
            message = (
                "Method doesn't allow unregistered callers (callers without established identity). "
                "Please use API Key or other form of API consumer identity to call this API."
            )
            return error_response(403, "forbidden", message)
        if key in self.disabled_keys:
            message = (
                "Google Drive API has not been used in project 000000000000 before or it is disabled. "
                "Enable it by visiting the Google Cloud console, then retry."
            )
            details = [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "SERVICE_DISABLED",
                    "domain": "googleapis.com",
                    "metadata": {"service": "drive.googleapis.com"},
                }
            ]
            return error_response(403, "accessNotConfigured", message, domain="usageLimits", details=details)
        if key not in self.api_keys:
            details = [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "API_KEY_INVALID",
                    "domain": "googleapis.com",
                    "metadata": {"service": "drive.googleapis.com"},
                }
            ]
            return error_response(400, "badRequest", "API key not valid. Please pass a valid API key.", details=details)
        return None

    def _check_quota(self) -> web.Response | None:
        if self.quota_per_s is None:
            return None
        now_s = time.monotonic()
        elapsed_s = now_s - self._quota_updated_s
        self._quota_tokens = min(self.quota_per_s, self._quota_tokens + elapsed_s * self.quota_per_s)
        self._quota_updated_s = now_s
        if self._quota_tokens < 1.0:
            self.rate_limited += 1
            return error_response(403, "userRateLimitExceeded")
        self._quota_tokens -= 1.0
        return None

    def _request_keys(self, request: web.Request) -> dict[str, str]:
        header = request.headers.get(RESOURCE_KEYS_HEADER)
        if header is not None:
            self.resource_key_headers.append(header)
        return _parse_resource_keys(header)

    async def _request_fault(self, request: web.Request, kind: str, item_id: str) -> web.Response | None:
        fault = self._take_fault(kind, item_id, body_stage=False)
        if fault is None:
            return None
        if fault.kind == "latency":
            await asyncio.sleep(fault.latency_s)
            return None
        if fault.kind == "drop":
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=500)
        headers = {}
        if fault.retry_after_s is not None:
            seconds = fault.retry_after_s
            headers["Retry-After"] = str(int(seconds)) if float(seconds).is_integer() else str(seconds)
        if fault.status == 502:
            html = "<!DOCTYPE html><html><title>Error 502 (Server Error)</title><p>502. That's an error.</html>"
            return web.Response(status=502, text=html, content_type="text/html", headers=headers)
        return error_response(fault.status, fault.reason or f"http{fault.status}", headers=headers)

    async def _handle_list(self, request: web.Request) -> web.StreamResponse:
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        try:
            query: ListQuery | None = parse_query(request.query.get("q", ""))
        except ValueError:
            query = None
        self.requests[("list", (query.parent_id or "") if query else "")] += 1
        if (refusal := self._check_key(request) or self._check_quota()) is not None:
            return refusal
        if query is None:
            return _invalid_value("q")
        raw_size = request.query.get("pageSize", str(DEFAULT_PAGE_SIZE))
        if not raw_size.isdigit() or not 1 <= int(raw_size) <= MAX_PAGE_SIZE:
            message = f"Invalid value '{raw_size}'. Values must be within the range: [1, {MAX_PAGE_SIZE}]"
            return _invalid_value("pageSize", message)
        try:
            mask = self._mask(request, _FILE_LIST_SCHEMA, _DEFAULT_LIST_MASK)
        except FieldsError as error:
            return error_response(400, "invalidParameter", str(error), location="fields")
        offset = 0
        if token := request.query.get("pageToken"):
            cursor = self._page_cursors.get(token)
            if cursor is None or cursor.query != query:
                return _invalid_value("pageToken")
            offset = cursor.offset
        if (failure := await self._request_fault(request, "list", query.parent_id or "")) is not None:
            return failure
        children = self._children_matching(query, self._request_keys(request))
        take = self._page_length(int(raw_size))
        page = children[offset : offset + take]
        body: dict[str, Any] = {"kind": "drive#fileList", "incompleteSearch": False}
        if offset + len(page) < len(children):
            token = secrets.token_urlsafe(24)
            self._page_cursors[token] = _PageCursor(query, offset + len(page))
            body["nextPageToken"] = token
        body["files"] = await self._resources(page)
        return web.json_response(apply_mask(mask, body))

    def _page_length(self, page_size: int) -> int:
        if self.list_page_sizes:
            return min(page_size, self.list_page_sizes.popleft())
        if self.short_page_rate and self._fault_rng.random() < self.short_page_rate:
            return self._fault_rng.randrange(page_size)
        return page_size

    def _children_matching(self, query: ListQuery, resource_keys: Mapping[str, str]) -> list[Item]:
        # Listing a folder the caller cannot see answers 200 with no files, as Drive does.
        if query.parent_id is None or not self._visible(self.items.get(query.parent_id), resource_keys):
            return []
        children = (self.items[child] for child in self._children.get(query.parent_id, []))
        return [child for child in children if query.trashed is None or child.trashed == query.trashed]

    @staticmethod
    def _mask(request: web.Request, schema: Schema, default: Mask) -> Mask:
        text = request.query.get("fields")
        if text is None:
            return default
        mask = parse_fields(text)
        validate_mask(mask, schema)
        return mask

    async def _handle_get(self, request: web.Request) -> web.StreamResponse:
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        file_id = request.match_info["file_id"]
        media = request.query.get("alt") == "media"
        kind = "media" if media else "get"
        self.requests[(kind, file_id)] += 1
        if (refusal := self._check_key(request) or self._check_quota()) is not None:
            return refusal
        item = self.items.get(file_id)
        if item is None or not self._visible(item, self._request_keys(request)):
            return _not_found(file_id)
        if (failure := await self._request_fault(request, kind, file_id)) is not None:
            return failure
        if not media:
            try:
                mask = self._mask(request, _FILE_SCHEMA, _DEFAULT_FILE_MASK)
            except FieldsError as error:
                return error_response(400, "invalidParameter", str(error), location="fields")
            return web.json_response(apply_mask(mask, (await self._resources([item]))[0]))
        if item.content is None:
            return error_response(403, "fileNotDownloadable", location="alt")
        if self.redirect_downloads:
            # Like Google, send the bytes from a separate download URL that needs no API key.
            base = self.download_base_url or str(request.url.origin())
            raise web.HTTPFound(location=f"{base.rstrip('/')}{DOWNLOAD_PREFIX}/{self._token(file_id)}")
        return await self._serve_bytes(request, item)

    def _token(self, file_id: str) -> str:
        signature = hmac.new(self._download_secret, file_id.encode(), hashlib.sha256).hexdigest()[:32]
        return f"{file_id}.{signature}"

    async def _handle_download(self, request: web.Request) -> web.StreamResponse:
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        file_id, _, _ = request.match_info["token"].rpartition(".")
        self.requests[("download", file_id)] += 1
        item = self.items.get(file_id)
        if item is None or not hmac.compare_digest(request.match_info["token"], self._token(file_id)):
            return web.Response(status=404, text="Not Found")
        return await self._serve_bytes(request, item)

    async def _serve_bytes(self, request: web.Request, item: Item) -> web.StreamResponse:
        content = item.content
        assert content is not None
        size_bytes = await asyncio.to_thread(lambda: content.size_bytes)
        range_header = request.headers.get("Range")
        self.range_headers.append((item.id, range_header))
        fault = self._take_fault("media", item.id, body_stage=True)
        headers = {"Content-Type": item.mime_type, "Accept-Ranges": "bytes", "Content-Disposition": "attachment"}
        start, end, status = 0, size_bytes, 200
        if range_header is not None and not (fault is not None and fault.kind == "ignore_range"):
            byte_range = parse_range(range_header, size_bytes)
            if byte_range is None:
                return error_response(
                    416,
                    "requestedRangeNotSatisfiable",
                    "Request range not satisfiable",
                    headers={"Content-Range": f"bytes */{size_bytes}"},
                )
            start, end = byte_range
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{size_bytes}"
        response = web.StreamResponse(status=status, headers=headers)
        stop = end
        if fault is not None and fault.kind in ("reset", "truncate"):
            stop = min(end, start + fault.after_bytes)
        if fault is not None and fault.kind == "truncate":
            response.enable_chunked_encoding()
        else:
            response.content_length = end - start
        await response.prepare(request)
        bandwidth = fault.bandwidth_bytes_per_s if fault is not None and fault.kind == "slow" else None
        bandwidth = bandwidth or self.bandwidth_bytes_per_s
        try:
            for chunk in content.iter_bytes(start, stop, _SERVE_CHUNK_BYTES):
                await response.write(chunk)
                self.bytes_served[item.id] += len(chunk)
                if bandwidth:
                    await asyncio.sleep(len(chunk) / bandwidth)
        except ConnectionResetError:
            # The client went away mid-body (a cancelled import, a killed worker): normal for a server.
            return response
        if fault is not None and fault.kind == "reset":
            if request.transport is not None:
                request.transport.abort()
            return response
        await response.write_eof()
        return response


def _image_content(
    fmt: str,
    width: int,
    height: int,
    image_seed: int,
    size_bytes: int | None,
    taken_time: str | None,
    camera_make: str | None,
    camera_model: str | None,
) -> Content:
    head = partial(
        render_image,
        fmt,
        width,
        height,
        image_seed,
        taken_time=taken_time,
        camera_make=camera_make,
        camera_model=camera_model,
    )
    return Content(head, min_size_bytes=size_bytes or 0, pad_seed=image_seed)


# ---------------------------------------------------------------------------------------------------
# Running it
# ---------------------------------------------------------------------------------------------------


async def start_emulator(emu: DriveEmulator, host: str = "127.0.0.1", port: int = 0) -> tuple[web.AppRunner, str]:
    """Serve `emu`; returns the runner (call `cleanup()`) and the api_url for DriveClient."""
    # No access log: request lines carry the API key.
    runner = web.AppRunner(emu.make_app(), access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound_port = runner.addresses[0][1]
    shown_host = f"[{host}]" if ":" in host else host
    return runner, f"http://{shown_host}:{bound_port}{API_PREFIX}"


@asynccontextmanager
async def running_emulator(emu: DriveEmulator, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
    runner, api_url = await start_emulator(emu, host, port)
    try:
        yield api_url
    finally:
        await runner.cleanup()


# ---------------------------------------------------------------------------------------------------
# A ready-made tree
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DemoTree:
    root_id: str
    link: str
    expected_image_ids: frozenset[str]  # what a recursive walk yields as DriveFile
    expected_skipped: Mapping[str, str]  # item id -> reason code, for a recursive walk
    special: Mapping[str, str]  # role -> item id, for tests that need one particular item


_CAMERAS = (("Canon", "Canon EOS R5"), ("NIKON CORPORATION", "NIKON Z 6_2"), ("SONY", "ILCE-7M4"), (None, None))
_FORMATS = (("jpeg", "jpg", 0.7), ("png", "png", 0.15), ("webp", "webp", 0.15))


def _pick_size(rng: random.Random, size_mix: Sequence[tuple[float, int | None]]) -> int | None:
    weights = [weight for weight, _ in size_mix]
    return rng.choices([size for _, size in size_mix], weights=weights)[0]


def build_demo_tree(
    emu: DriveEmulator,
    n_images: int,
    *,
    seed: int = 0,
    nested: bool = True,
    size_mix: Sequence[tuple[float, int | None]] = ((1.0, None),),
) -> DemoTree:
    """A folder with `n_images` generated images plus every awkward case an import meets.

    `size_mix` is (weight, padded size in bytes or None for the natural image size) pairs, e.g.
    ((0.95, None), (0.05, 30 * 2**20)) pads one image in twenty to 30 MiB.
    Besides the images: duplicate, unicode and hostile names, a zero-byte file, a "JPEG" that is
    text, RAW and HEIC types, Google-native and non-image files, trashed items, shortcuts to files
    inside and outside the tree, a dangling shortcut and, when nested, subfolders, a folder needing
    its resource key, a folder shortcut to a folder outside the tree and one looping back to the root.
    """
    rng = random.Random(seed)
    images: set[str] = set()
    skipped: dict[str, str] = {}
    special: dict[str, str] = {}
    root = emu.add_folder(None, "Fotoowl demo shoot")
    folders = [root]
    regular: list[str] = []

    def image(parent: str, name: str, **kwargs: Any) -> str:
        fmt = kwargs.pop("fmt", "jpeg")
        make, model = rng.choice(_CAMERAS)
        taken = (_EPOCH + timedelta(seconds=rng.randrange(86400 * 30))).strftime("%Y:%m:%d %H:%M:%S")
        item_id = emu.add_image(
            parent,
            name,
            fmt=fmt,
            taken_time=taken,
            camera_make=make,
            camera_model=model,
            image_seed=rng.getrandbits(32),
            **kwargs,
        )
        images.add(item_id)
        return item_id

    if nested:
        day1 = emu.add_folder(root, "Day 1 (Ceremony)")
        portraits = emu.add_folder(day1, "Portraits")
        day2 = emu.add_folder(root, "Day 2", resource_key=True)
        unicode_folder = emu.add_folder(root, "Фото 写真 📷")
        hostile_folder = emu.add_folder(root, "../escape")
        folders += [day1, portraits, day2, unicode_folder, hostile_folder]
        special.update(day1=day1, portraits=portraits, day2=day2, keyed_folder=day2)
        trashed_folder = emu.add_folder(root, "Old stuff")
        emu.add_image(trashed_folder, "forgotten.jpg")
        emu.trash(trashed_folder)
        outside = emu.add_folder(None, "Shared elsewhere")
        special["outside_image"] = image(outside, "from-elsewhere.jpg")
        special["folder_shortcut"] = emu.add_shortcut(day2, "Shared elsewhere (shortcut)", outside)
        special["cycle_shortcut"] = emu.add_shortcut(portraits, "Back to the start", root)

    fmt_choices = [(fmt, ext) for fmt, ext, _ in _FORMATS]
    fmt_weights = [weight for _, _, weight in _FORMATS]
    for index in range(n_images):
        fmt, ext = rng.choices(fmt_choices, weights=fmt_weights)[0]
        regular.append(
            image(
                folders[index % len(folders)],
                f"IMG_{index + 1:04d}.{ext}",
                fmt=fmt,
                size_bytes=_pick_size(rng, size_mix),
            )
        )

    special["duplicate_name"] = image(root, "IMG_0001.jpg")
    for name in ("../x.jpg", "<script>alert(1)</script>.png", 'it\'s "quoted" & more.jpg', "\u202egpj.exe"):
        image(root, name, fmt="png" if name.endswith(".png") else "jpeg")
    special["unicode_name"] = image(root, "Café ☕ été.jpg")
    image(root, "写真.webp", fmt="webp")
    special["raw_by_type"] = image(root, "DSC_0001.NEF", mime_type="image/x-nikon-nef")
    special["raw_by_extension"] = image(root, "IMG_0002.CR2", mime_type="application/octet-stream")
    special["heic"] = image(root, "IMG_0003.HEIC", mime_type="image/heic")
    special["keyed_image"] = image(root, "old-link-share.jpg", resource_key=True)
    special["zero_byte"] = emu.add_file(root, "empty.jpg", "image/jpeg", b"")
    special["not_really_image"] = emu.add_file(root, "not-really.jpg", "image/jpeg", b"This is text, not a JPEG.\n")
    images.update((special["zero_byte"], special["not_really_image"]))

    for name, mime_type in (("Shot list", DOCUMENT_MIME_TYPE), ("Invoices", SPREADSHEET_MIME_TYPE)):
        skipped[emu.add_native(root, name, mime_type)] = "google_native"
    skipped[emu.add_file(root, "notes.txt", "text/plain", b"Bring spare batteries.\n")] = "not_image"
    skipped[emu.add_file(root, "clip.mp4", "video/mp4", b"\x00\x00\x00\x18ftypmp42")] = "not_image"

    trashed_image = emu.add_image(root, "deleted.jpg")
    emu.trash(trashed_image)
    special["trashed_image"] = trashed_image

    # The target is listed (in Day 1) before the folder holding the shortcut: it keeps its own path.
    inside_target = regular[1] if len(regular) > 1 else special["duplicate_name"]
    shortcut_parent = folders[-1]
    special["file_shortcut_inside"] = emu.add_shortcut(shortcut_parent, "shortcut-to-inside.jpg", inside_target)
    loose = emu.add_image(None, "loose-outside.jpg", image_seed=rng.getrandbits(32))
    images.add(loose)
    special["file_shortcut_outside"] = emu.add_shortcut(shortcut_parent, "shortcut-to-outside.jpg", loose)
    gone = emu.add_image(None, "gone.jpg")
    dangling = emu.add_shortcut(root, "dangling.jpg", gone)
    emu.remove(gone)
    skipped[dangling] = "dangling_shortcut"
    special["dangling_shortcut"] = dangling

    link = f"https://drive.google.com/drive/folders/{root}?usp=sharing"
    return DemoTree(root, link, frozenset(images), skipped, special)


async def serve_demo(
    host: str = "127.0.0.1",
    port: int = 8765,
    n_images: int = 200,
    seed: int = 0,
    *,
    api_key: str = DEMO_API_KEY,
    latency_s: float = 0.0,
) -> None:
    """Serve a demo tree until cancelled, printing what to configure."""
    emu = DriveEmulator(api_keys=frozenset({api_key}), seed=seed, latency_s=latency_s)
    tree = build_demo_tree(emu, n_images, seed=seed)
    runner, api_url = await start_emulator(emu, host, port)
    try:
        print(f"Drive emulator serving {len(tree.expected_image_ids)} images", flush=True)
        print(f"  API URL:     {api_url}", flush=True)
        print(f"  API key:     {api_key}", flush=True)
        print(f"  Folder link: {tree.link}", flush=True)
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
