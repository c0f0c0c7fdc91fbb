"""PublicDownload: one file's bytes from drive.usercontent.google.com without a key, resumed with Range.

The download host answers a small file with its bytes (and a Content-Disposition); a large one with
an HTML page ("Google Drive can't scan this file for viruses") whose form (id, export, confirm, uuid)
leads to the bytes; a file over its download quota with an error page. HTML where bytes were
expected is Google pushing back (a captcha, a changed page): transient, and it slows the shared pace.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from types import TracebackType

import aiohttp
from yarl import URL

from fotoowl.metrics import DRIVE_REQUESTS
from fotoowl.sources.base import SourceError
from fotoowl.sources.google_drive.download import _content_range
from fotoowl.sources.google_drive.errors import _TRANSPORT_ERRORS
from fotoowl.sources.google_drive_public.errors import (
    BAD_RANGE,
    CAPTCHA,
    FILE_NOT_SHARED_MESSAGE,
    NOT_FOUND,
    NOT_SHARED,
    QUOTA,
    SIGN_IN,
    TRUNCATED,
    UNEXPECTED_HTML,
    UNEXPECTED_REDIRECT,
    http_error,
)
from fotoowl.sources.google_drive_public.pages import read_download_page
from fotoowl.sources.google_drive_public.transport import PublicFetcher

__all__ = ["PublicDownload"]

log = logging.getLogger("fotoowl.drive_public")

# Google's interstitial pages are a few KiB; an HTML body past this is no page of theirs.
MAX_HTML_BYTES = 1 << 20
# The virus-scan form leads to the bytes; a second form after it means the confirmation did not take.
MAX_FORMS = 2


def _is_page(response: aiohttp.ClientResponse) -> bool:
    """An HTML answer that is not an attachment: one of Google's pages, not the file's bytes."""
    disposition = response.headers.get("Content-Disposition", "").lower()
    return response.content_type in ("text/html", "application/xhtml+xml") and "attachment" not in disposition


class PublicDownload:
    """Async iterator of a file's bytes, resuming with Range after a dropped connection.

    `content_type` is the MIME type the bytes came with (None before the first chunk, or when the answer
    named none): the listing may not have known the type, and this is the one Google serves.
    """

    def __init__(
        self,
        fetcher: PublicFetcher,
        file_id: str,
        *,
        resource_key: str | None,
        chunk_size_bytes: int,
        expected_size_bytes: int | None,
    ) -> None:
        if chunk_size_bytes < 1:
            raise ValueError("chunk_size_bytes must be positive")
        self.file_id = file_id
        self.bytes_read = 0
        self.content_type: str | None = None
        self._fetcher = fetcher
        self._resource_key = resource_key
        self._chunk_size_bytes = chunk_size_bytes
        self._total_bytes = expected_size_bytes
        self._chunks: AsyncGenerator[bytes, None] | None = None

    def __repr__(self) -> str:
        return f"PublicDownload(file_id={self.file_id!r}, bytes_read={self.bytes_read})"

    def __aiter__(self) -> AsyncIterator[bytes]:
        if self._chunks is None:
            self._chunks = self._stream()
        return self._chunks

    async def aclose(self) -> None:
        if self._chunks is not None:
            await self._chunks.aclose()

    async def __aenter__(self) -> PublicDownload:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # -- one request for the bytes -------------------------------------------------------------------

    async def _open(self) -> aiohttp.ClientResponse:
        """An open 200/206 answer carrying the bytes from `bytes_read` on, past the virus-scan form."""
        fetcher = self._fetcher
        url = fetcher.file_download(self.file_id, self._resource_key)
        # Range goes on every request: the form page ignores it, the bytes after it honour it.
        headers = {"Accept-Encoding": "identity"}
        if self.bytes_read > 0:
            headers["Range"] = f"bytes={self.bytes_read}-"
        forms = 0
        while True:
            try:
                response = await fetcher.get(url, kind="public_download", headers=headers)
            except SourceError as error:
                if error.reason == SIGN_IN:
                    raise SourceError(FILE_NOT_SHARED_MESSAGE, reason=NOT_SHARED, status=error.status) from None
                raise
            if response.status in (200, 206) and not _is_page(response):
                return response
            try:
                status, response_headers, is_html = response.status, response.headers, _is_page(response)
                # After redirects: a form's relative action resolves against where the page came from.
                page_url = str(response.url)
                body = await fetcher.read_body(response, MAX_HTML_BYTES) if is_html else None
                charset = response.charset or "utf-8"
            finally:
                response.release()
            if body is None:
                if status in (200, 206):
                    raise SourceError(
                        "Google Drive answered an HTML page too large to be one of its own.",
                        reason=UNEXPECTED_HTML,
                        status=status,
                        transient=True,
                    )
                raise http_error(status, response_headers, "a download")
            page = read_download_page(body.decode(charset, "replace"), page_url)
            if page.kind == "confirm" and page.confirm_url is not None and forms < MAX_FORMS:
                forms += 1
                try:
                    target = URL(page.confirm_url)
                except ValueError:
                    target = URL()
                if self._resource_key and target.is_absolute() and "resourcekey" not in target.query:
                    # The form is reported to carry the key itself; if it does not, the file still needs it.
                    target = target.update_query(resourcekey=self._resource_key)
                if not fetcher.allowed(target):
                    raise SourceError(
                        f"Google Drive's download form leads to an unexpected host ({target.host or 'none'}).",
                        reason=UNEXPECTED_REDIRECT,
                        status=status,
                    )
                url = target
                continue
            raise self._page_error(page.kind, page.message, status, response_headers)

    def _page_error(self, kind: str, message: str, status: int, headers: Mapping[str, str]) -> SourceError:
        if kind == "quota":
            # Per file, for up to a day: trying again soon only spends requests of the shared pace.
            return SourceError(f"Google Drive will not serve this file now: {message}", reason=QUOTA, status=status)
        if kind == "missing":
            return SourceError(f"Google Drive has no such file: {message}", reason=NOT_FOUND, status=status)
        if kind == "sign_in":
            return SourceError(FILE_NOT_SHARED_MESSAGE, reason=NOT_SHARED, status=status)
        if kind == "captcha":
            return SourceError(
                "Google Drive answered with a captcha: this address sent it too many requests.",
                reason=CAPTCHA,
                status=status,
                transient=True,
            )
        if status in (200, 206):
            return SourceError(
                f"Google Drive answered a page instead of the file ({message or 'no title'}).",
                reason=UNEXPECTED_HTML,
                status=status,
                transient=True,
            )
        return http_error(status, headers, "a download")

    # -- the stream ----------------------------------------------------------------------------------

    def _bytes_to_skip(self, response: aiohttp.ClientResponse) -> int:
        """Check where the answer starts; returns how many leading bytes repeat what was already read."""
        if response.status == 200:
            # The first answer, or a server that ignored Range and sends everything again.
            if response.content_length is not None:
                self._total_bytes = response.content_length
            return self.bytes_read
        parsed = _content_range(response.headers.get("Content-Range"))
        if parsed is None or parsed[0] > self.bytes_read:
            raise SourceError(
                "Google Drive answered a resumed download with an unusable range.",
                reason=BAD_RANGE,
                status=response.status,
            )
        if parsed[1] is not None:
            self._total_bytes = parsed[1]
        return self.bytes_read - parsed[0]

    def _finished(self) -> bool:
        return self._total_bytes is not None and self.bytes_read >= self._total_bytes and self.bytes_read > 0

    async def _stream(self) -> AsyncGenerator[bytes, None]:
        fetcher = self._fetcher
        attempt = 0
        while True:
            attempt += 1
            response: aiohttp.ClientResponse | None = None
            try:
                if attempt > 1:
                    if self._finished():
                        return
                    log.info(
                        "Retrying keyless Drive download of %s from byte %d",
                        self.file_id,
                        self.bytes_read,
                        extra={"file_id": self.file_id, "offset_bytes": self.bytes_read, "attempt": attempt},
                    )
                response = await self._open()
                skip_bytes = self._bytes_to_skip(response)
                if self.content_type is None and "Content-Type" in response.headers:
                    self.content_type = response.content_type
                async for chunk in response.content.iter_chunked(self._chunk_size_bytes):
                    if skip_bytes:
                        cut = min(skip_bytes, len(chunk))
                        chunk, skip_bytes = chunk[cut:], skip_bytes - cut
                        if not chunk:
                            continue
                    self.bytes_read += len(chunk)
                    yield chunk
                if skip_bytes or (self._total_bytes is not None and self.bytes_read < self._total_bytes):
                    raise SourceError(
                        "The download ended early.", reason=TRUNCATED, status=response.status, transient=True
                    )
                return
            except SourceError as error:
                failure = error
            except _TRANSPORT_ERRORS as exc:
                DRIVE_REQUESTS.labels("public_download", "error").inc()
                failure = fetcher.transport_error(exc)
            finally:
                if response is not None:
                    response.close()
            if failure.status == 416 and self._finished():
                return
            await fetcher.recover(failure, attempt, "download", self.file_id)
