"""DropboxSource: Dropbox shared folder links as a fotoowl source (fotoowl.sources.base.Source).

A shared link lists one folder level per request (Dropbox refuses recursive listings of links), so
the walk goes breadth first, one listing (and its continuations) per folder, yielding each page as it
comes. Files are then fetched by their path inside the link, which is each Entry's locator.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp

from fotoowl.pacer import Pacer
from fotoowl.sources.base import Entry, FolderLink, FolderNotAccessible, Skipped, SourceConfigError, SourceError
from fotoowl.sources.dropbox.client import DROPBOX_API_URL, DROPBOX_CONTENT_URL, DropboxClient
from fotoowl.sources.dropbox.download import DropboxDownload
from fotoowl.sources.dropbox.links import SOURCE_NAME, parse_dropbox_link
from fotoowl.sources.dropbox.models import api_child_path, folder_child_path, to_entry

__all__ = ["NOT_FOUND_MESSAGE", "DropboxSource"]

log = logging.getLogger("fotoowl.dropbox")

NOT_FOUND_MESSAGE = (
    "Dropbox cannot find this shared folder: the link may have been deleted, disabled or mistyped. "
    "Ask its owner for a fresh link (Share > Copy link)."
)
# A listing whose cursor Dropbox invalidates (`reset`) starts again; entries already yielded are not repeated.
MAX_LISTING_RESTARTS = 3
# A subfolder deleted (or replaced by a file) between its parent's listing and its own.
_GONE_FOLDER_REASONS = ("path/not_found", "path/not_folder")


def _folder_error(error: SourceError, link: FolderLink) -> SourceError:
    """A failure to read the link's root as the folder-level error it is, in words for people."""
    if isinstance(error, SourceConfigError) or error.transient or error.status != 409:
        return error
    reason = error.reason or ""
    first = reason.split("/", 1)[0]
    if first == "shared_link_not_found" or reason.startswith("path/not_found"):
        return FolderNotAccessible(NOT_FOUND_MESSAGE, reason="shared_link_not_found", status=409)
    if first == "shared_link_access_denied":
        if link.password:
            message = (
                "Dropbox refused the password given for this folder link: check the password (links limited "
                "to a team or to invited people cannot be read at all)."
            )
        else:
            message = (
                "Dropbox refused access to this folder link: it is probably protected by a password, so a "
                "password is needed (links limited to a team or to invited people cannot be read at all)."
            )
        return FolderNotAccessible(message, reason="shared_link_access_denied", status=409)
    if first in ("unsupported_link_type", "unsupported_parameter_field"):
        return FolderNotAccessible(
            "Dropbox does not let apps read this kind of link: ask the folder's owner for an ordinary shared "
            "link (Share > Copy link, 'Anyone with the link').",
            reason=first,
            status=409,
        )
    if first == "reset":
        return SourceError(
            "Dropbox kept invalidating the folder's listing while it was read; try again later.",
            reason="reset",
            status=409,
            transient=True,
        )
    if first == "shared_link_is_directory":
        return error
    return FolderNotAccessible(f"Dropbox cannot open this shared folder ({reason}).", reason=reason, status=409)


