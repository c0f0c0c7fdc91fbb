"""PublicFetcher: requests to Google's keyless Drive pages, paced, retried with backoff, and with every
redirect followed by hand, to Google's own hosts only.

The pages are rate-limited by Google per client address, not per key, and answer errors, captchas or
odd HTML when pushed: every request (each redirect hop included) takes a token from the pacer, and any
such answer halves the shared pace before the backoff.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

import aiohttp
from yarl import URL

from fotoowl.metrics import DRIVE_REQUESTS, DRIVE_RETRIES
from fotoowl.pacer import Pacer
from fotoowl.sources.base import SourceError
from fotoowl.sources.google_drive.download import _redirect_target
from fotoowl.sources.google_drive.errors import _TRANSPORT_ERRORS
from fotoowl.sources.google_drive_public.errors import (
    CAPTCHA,
    SIGN_IN,
    TOO_MANY_REDIRECTS,
    TRANSPORT,
    UNEXPECTED_REDIRECT,
    slows_the_pace,
)
from fotoowl.sources.google_drive_public.pages import SIGN_IN_HOST

__all__ = ["DRIVE_DOWNLOAD_URL", "DRIVE_PAGE_URL", "PublicFetcher"]

log = logging.getLogger("fotoowl.drive_public")

DRIVE_PAGE_URL = "https://drive.google.com"
DRIVE_DOWNLOAD_URL = "https://drive.usercontent.google.com"
# Google serves these pages to browsers; an unknown client has been seen to get other markup. The
# product token at the end says who is asking.
DEFAULT_USER_AGENT = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36 fotoowl"
)
_GOOGLE_HOSTS = frozenset({"drive.google.com", "drive.usercontent.google.com"})
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 5

T = TypeVar("T")


def _is_google_sorry(url: URL) -> bool:
    """Google's "unusual traffic" captcha lives at www.google.com/sorry/...: a rate limit, not a foreign host."""
    host = (url.host or "").lower()
    return (host == "google.com" or host.endswith(".google.com")) and url.path.startswith("/sorry")


