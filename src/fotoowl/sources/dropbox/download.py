"""DropboxDownload: one file of a shared folder, streamed with resume after a dropped connection.

The file's metadata comes back in the Dropbox-API-Result header: its size says where the body must end
and its rev that a resumed request still reads the same version of the file.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncGenerator, AsyncIterator
from types import TracebackType
from typing import Any

import aiohttp

from fotoowl.metrics import DROPBOX_REQUESTS
from fotoowl.sources.base import FolderNotAccessible, SourceError
from fotoowl.sources.dropbox.client import DropboxClient
from fotoowl.sources.dropbox.content_hash import DropboxContentHasher
from fotoowl.sources.dropbox.errors import TRANSPORT_ERRORS

__all__ = ["RESULT_HEADER", "DropboxDownload", "download_error"]

log = logging.getLogger("fotoowl.dropbox")

RESULT_HEADER = "Dropbox-API-Result"
_CONTENT_RANGE_RE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
# Raised out of the stream at once: resuming would mix two versions or cannot help.
_FINAL_REASONS = frozenset({"changed_during_download", "size_mismatch"})


def download_error(error: SourceError, path: str) -> SourceError:
    """A get_shared_link_file failure as one file's error (or the folder's, when the link itself is refused)."""
    reason = error.reason or ""
    if error.status != 409:
        return error
    first = reason.split("/", 1)[0]
    if reason in ("path/not_found", "shared_link_not_found") or reason.startswith("path/not_found/"):
        # Dropbox documents shared_link_not_found for this route and answers path/not_found on others;
        # after a successful listing both mean the file was moved or deleted since.
        return SourceError(
            f"{path} is no longer in the Dropbox folder: it was moved, renamed or deleted after the folder was listed.",
            reason="not_found",
            status=409,
        )
    if first == "shared_link_is_directory":
        return SourceError(
            f"{path} is a folder on Dropbox, not a file: there is nothing to download.",
            reason="is_directory",
            status=409,
        )
    if first == "shared_link_access_denied":
        return FolderNotAccessible(
            "Dropbox refused access to the shared folder while downloading from it: the link's password, "
            "audience or expiry may have changed.",
            reason=reason,
            status=409,
        )
    if first == "path" and reason.endswith("restricted_content"):
        return SourceError(
            f"Dropbox does not allow {path} to be downloaded (restricted content).",
            reason="restricted_content",
            status=409,
        )
    return error


def _content_range(value: str | None) -> tuple[int, int | None] | None:
    """(first byte, total size or None) from a Content-Range header."""
    match = _CONTENT_RANGE_RE.fullmatch((value or "").strip())
    if match is None:
        return None
    total = match.group(3)
    return int(match.group(1)), (None if total == "*" else int(total))


def _api_result(response: aiohttp.ClientResponse) -> dict[str, Any]:
    try:
        value = json.loads(response.headers.get(RESULT_HEADER) or "null")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


class DropboxDownload:
    """Async iterator of one file's bytes, resuming with Range after a dropped connection.

    Use `async with source.open(...) as d: async for chunk in d: ...` or call aclose() when stopping
    early, so the connection is released. `content_hash` is available after the last chunk when
    opened with compute_content_hash=True.
    """

    def __init__(
        self,
        client: DropboxClient,
        *,
        url: str,
        path: str,
        password: str | None,
        file_id: str,
        chunk_size_bytes: int,
        expected_size_bytes: int | None,
        compute_content_hash: bool = False,
    ) -> None:
        if chunk_size_bytes < 1:
            raise ValueError("chunk_size_bytes must be positive")
        self.file_id = file_id
        self.path = path
        self.bytes_read = 0
        self._client = client
        self._url = url
        self._password = password
        self._chunk_size_bytes = chunk_size_bytes
        self._expected_size_bytes = expected_size_bytes
        self._total_bytes = expected_size_bytes
        self._rev: str | None = None
        self._hasher = DropboxContentHasher() if compute_content_hash else None
        self._chunks: AsyncGenerator[bytes, None] | None = None

    def __repr__(self) -> str:
        return f"DropboxDownload(file_id={self.file_id!r}, bytes_read={self.bytes_read})"

    @property
    def content_hash(self) -> str:
        if self._hasher is None:
            raise ValueError("this download was opened with compute_content_hash=False")
        return self._hasher.hexdigest()

    def __aiter__(self) -> AsyncIterator[bytes]:
        if self._chunks is None:
            self._chunks = self._stream()
        return self._chunks

    async def aclose(self) -> None:
        if self._chunks is not None:
            await self._chunks.aclose()

    async def __aenter__(self) -> DropboxDownload:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def _check_version(self, result: dict[str, Any], status: int) -> None:
        rev, size = result.get("rev"), result.get("size")
        if isinstance(rev, str) and rev:
            if self._rev is not None and rev != self._rev:
                raise SourceError(
                    f"{self.path} changed on Dropbox while it was being downloaded; copy it again.",
                    reason="changed_during_download",
                    status=status,
                    transient=True,
                )
            self._rev = rev
        if isinstance(size, int) and not isinstance(size, bool):
            if self._expected_size_bytes is not None and size != self._expected_size_bytes:
                raise SourceError(
                    f"{self.path} changed on Dropbox after the folder was listed ({self._expected_size_bytes} "
                    f"bytes listed, {size} now); list the folder again to copy it.",
                    reason="size_mismatch",
                    status=status,
                )
            self._total_bytes = size

    def _bytes_to_skip(self, response: aiohttp.ClientResponse) -> int:
        """Check where the response starts; returns how many leading bytes repeat what we have."""
        self._check_version(_api_result(response), response.status)
        offset = self.bytes_read
        if response.status == 200:
            # A server (or proxy) may ignore Range and send everything again: drop what we already have.
            if self._total_bytes is None and response.content_length is not None:
                self._total_bytes = response.content_length
            return offset
        parsed = _content_range(response.headers.get("Content-Range"))
        if parsed is None or parsed[0] > offset:
            raise SourceError(
                "Dropbox answered a resumed download with an unusable range.",
                reason="bad_range",
                status=response.status,
            )
        if parsed[1] is not None:
            self._total_bytes = parsed[1]
        return offset - parsed[0]

    def _finished(self) -> bool:
        # Zero bytes are never "finished" early: an empty file still needs its one request.
        return self._total_bytes is not None and self.bytes_read >= self._total_bytes and self.bytes_read > 0

    def _check_end(self, status: int, skip_bytes: int) -> None:
        if skip_bytes or (self._total_bytes is not None and self.bytes_read < self._total_bytes):
            raise SourceError("The download ended early.", reason="truncated", status=status, transient=True)
        if self._total_bytes is not None and self.bytes_read > self._total_bytes:
            raise SourceError(
                f"Dropbox sent {self.bytes_read} bytes of {self.path}, more than its {self._total_bytes}.",
                reason="size_mismatch",
                status=status,
            )

    async def _stream(self) -> AsyncGenerator[bytes, None]:
        if not self.path.startswith("/"):
            raise SourceError(
                f"Dropbox file {self.file_id} has no path inside its shared folder; list the folder again.",
                reason="no_locator",
            )
        client = self._client
        attempt = 0
        while True:
            attempt += 1
            response: aiohttp.ClientResponse | None = None
            try:
                await client.pace()
                if attempt > 1:
                    if self._finished():
                        return
                    log.info(
                        "Retrying Dropbox download of %s from byte %d",
                        self.file_id,
                        self.bytes_read,
                        extra={"file_id": self.file_id, "offset_bytes": self.bytes_read, "attempt": attempt},
                    )
                response = await client.open_shared_link_file(
                    self._url, self.path, self._password, offset_bytes=self.bytes_read
                )
                skip_bytes = self._bytes_to_skip(response)
                async for chunk in response.content.iter_chunked(self._chunk_size_bytes):
                    if skip_bytes:
                        cut = min(skip_bytes, len(chunk))
                        chunk, skip_bytes = chunk[cut:], skip_bytes - cut
                        if not chunk:
                            continue
                    if self._hasher is not None:
                        self._hasher.update(chunk)
                    self.bytes_read += len(chunk)
                    yield chunk
                self._check_end(response.status, skip_bytes)
                return
            except SourceError as error:
                failure = download_error(error, self.path)
            except TRANSPORT_ERRORS as exc:
                DROPBOX_REQUESTS.labels("download", "error").inc()
                failure = client.transport_error(exc)
            finally:
                if response is not None:
                    response.close()
            if failure.status == 416 and self._finished():
                return
            if failure.reason in _FINAL_REASONS or not failure.transient or attempt >= client.max_tries:
                raise failure
            await client.pause_before_retry(failure, attempt, "download", self.file_id)
