"""Download: a file's bytes streamed with resume, and the media request with its redirects checked by hand.

The client (client.py) imports this module, never the reverse: a Download reaches the client's pacing,
retries and media request through MediaClient, and open_media takes the request's pieces as arguments.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from types import TracebackType
from typing import Protocol

import aiohttp
from yarl import URL

from fotoowl.metrics import DRIVE_REQUESTS
from fotoowl.pacer import Pacer
from fotoowl.sources.google_drive.errors import _TRANSPORT_ERRORS, DriveError
from fotoowl.sources.google_drive.models import RESOURCE_KEYS_HEADER

__all__ = ["Download", "MediaClient", "open_media"]

# The logger keeps the name it had before the split (fotoowl.drive), so log filters and dashboards still match.
log = logging.getLogger("fotoowl.drive")

_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 5
_GOOGLE_DOWNLOAD_HOSTS = frozenset({"www.googleapis.com", "drive.google.com", "drive.usercontent.google.com"})
_CONTENT_RANGE_RE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


class MediaClient(Protocol):
    """The pieces of the client a Download uses: its pacer, retry budget and backoff, and media request.

    DriveClient is the one implementation; naming it here would make an import circle.
    """

    @property
    def max_tries(self) -> int: ...

    @property
    def _pacer(self) -> Pacer | None: ...

    def _transport_error(self, exc: BaseException) -> DriveError: ...

    async def _pause_before_retry(self, error: DriveError, attempt: int, kind: str, item_id: str) -> None: ...

    async def _open_media(
        self, file_id: str, resource_key: str | None, offset_bytes: int
    ) -> aiohttp.ClientResponse: ...


def _allowed_download_url(url: URL, api_origin: URL) -> bool:
    if url.origin() == api_origin:
        return True
    host = (url.host or "").lower()
    return url.scheme == "https" and (host in _GOOGLE_DOWNLOAD_HOSTS or host.endswith(".googleusercontent.com"))


async def open_media(
    session: aiohttp.ClientSession,
    url: URL,
    *,
    file_id: str,
    resource_key: str | None,
    offset_bytes: int,
    client_timeout: aiohttp.ClientTimeout,
    api_origin: URL,
    transport_error: Callable[[BaseException], DriveError],
    http_error: Callable[[int, bytes, Mapping[str, str]], DriveError],
) -> aiohttp.ClientResponse:
    """One media request, following redirects by hand; returns an open 200/206 response.

    `url` is the file's alt=media URL; a redirect may lead only to Google's download hosts or back to
    `api_origin`.
    """
    headers = {"Accept-Encoding": "identity"}
    if offset_bytes > 0:
        headers["Range"] = f"bytes={offset_bytes}-"
    api_headers = {
        **headers,
        **({RESOURCE_KEYS_HEADER: f"{file_id}/{resource_key}"} if resource_key else {}),
    }
    for hop in range(MAX_REDIRECTS + 1):
        try:
            response = await session.get(
                url,
                headers=api_headers if hop == 0 else headers,
                allow_redirects=False,
                timeout=client_timeout,
            )
        except _TRANSPORT_ERRORS as exc:
            DRIVE_REQUESTS.labels("media", "error").inc()
            raise transport_error(exc) from None
        DRIVE_REQUESTS.labels("media", str(response.status)).inc()
        if response.status in (200, 206):
            return response
        if response.status in _REDIRECT_STATUSES:
            location = response.headers.get("Location", "")
            response.release()
            target = _redirect_target(url, location)
            if target is None or not _allowed_download_url(target, api_origin):
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
        raise http_error(response.status, body, response.headers)
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
        client: MediaClient,
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
