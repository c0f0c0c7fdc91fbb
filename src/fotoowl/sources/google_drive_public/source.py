"""Google Drive without an API key, as a Source: the protocol of sources/base.py over Google's keyless
pages (the embedded folder view to list, drive.usercontent.google.com to download).

It is the same source as the API reader (name "google_drive", the same file ids, the same links), so
an import can be read by either; which one a process uses is the registry's choice.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import aiohttp
import redis.asyncio as aioredis

from fotoowl.pacer import Pacer, RedisPacer
from fotoowl.sources.base import Entry, FolderLink, Skipped
from fotoowl.sources.google_drive.links import parse_folder_link
from fotoowl.sources.google_drive_public.download import PublicDownload
from fotoowl.sources.google_drive_public.listing import read_folder, walk_folders
from fotoowl.sources.google_drive_public.transport import (
    DEFAULT_USER_AGENT,
    DRIVE_DOWNLOAD_URL,
    DRIVE_PAGE_URL,
    PublicFetcher,
)
from fotoowl.sources.walking import FOLDERS_AT_ONCE

__all__ = ["DEFAULT_PUBLIC_BURST", "DEFAULT_PUBLIC_RATE_PER_S", "DrivePublicSource", "public_pacer"]

NAME = "google_drive"
# Google limits the keyless pages per client address, unpublished and far below the API's quota; bulk
# pulls are reported to fail after a burst. Low on purpose: the pace recovers to this ceiling, never past.
DEFAULT_PUBLIC_RATE_PER_S = 2.0
DEFAULT_PUBLIC_BURST = 4
PUBLIC_PACER_KEY = "fotoowl:pacer:drive-public"


def public_pacer(
    redis: aioredis.Redis,
    *,
    rate_per_s: float = DEFAULT_PUBLIC_RATE_PER_S,
    burst: int = DEFAULT_PUBLIC_BURST,
    key: str = PUBLIC_PACER_KEY,
) -> RedisPacer:
    """The keyless reader's pace, shared through Redis by every worker process (its own bucket, apart from
    any API key's: the two are limited by Google separately)."""
    return RedisPacer(redis, key, rate_per_s, burst)


class DrivePublicSource:
    """Reads public ("Anyone with the link") Drive folders without a Google API key."""

    name = NAME

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
        folders_at_once: int = FOLDERS_AT_ONCE,
    ) -> None:
        self.folders_at_once = folders_at_once
        self.fetcher = PublicFetcher(
            session,
            pacer=pacer,
            page_url=page_url,
            download_url=download_url,
            max_tries=max_tries,
            backoff_base_s=backoff_base_s,
            backoff_cap_s=backoff_cap_s,
            read_timeout_s=read_timeout_s,
            connect_timeout_s=connect_timeout_s,
            user_agent=user_agent,
        )

    def __repr__(self) -> str:
        return f"DrivePublicSource({self.fetcher!r})"

    def parse_link(self, url: str) -> FolderLink:
        """A Drive folder link (or a bare folder id), read as the API reader reads it."""
        ref = parse_folder_link(url)
        return FolderLink(source=NAME, folder_id=ref.folder_id, url=url.strip(), key=ref.resource_key)

    async def folder_name(self, link: FolderLink) -> str:
        """The folder's name from its page; PublicFolderNotAccessible (with how to share it) when the
        page asks to sign in."""
        return (await read_folder(self.fetcher, link.folder_id, link.key)).title

    async def walk(self, link: FolderLink, *, recursive: bool) -> AsyncIterator[Sequence[Entry | Skipped]]:
        async for batch in walk_folders(
            self.fetcher, link.folder_id, link.key, recursive=recursive, folders_at_once=self.folders_at_once
        ):
            yield batch

    def open(
        self,
        link: FolderLink,
        entry_id: str,
        *,
        locator: str | None,
        expected_size_bytes: int | None,
        chunk_size_bytes: int,
    ) -> PublicDownload:
        return PublicDownload(
            self.fetcher,
            entry_id,
            resource_key=locator,
            chunk_size_bytes=chunk_size_bytes,
            expected_size_bytes=expected_size_bytes,
        )
