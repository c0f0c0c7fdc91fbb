"""What every source of folders gives the pipeline: the small protocol it depends on.

A source parses the links people paste, checks a folder, walks it page by page into entries, and
opens one entry's bytes as a stream that can resume at an offset. Its errors say whether trying again
can help. The pipeline, the API, the pages and the CLI know sources only through this module.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol


class InvalidLink(ValueError):
    """Not a link this source reads; the message says why, for the person who pasted it."""


class SourceError(Exception):
    """A request to the source failed. `transient`: trying again later may succeed (after
    `retry_after_s` when the source said so); otherwise this file (or folder) will not work."""

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        status: int | None = None,
        transient: bool = False,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.status = status
        self.transient = transient
        self.retry_after_s = retry_after_s


class SourceConfigError(SourceError):
    """fotoowl's own configuration for this source is unusable (a key missing, invalid or not enabled)."""


class FolderNotAccessible(SourceError):
    """The folder is missing, not shared publicly, or needs a password it was not given."""


@dataclass(frozen=True, slots=True)
class FolderLink:
    """A folder as a source names it: `folder_id` plus whatever else reaching it takes (`key`: a Drive
    resource key, a Dropbox link's rlkey-bearing URL; `password` for protected links)."""

    source: str
    folder_id: str
    url: str
    key: str | None = None
    password: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class Entry:
    """One file of the folder. `checksum_kind` names how `checksum` was computed ("md5" for Drive,
    "dropbox_content_hash" for Dropbox); `size_bytes` and `checksum` may be unknown (None)."""

    source_id: str
    name: str
    folder_path: str
    mime_type: str
    size_bytes: int | None
    checksum: str | None
    checksum_kind: str | None
    created_at: datetime | None = None
    modified_at: datetime | None = None
    # What downloading it takes besides its id (a Drive resource key, a Dropbox path in its link).
    locator: str | None = None
    width: int | None = None
    height: int | None = None
    taken_time: str | None = None
    camera_make: str | None = None
    camera_model: str | None = None


@dataclass(frozen=True, slots=True)
class Skipped:
    """A listed item that is not copied (not an image, a native document, a dangling shortcut), and why."""

    source_id: str
    name: str
    folder_path: str
    mime_type: str
    reason: str
    message: str


class ByteStream(Protocol):
    """A file's bytes; iterate, then `aclose()`. It resumes by itself after a dropped connection."""

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


class Source(Protocol):
    """One provider of shared folders."""

    name: str

    def parse_link(self, url: str) -> FolderLink:
        """The folder a pasted link names; InvalidLink (with the reason) when it is not one of ours."""
        ...

    async def folder_name(self, link: FolderLink) -> str:
        """The folder's name; FolderNotAccessible or SourceConfigError when it cannot be read."""
        ...

    def walk(self, link: FolderLink, *, recursive: bool) -> AsyncIterator[Sequence[Entry | Skipped]]:
        """The folder's files, a page at a time (subfolders too when `recursive`)."""
        ...

    def open(
        self,
        link: FolderLink,
        entry_id: str,
        *,
        locator: str | None,
        expected_size_bytes: int | None,
        chunk_size_bytes: int,
    ) -> ByteStream:
        """One file's bytes as a stream."""
        ...
