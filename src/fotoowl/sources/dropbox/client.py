"""DropboxClient: Dropbox API v2 requests with app authentication, paced and retried.

Every request goes to one of two configured bases (api.dropboxapi.com and content.dropboxapi.com, or
an emulator standing in for them) and redirects are never followed, so the credentials reach no other
host. The shared link itself travels only inside request bodies and the Dropbox-API-Arg header: it is
never fetched.

Transient failures (429, 5xx, dropped connections, timeouts) are retried with truncated exponential
backoff and full jitter, never sooner than Dropbox's retry_after; a 429 also slows the shared pacer.
The app key and secret are scrubbed from every message: aiohttp exceptions are never chained.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import random
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import aiohttp
from yarl import URL

from fotoowl.metrics import DROPBOX_REQUESTS, DROPBOX_RETRIES
from fotoowl.pacer import Pacer
from fotoowl.sources.base import SourceConfigError, SourceError
from fotoowl.sources.dropbox.errors import TRANSPORT_ERRORS, error_from_response, is_rate_limit

__all__ = ["API_ARG_HEADER", "DROPBOX_API_URL", "DROPBOX_CONTENT_URL", "DropboxClient", "api_arg_header"]

log = logging.getLogger("fotoowl.dropbox")

DROPBOX_API_URL = "https://api.dropboxapi.com"
DROPBOX_CONTENT_URL = "https://content.dropboxapi.com"
API_ARG_HEADER = "Dropbox-API-Arg"
MAX_PAGE_LIMIT = 2000
_BASIC_RE = re.compile(r"(?i)(basic\s+)[A-Za-z0-9+/=._-]+")

T = TypeVar("T")


def api_arg_header(arg: Mapping[str, Any]) -> str:
    """JSON for the Dropbox-API-Arg header, which must be header-safe: every non-ASCII character and DEL
    escaped as \\uXXXX (json's ensure_ascii covers the first, not DEL, which is ASCII)."""
    return json.dumps(arg, ensure_ascii=True, separators=(",", ":")).replace("\x7f", "\\u007f")


def _base_url(url: str, what: str) -> str:
    parsed = URL(url)
    if parsed.scheme not in ("http", "https") or not parsed.host or parsed.user or parsed.query_string:
        raise ValueError(f"{what} must be an http(s) URL without credentials or query, like {DROPBOX_API_URL}")
    return str(parsed).rstrip("/")


class DropboxClient:
    """Dropbox API v2 with an app key and secret. The session is the caller's; this client never closes it."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        app_key: str | None,
        app_secret: str | None,
        api_url: str = DROPBOX_API_URL,
        content_url: str = DROPBOX_CONTENT_URL,
        pacer: Pacer | None = None,
        max_tries: int = 8,
        backoff_base_s: float = 1.0,
        backoff_cap_s: float = 32.0,
        read_timeout_s: float = 60.0,
        connect_timeout_s: float = 15.0,
        page_limit: int = MAX_PAGE_LIMIT,
    ) -> None:
        self._session = session
        self.api_url = _base_url(api_url, "api_url")
        self.content_url = _base_url(content_url, "content_url")
        self._pacer = pacer
        self.max_tries = max(1, max_tries)
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.page_limit = min(MAX_PAGE_LIMIT, max(1, page_limit))
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout_s, sock_read=read_timeout_s)
        self._rng = random.Random()
        self._authorization: str | None = None
        self._secrets: tuple[str, ...] = ()
        if app_key and app_secret:
            token = base64.b64encode(f"{app_key}:{app_secret}".encode()).decode("ascii")
            self._authorization = f"Basic {token}"
            # Longest first, so that a key inside the token is not replaced before the token itself.
            self._secrets = tuple(sorted({token, app_key, app_secret}, key=len, reverse=True))

    def __repr__(self) -> str:
        return f"DropboxClient(api_url={self.api_url!r}, content_url={self.content_url!r})"

    # -- plumbing ------------------------------------------------------------------------------------

    def redact(self, text: str) -> str:
        """Remove the app key and secret (and any Basic credentials) from text that may quote a request."""
        for secret in self._secrets:
            text = text.replace(secret, "REDACTED")
        return _BASIC_RE.sub(r"\1REDACTED", text)

    def transport_error(self, exc: BaseException) -> SourceError:
        detail = self.redact(f"{type(exc).__name__}: {exc}".rstrip(": "))
        return SourceError(f"Network error talking to Dropbox ({detail})", reason="transport", transient=True)

    def _headers(self, extra: Mapping[str, str]) -> dict[str, str]:
        if self._authorization is None:
            raise SourceConfigError(
                "Dropbox needs an app key and secret: create an app in the Dropbox App Console (permissions "
                "sharing.read and files.metadata.read) and configure its key and secret.",
                reason="missing_app_credentials",
            )
        return {"Authorization": self._authorization, **extra}

    def backoff_s(self, attempt: int, retry_after_s: float | None) -> float:
        """Full jitter over a doubling, capped ceiling; never shorter than the server's retry_after."""
        ceiling_s = min(self.backoff_cap_s, self.backoff_base_s * 2.0 ** min(attempt - 1, 30))
        delay_s = self._rng.uniform(0.0, ceiling_s)
        return max(delay_s, retry_after_s) if retry_after_s is not None else delay_s

    async def pace(self) -> None:
        if self._pacer is not None:
            await self._pacer.acquire()

    async def pause_before_retry(self, error: SourceError, attempt: int, kind: str, target: str) -> None:
        pace = ""
        extra: dict[str, object] = {}
        if self._pacer is not None and is_rate_limit(error):
            pace_per_s = await self._pacer.slow_down()
            pace = f"; pacing Dropbox requests at {pace_per_s:.1f}/s"
            extra["pace_per_s"] = round(pace_per_s, 1)
        delay_s = self.backoff_s(attempt, error.retry_after_s)
        DROPBOX_RETRIES.labels(error.reason or "unknown").inc()
        log.warning(
            "Dropbox %s request for %s failed (%s %s, attempt %d); retrying in %.2f s%s",
            kind,
            target,
            error.status,
            error.reason,
            attempt,
            delay_s,
            pace,
            extra={
                "dropbox_kind": kind,
                "target": target,
                "status": error.status,
                "reason": error.reason,
                "attempt": attempt,
                "delay_s": round(delay_s, 3),
                **extra,
            },
        )
        await asyncio.sleep(delay_s)

    async def _retrying(self, kind: str, target: str, attempt_once: Callable[[], Awaitable[T]]) -> T:
        attempt = 0
        while True:
            attempt += 1
            await self.pace()
            try:
                return await attempt_once()
            except SourceError as error:
                if not error.transient or attempt >= self.max_tries:
                    raise
                await self.pause_before_retry(error, attempt, kind, target)

    def _http_error(self, route: str, status: int, body: bytes, headers: Mapping[str, str]) -> SourceError:
        return error_from_response(status, body, headers, route=route, redact=self.redact)

    # -- RPC routes (JSON in, JSON out, on the API host) ----------------------------------------------

    async def _rpc_once(self, route: str, kind: str, arg: Mapping[str, Any]) -> dict[str, Any]:
        headers = self._headers({"Content-Type": "application/json"})
        try:
            async with self._session.post(
                f"{self.api_url}/2/{route}",
                data=json.dumps(arg).encode(),
                headers=headers,
                timeout=self._timeout,
                allow_redirects=False,
            ) as response:
                DROPBOX_REQUESTS.labels(kind, str(response.status)).inc()
                body = await response.read()
                status, response_headers = response.status, response.headers
        except TRANSPORT_ERRORS as exc:
            DROPBOX_REQUESTS.labels(kind, "error").inc()
            raise self.transport_error(exc) from None
        if status != 200:
            raise self._http_error(route, status, body, response_headers)
        try:
            value = json.loads(body)
        except ValueError:
            value = None
        if not isinstance(value, dict):
            raise SourceError(
                "Dropbox sent an unreadable answer", reason="invalid_response", status=200, transient=True
            )
        return value

    async def rpc(self, route: str, arg: Mapping[str, Any], *, kind: str, target: str) -> dict[str, Any]:
        """POST `arg` to /2/`route`, retried; `kind` labels metrics and logs, `target` names what it is for."""
        log.debug("Dropbox %s request for %s", kind, target, extra={"dropbox_kind": kind, "target": target})
        return await self._retrying(kind, target, lambda: self._rpc_once(route, kind, arg))

    async def get_shared_link_metadata(self, url: str, password: str | None) -> dict[str, Any]:
        arg: dict[str, Any] = {"url": url}
        if password:
            arg["link_password"] = password
        return await self.rpc("sharing/get_shared_link_metadata", arg, kind="metadata", target="/")

    async def list_folder(self, url: str, password: str | None, path: str) -> dict[str, Any]:
        """The first page of one folder of the link (`path` "" for its root, "/Sub" below); never recursive,
        which Dropbox refuses for shared links."""
        shared_link: dict[str, str] = {"url": url}
        if password:
            shared_link["password"] = password
        arg = {"path": path, "shared_link": shared_link, "recursive": False, "limit": self.page_limit}
        return await self.rpc("files/list_folder", arg, kind="list", target=path or "/")

    async def list_folder_continue(self, cursor: str, path: str) -> dict[str, Any]:
        return await self.rpc("files/list_folder/continue", {"cursor": cursor}, kind="list", target=path or "/")

    # -- content routes (argument in a header, bytes out, on the content host) ------------------------

    async def open_shared_link_file(
        self, url: str, path: str, password: str | None, *, offset_bytes: int
    ) -> aiohttp.ClientResponse:
        """One sharing/get_shared_link_file request (not retried, not paced: the download does both);
        returns an open 200/206 response, else raises the answer's SourceError."""
        arg: dict[str, str] = {"url": url, "path": path}
        if password:
            arg["link_password"] = password
        extra = {API_ARG_HEADER: api_arg_header(arg), "Accept-Encoding": "identity"}
        if offset_bytes > 0:
            extra["Range"] = f"bytes={offset_bytes}-"
        route = "sharing/get_shared_link_file"
        try:
            response = await self._session.post(
                f"{self.content_url}/2/{route}",
                headers=self._headers(extra),
                timeout=self._timeout,
                allow_redirects=False,
            )
        except TRANSPORT_ERRORS as exc:
            DROPBOX_REQUESTS.labels("download", "error").inc()
            raise self.transport_error(exc) from None
        DROPBOX_REQUESTS.labels("download", str(response.status)).inc()
        if response.status in (200, 206):
            return response
        try:
            body = await response.read()
        except TRANSPORT_ERRORS:
            body = b""
        finally:
            response.release()
        raise self._http_error(route, response.status, body, response.headers)
