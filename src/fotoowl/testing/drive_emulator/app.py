"""The HTTP face: DriveEmulator serves files.list, files.get and the redirected downloads from its
tree (fotoowl.testing.drive_emulator.model), with key checks, a query quota and injected faults."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import random
import secrets
import time
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from fotoowl.testing.drive_emulator.errors import _invalid_value, _not_found, error_response
from fotoowl.testing.drive_emulator.faults import Fault, FaultOn, _FaultRule
from fotoowl.testing.drive_emulator.fields import (
    _DEFAULT_FILE_MASK,
    _DEFAULT_LIST_MASK,
    _FILE_LIST_SCHEMA,
    _FILE_SCHEMA,
    FieldsError,
    Mask,
    Schema,
    apply_mask,
    parse_fields,
    validate_mask,
)
from fotoowl.testing.drive_emulator.model import DriveTree, Item
from fotoowl.testing.drive_emulator.query import ListQuery, _parse_resource_keys, parse_query, parse_range

API_PREFIX = "/drive/v3"
DOWNLOAD_PREFIX = "/download/drive-usercontent"
RESOURCE_KEYS_HEADER = "X-Goog-Drive-Resource-Keys"

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
_SERVE_CHUNK_BYTES = 1 << 16


@dataclass(frozen=True, slots=True)
class _PageCursor:
    query: ListQuery
    offset: int


class DriveEmulator(DriveTree):
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
        super().__init__(seed=seed)
        self.api_keys = frozenset(api_keys)
        self.disabled_keys = frozenset(disabled_keys)
        self.redirect_downloads = redirect_downloads
        self.latency_s = latency_s
        self.bandwidth_bytes_per_s = bandwidth_bytes_per_s
        self.short_page_rate = short_page_rate
        # Where alt=media redirects to; None = this server (a foreign host tests the allow-list).
        self.download_base_url = download_base_url
        self.requests: Counter[tuple[str, str]] = Counter()
        self.bytes_served: Counter[str] = Counter()
        self.range_headers: list[tuple[str, str | None]] = []
        self.resource_key_headers: list[str] = []
        self.list_page_sizes: deque[int] = deque()
        self._fault_rng = random.Random(seed + 1)
        self._fault_rules: list[_FaultRule] = []
        self._page_cursors: dict[str, _PageCursor] = {}
        self._download_secret = random.Random(seed + 2).randbytes(32)
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