class PublicFetcher:
    """Paced, retried GETs to the keyless pages. The session is the caller's; this never closes it."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        pacer: Pacer | None,
        page_url: str = DRIVE_PAGE_URL,
        download_url: str = DRIVE_DOWNLOAD_URL,
        max_tries: int = 6,
        backoff_base_s: float = 1.0,
        backoff_cap_s: float = 32.0,
        read_timeout_s: float = 60.0,
        connect_timeout_s: float = 15.0,
        user_agent: str = DEFAULT_USER_AGENT,
    ) -> None:
        self._session = session
        self.pacer = pacer
        self.page_url = URL(page_url.rstrip("/"))
        self.download_url = URL(download_url.rstrip("/"))
        # The configured addresses are allowed as they are: tests and a proxy in front of Google use them.
        self._origins = frozenset({self.page_url.origin(), self.download_url.origin()})
        self.max_tries = max(1, max_tries)
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout_s, sock_read=read_timeout_s)
        # English wording is the fallback when a page's classes change; the classes are read first.
        self._headers = {"User-Agent": user_agent, "Accept-Language": "en-US,en;q=0.8"}
        self._rng = random.Random()

    def __repr__(self) -> str:
        return f"PublicFetcher(page_url={str(self.page_url)!r}, download_url={str(self.download_url)!r})"

    # -- addresses -----------------------------------------------------------------------------------

    def allowed(self, url: URL) -> bool:
        """Google's own hosts over https, or the configured addresses; nothing else is ever fetched."""
        if not url.is_absolute():
            return False
        if url.origin() in self._origins:
            return True
        host = (url.host or "").lower().rstrip(".")
        return url.scheme == "https" and (host in _GOOGLE_HOSTS or host.endswith(".googleusercontent.com"))

    def folder_page(self, folder_id: str, resource_key: str | None) -> URL:
        query = {"id": folder_id, **({"resourcekey": resource_key} if resource_key else {})}
        return (self.page_url / "embeddedfolderview").with_query(query)

    def file_download(self, file_id: str, resource_key: str | None) -> URL:
        query = {"id": file_id, "export": "download", **({"resourcekey": resource_key} if resource_key else {})}
        return (self.download_url / "download").with_query(query)

    # -- requests ------------------------------------------------------------------------------------

    def transport_error(self, exc: BaseException) -> SourceError:
        detail = f"{type(exc).__name__}: {exc}".rstrip(": ")
        return SourceError(f"Network error talking to Google Drive ({detail})", reason=TRANSPORT, transient=True)

    async def get(self, url: URL, *, kind: str, headers: Mapping[str, str] | None = None) -> aiohttp.ClientResponse:
        """One paced GET, redirects followed by hand; returns the first answer that is not a redirect.

        A redirect to Google's sign-in raises SIGN_IN, to its captcha CAPTCHA (transient); to any host
        that is not Google's, UNEXPECTED_REDIRECT, without a request to it.
        """
        for _hop in range(MAX_REDIRECTS + 1):
            if not self.allowed(url):
                raise SourceError(
                    f"Google Drive sent fotoowl to an unexpected host ({url.host or 'none'}).",
                    reason=UNEXPECTED_REDIRECT,
                )
            if self.pacer is not None:
                await self.pacer.acquire()
            try:
                response = await self._session.get(
                    url, headers={**self._headers, **(headers or {})}, allow_redirects=False, timeout=self._timeout
                )
            except _TRANSPORT_ERRORS as exc:
                DRIVE_REQUESTS.labels(kind, "error").inc()
                raise self.transport_error(exc) from None
            DRIVE_REQUESTS.labels(kind, str(response.status)).inc()
            if response.status not in _REDIRECT_STATUSES:
                return response
            status = response.status
            target = _redirect_target(url, response.headers.get("Location", ""))
            response.release()
            if target is not None and (target.host or "").lower() == SIGN_IN_HOST:
                raise SourceError("Google Drive asks to sign in.", reason=SIGN_IN, status=status)
            if target is not None and _is_google_sorry(target):
                raise SourceError(
                    "Google Drive answered with a captcha: this address sent it too many requests.",
                    reason=CAPTCHA,
                    status=status,
                    transient=True,
                )
            if target is None:
                raise SourceError(
                    "Google Drive sent a redirect without a usable address.", reason=UNEXPECTED_REDIRECT, status=status
                )
            url = target
        raise SourceError("Too many redirects from Google Drive.", reason=TOO_MANY_REDIRECTS)

    async def read_body(self, response: aiohttp.ClientResponse, limit_bytes: int) -> bytes | None:
        """The whole body, or None when it is longer than `limit_bytes` (no page of Google's is)."""
        parts: list[bytes] = []
        size = 0
        try:
            async for chunk in response.content.iter_chunked(1 << 16):
                parts.append(chunk)
                size += len(chunk)
                if size > limit_bytes:
                    return None
        except _TRANSPORT_ERRORS as exc:
            raise self.transport_error(exc) from None
        return b"".join(parts)

    # -- retries -------------------------------------------------------------------------------------

    def backoff_s(self, attempt: int, retry_after_s: float | None) -> float:
        """Full jitter over a doubling, capped ceiling; never shorter than the server's Retry-After."""
        ceiling_s = min(self.backoff_cap_s, self.backoff_base_s * 2.0 ** min(attempt - 1, 30))
        delay_s = self._rng.uniform(0.0, ceiling_s)
        return max(delay_s, retry_after_s) if retry_after_s is not None else delay_s

    async def recover(self, error: SourceError, attempt: int, what: str, item_id: str) -> None:
        """Raise `error` unless another try may help, after slowing the shared pace when Google's answer
        calls for it (even on the last try: the next file's requests should not push again); else sleep
        the backoff."""
        pace = ""
        if self.pacer is not None and slows_the_pace(error):
            pace = f"; pacing keyless Drive requests at {await self.pacer.slow_down():.2f}/s"
        if not error.transient or attempt >= self.max_tries:
            raise error
        delay_s = self.backoff_s(attempt, error.retry_after_s)
        DRIVE_RETRIES.labels(error.reason or "unknown").inc()
        log.warning(
            "keyless Drive %s for %s failed (%s %s, attempt %d); retrying in %.2f s%s",
            what,
            item_id,
            error.status,
            error.reason,
            attempt,
            delay_s,
            pace,
            extra={
                "drive_kind": what,
                "file_id": item_id,
                "status": error.status,
                "reason": error.reason,
                "attempt": attempt,
                "delay_s": round(delay_s, 3),
            },
        )
        await asyncio.sleep(delay_s)

    async def retrying(self, what: str, item_id: str, attempt_once: Callable[[], Awaitable[T]]) -> T:
        attempt = 0
        while True:
            attempt += 1
            try:
                return await attempt_once()
            except SourceError as error:
                await self.recover(error, attempt, what, item_id)
