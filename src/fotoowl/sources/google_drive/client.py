"""DriveClient: Drive v3 requests with an API key, paced and retried, checking and walking a folder.

Transient failures (429, 403 rate limits, 5xx, dropped connections, timeouts) are retried here, with
truncated exponential backoff and full jitter, honouring Retry-After; everything else is raised at
once as a DriveError. The API key travels as the `key` query parameter and is scrubbed from every
message this module produces: aiohttp exceptions quote request URLs, so they are never chained.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import quote

import aiohttp
from yarl import URL

from fotoowl.metrics import DRIVE_REQUESTS, DRIVE_RETRIES
from fotoowl.pacer import Pacer
from fotoowl.sources.google_drive.download import Download, open_media
from fotoowl.sources.google_drive.errors import (
    _KEY_PARAM_RE,
    _TRANSPORT_ERRORS,
    NOT_SHARED_MESSAGE,
    DriveConfigError,
    DriveError,
    DriveFolderNotAccessible,
    _error_from_response,
    is_rate_limit,
)
from fotoowl.sources.google_drive.links import FolderRef
from fotoowl.sources.google_drive.models import (
    FOLDER_MIME_TYPE,
    ITEM_FIELDS,
    LIST_FIELDS,
    RESOURCE_KEYS_HEADER,
    SHORTCUT_MIME_TYPE,
    DriveFile,
    SkippedFile,
    _item_name,
    _join_path,
    _optional_str,
    _to_entry,
)
from fotoowl.sources.walking import FOLDERS_AT_ONCE, walk_tree

__all__ = ["DRIVE_API_URL", "DriveClient"]

# The logger keeps the name it had before the split (fotoowl.drive), so log filters and dashboards still match.
log = logging.getLogger("fotoowl.drive")

DRIVE_API_URL = "https://www.googleapis.com/drive/v3"

T = TypeVar("T")


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
        listing_pacer: Pacer | None = None,
        max_tries: int = 8,
        backoff_base_s: float = 1.0,
        backoff_cap_s: float = 32.0,
        read_timeout_s: float = 60.0,
        page_size: int = 1000,
        connect_timeout_s: float = 15.0,
        folders_at_once: int = FOLDERS_AT_ONCE,
    ) -> None:
        self._session = session
        self._api_url = api_url.rstrip("/")
        self._api_key = api_key or None
        self._pacer = pacer
        # Listing pages get a lane of their own: queued behind a busy folder's downloads, each page
        # would wait for them, and the listing is what keeps the downloads fed.
        self._listing_pacer = listing_pacer or pacer
        self.max_tries = max(1, max_tries)
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.page_size = min(1000, max(1, page_size))
        self.folders_at_once = max(1, folders_at_once)
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

    def _pacer_for(self, kind: str) -> Pacer | None:
        return self._listing_pacer if kind == "list" else self._pacer

    async def _pause_before_retry(self, error: DriveError, attempt: int, kind: str, item_id: str) -> None:
        pace = ""
        extra: dict[str, object] = {}
        pacer = self._pacer_for(kind)
        if pacer is not None and is_rate_limit(error):
            pace_per_s = await pacer.slow_down()
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
            if (pacer := self._pacer_for(kind)) is not None:
                await pacer.acquire()
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
        """Metadata of the root folder; raises DriveFolderNotAccessible unless it is a visible folder."""
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
            raise DriveFolderNotAccessible("This folder is in its owner's trash.", status=200, reason="trashed")
        if item.get("mimeType") != FOLDER_MIME_TYPE:
            raise DriveFolderNotAccessible(
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
                raise DriveFolderNotAccessible(NOT_SHARED_MESSAGE, status=404, reason=error.reason or "") from None
            raise

    async def walk(self, ref: FolderRef, *, recursive: bool = True) -> AsyncIterator[list[DriveFile | SkippedFile]]:
        """Yield, per listed page, the images found and the items skipped (empty batches are not yielded).

        Up to `folders_at_once` folders are listed at a time, in the order they were found. Each
        file is yielded once even when shortcuts reach it again; a folder reached again (a shortcut
        loop) is not listed again; trashed items are not listed. A shortcut to a file yields the
        target (its id, name and metadata) at the shortcut's folder path; a shortcut to a folder is
        walked under the shortcut's name.
        """
        root = await self.get_folder(ref)
        root_id = str(root["id"])
        keys: dict[str, str] = {}
        root_key = _optional_str(root.get("resourceKey")) or (ref.resource_key if root_id == ref.folder_id else None)
        if root_key:
            keys[root_id] = root_key
        state = _WalkState(recursive=recursive, resource_keys=keys, visited_folders={root_id})

        async def list_folder(
            folder: tuple[str, str], found: Callable[[tuple[str, str]], None]
        ) -> AsyncIterator[list[DriveFile | SkippedFile]]:
            folder_id, folder_path = folder
            seen_tokens: set[str] = set()
            page_token: str | None = None
            while True:
                page = await self._list_page(folder_id, page_token, keys)
                batch: list[DriveFile | SkippedFile] = []
                for item in page.get("files") or []:
                    entry = await self._visit(item, folder_path, state)
                    if entry is not None:
                        batch.append(entry)
                while state.pending:
                    found(state.pending.popleft())
                if batch:
                    yield batch
                page_token = _optional_str(page.get("nextPageToken"))
                if page_token is None or page_token in seen_tokens:
                    break
                seen_tokens.add(page_token)

        async for batch in walk_tree((root_id, ""), list_folder, folders_at_once=self.folders_at_once):
            yield batch

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

    async def _open_media(self, file_id: str, resource_key: str | None, offset_bytes: int) -> aiohttp.ClientResponse:
        """One media request, following redirects by hand; returns an open 200/206 response."""
        url = URL(f"{self._api_url}/files/{quote(file_id, safe='')}").update_query(
            {"alt": "media", "supportsAllDrives": "true", **self._key_params()}
        )
        return await open_media(
            self._session,
            url,
            file_id=file_id,
            resource_key=resource_key,
            offset_bytes=offset_bytes,
            client_timeout=self._timeout,
            api_origin=self._api_origin,
            transport_error=self._transport_error,
            http_error=self._http_error,
        )