class DropboxSource:
    """Shared Dropbox folders, read with an app key and secret (HTTP Basic app authentication).

    The session is the caller's. `client_options` go to DropboxClient (retries, backoff, timeouts,
    `page_limit`).
    """

    name = SOURCE_NAME

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        app_key: str | None,
        app_secret: str | None,
        api_url: str = DROPBOX_API_URL,
        content_url: str = DROPBOX_CONTENT_URL,
        pacer: Pacer | None = None,
        compute_content_hash: bool = False,
        **client_options: Any,
    ) -> None:
        self.client = DropboxClient(
            session,
            app_key=app_key,
            app_secret=app_secret,
            api_url=api_url,
            content_url=content_url,
            pacer=pacer,
            **client_options,
        )
        self.compute_content_hash = compute_content_hash

    def __repr__(self) -> str:
        return f"DropboxSource(api_url={self.client.api_url!r})"

    def parse_link(self, url: str, *, password: str | None = None) -> FolderLink:
        return parse_dropbox_link(url, password=password)

    @staticmethod
    def _shared_link(link: FolderLink) -> str:
        """The link the API is called with, normalised again: a FolderLink may come back from storage."""
        if link.source != SOURCE_NAME:
            raise ValueError(f"not a Dropbox folder link (source {link.source!r})")
        return parse_dropbox_link(link.key or link.url).url

    async def folder_name(self, link: FolderLink) -> str:
        url = self._shared_link(link)
        try:
            metadata = await self.client.get_shared_link_metadata(url, link.password)
        except SourceError as error:
            raise _folder_error(error, link) from None
        if metadata.get(".tag") != "folder":
            raise FolderNotAccessible(
                "The link points to a single file, not a folder: paste the link of the folder holding the images.",
                reason="not_a_folder",
                status=200,
            )
        return str(metadata.get("name") or "")

    async def walk(self, link: FolderLink, *, recursive: bool) -> AsyncIterator[list[Entry | Skipped]]:
        """Yield, per listed page, the images found and the files skipped (empty batches are not yielded).

        Folders are listed breadth first, each once; a subfolder deleted while the walk runs is passed
        over; each file is yielded once even when a listing has to start again.
        """
        url = self._shared_link(link)
        seen_ids: set[str] = set()
        pending: deque[tuple[str, str]] = deque([("", "")])  # (API path, folder_path)
        while pending:
            api_path, folder_path = pending.popleft()
            restarts = 0
            # Subfolders already queued from this folder, kept across restarts of its listing.
            queued: set[str] | None = set() if recursive else None
            while True:
                try:
                    async for batch in self._list_one_folder(
                        link, url, (api_path, folder_path), seen_ids, pending, queued
                    ):
                        yield batch
                    break
                except SourceError as error:
                    if error.status == 409 and error.reason == "reset" and restarts < MAX_LISTING_RESTARTS:
                        restarts += 1
                        log.info("Dropbox invalidated the listing cursor of %s; listing it again", api_path or "/")
                        continue
                    if api_path and error.status == 409 and (error.reason or "").startswith(_GONE_FOLDER_REASONS):
                        log.warning(
                            "Dropbox folder %s disappeared during the walk; passing it over",
                            api_path,
                            extra={"target": api_path},
                        )
                        break
                    raise _folder_error(error, link) from None

    async def _list_one_folder(
        self,
        link: FolderLink,
        url: str,
        folder: tuple[str, str],
        seen_ids: set[str],
        pending: deque[tuple[str, str]],
        queued: set[str] | None,
    ) -> AsyncIterator[list[Entry | Skipped]]:
        """One folder's listing pages; its subfolders go to `pending` unless `queued` is None (not recursive)."""
        api_path, folder_path = folder
        page = await self.client.list_folder(url, link.password, api_path)
        seen_cursors: set[str] = set()
        while True:
            batch: list[Entry | Skipped] = []
            for item in page.get("entries") or []:
                if not isinstance(item, Mapping):
                    continue
                tag, name = item.get(".tag"), str(item.get("name") or "")
                if tag == "folder" and queued is not None and name and name.lower() not in queued:
                    # Dropbox paths are case-insensitive: one listing per folder, whatever the case.
                    queued.add(name.lower())
                    pending.append((api_child_path(api_path, name), folder_child_path(folder_path, name)))
                elif tag == "file":
                    entry = to_entry(item, folder_path, api_path)
                    if entry is not None and entry.source_id not in seen_ids:
                        seen_ids.add(entry.source_id)
                        batch.append(entry)
            if batch:
                yield batch
            cursor = page.get("cursor")
            if page.get("has_more") is not True or not isinstance(cursor, str) or cursor in seen_cursors:
                return
            seen_cursors.add(cursor)
            page = await self.client.list_folder_continue(cursor, api_path)

    def open(
        self,
        link: FolderLink,
        entry_id: str,
        *,
        locator: str | None,
        expected_size_bytes: int | None,
        chunk_size_bytes: int,
    ) -> DropboxDownload:
        """Stream one file; `locator` is its path inside the link (Entry.locator), which Dropbox needs:
        files of a shared link cannot be fetched by id."""
        return DropboxDownload(
            self.client,
            url=self._shared_link(link),
            path=locator or "",
            password=link.password,
            file_id=entry_id,
            chunk_size_bytes=chunk_size_bytes,
            expected_size_bytes=expected_size_bytes,
            compute_content_hash=self.compute_content_hash,
        )
