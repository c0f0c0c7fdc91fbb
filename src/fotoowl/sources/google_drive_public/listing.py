"""Listing a public folder through its embedded view (drive.google.com/embeddedfolderview): one page per
folder, breadth first, each page read into entries and skips.

The page says nothing of sizes, checksums or times, so entries carry none; an entry's type comes from
its icon URL, else from its name's extension, else it is left to the downloaded Content-Type.
"""

from __future__ import annotations

import asyncio
import mimetypes
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from fotoowl.sources.base import Entry, Skipped, SourceError
from fotoowl.sources.google_drive.models import IMAGE_EXTENSIONS_FOR_GENERIC_TYPES, _join_path
from fotoowl.sources.google_drive_public.errors import (
    CAPTCHA,
    MISSING_MESSAGE,
    NOT_FOUND,
    NOT_SHARED,
    NOT_SHARED_MESSAGE,
    SIGN_IN,
    UNEXPECTED_HTML,
    PublicFolderNotAccessible,
    http_error,
)
from fotoowl.sources.google_drive_public.pages import (
    FOLDER_MIME_TYPE,
    GOOGLE_APPS_PREFIX,
    FolderPage,
    ListedItem,
    read_folder_answer,
)
from fotoowl.sources.google_drive_public.transport import PublicFetcher
from fotoowl.sources.walking import FOLDERS_AT_ONCE, walk_tree

__all__ = ["read_folder", "to_entry", "walk_folders"]

# A folder of thousands of entries is a few MiB of HTML; past this it is not a folder page of Google's.
MAX_PAGE_BYTES = 64 << 20
GENERIC_TYPE = "application/octet-stream"
_GENERIC_TYPES = frozenset({"", GENERIC_TYPE, "binary/octet-stream", "application/unknown", "application/x-unknown"})
# The standard library's own table (not the machine's mime.types), so a name means the same everywhere;
# the image formats it lacks are added.
_TYPES = mimetypes.MimeTypes()
for _suffix, _image_type in (
    (".webp", "image/webp"),
    (".jxl", "image/jxl"),
    (".heif", "image/heif"),
    (".heic", "image/heic"),
    (".avif", "image/avif"),
):
    _TYPES.add_type(_image_type, _suffix)


async def read_folder(fetcher: PublicFetcher, folder_id: str, resource_key: str | None) -> FolderPage:
    """One folder's page, retried while Google answers rate limits, captchas or pages it should not."""
    url = fetcher.folder_page(folder_id, resource_key)

    async def once() -> FolderPage:
        try:
            response = await fetcher.get(url, kind="public_page")
        except SourceError as error:
            if error.reason == SIGN_IN:
                raise PublicFolderNotAccessible(NOT_SHARED_MESSAGE, reason=NOT_SHARED, status=error.status) from None
            raise
        try:
            status, headers = response.status, response.headers
            body = await fetcher.read_body(response, MAX_PAGE_BYTES)
            charset = response.charset or "utf-8"
        finally:
            response.release()
        if status == 404:
            raise PublicFolderNotAccessible(MISSING_MESSAGE, reason=NOT_FOUND, status=status)
        if body is None:
            raise SourceError(
                "Google Drive answered a folder page too large to be one.",
                reason=UNEXPECTED_HTML,
                status=status,
                transient=True,
            )
        # Parsing a page of thousands of entries takes a while: off the event loop, which streams bytes.
        answer = await asyncio.to_thread(read_folder_answer, body.decode(charset, "replace"))
        if answer == "captcha":
            raise SourceError(
                "Google Drive answered with a captcha: this address sent it too many requests.",
                reason=CAPTCHA,
                status=status,
                transient=True,
            )
        if answer == "sign_in" or status in (401, 403):
            raise PublicFolderNotAccessible(NOT_SHARED_MESSAGE, reason=NOT_SHARED, status=status)
        if status != 200:
            raise http_error(status, headers, "a folder page")
        if answer is None:
            raise SourceError(
                "Google Drive answered something other than a folder page.",
                reason=UNEXPECTED_HTML,
                status=status,
                transient=True,
            )
        return answer

    return await fetcher.retrying("folder page", folder_id, once)


def _extension(name: str) -> str:
    return name.rsplit(".", 1)[-1].lower() if "." in name.strip(".") else ""


def to_entry(item: ListedItem, folder_path: str) -> Entry | Skipped:
    """A file or native entry of a page as the pipeline sees it (folders are walked, not listed)."""
    icon = item.icon_type or ""
    if item.kind == "native" or icon.startswith(GOOGLE_APPS_PREFIX):
        mime_type = icon if icon.startswith(GOOGLE_APPS_PREFIX) else (item.native_type or GOOGLE_APPS_PREFIX)
        kind = mime_type.removeprefix(GOOGLE_APPS_PREFIX) or "file"
        return Skipped(
            item.id,
            item.title,
            folder_path,
            mime_type,
            "google_native",
            f"A Google {kind}: Docs, Sheets, Slides and other Google-native files have no image to copy.",
        )

    def entry(mime_type: str) -> Entry:
        return Entry(
            source_id=item.id,
            name=item.title,
            folder_path=folder_path,
            mime_type=mime_type,
            size_bytes=None,
            checksum=None,
            checksum_kind=None,
            locator=item.resource_key,
        )

    def not_image(mime_type: str) -> Skipped:
        return Skipped(item.id, item.title, folder_path, mime_type, "not_image", f"Not an image (type {mime_type}).")

    if icon.startswith("image/"):
        return entry(icon)
    if icon not in _GENERIC_TYPES:
        return not_image(icon)
    # Drive recognises most images itself; RAW and newer formats often come as octet-stream, so for a
    # generic type (or none) the extension decides.
    guessed = _TYPES.guess_type(item.title, strict=False)[0] or ""
    if guessed.startswith("image/"):
        return entry(guessed)
    if _extension(item.title) in IMAGE_EXTENSIONS_FOR_GENERIC_TYPES:
        return entry(icon or GENERIC_TYPE)
    if icon or guessed not in _GENERIC_TYPES:
        return not_image(icon or guessed)
    # Neither the page nor the name tells: the Content-Type of the download will.
    return entry(GENERIC_TYPE)


@dataclass(frozen=True, slots=True)
class _PendingFolder:
    id: str
    resource_key: str | None
    name: str
    path: str  # where its entries go ("" for the root)
    parent_path: str


async def walk_folders(
    fetcher: PublicFetcher,
    root_id: str,
    root_key: str | None,
    *,
    recursive: bool,
    folders_at_once: int = FOLDERS_AT_ONCE,
) -> AsyncIterator[list[Entry | Skipped]]:
    """Per folder, its entries and skips (empty folders yield nothing), up to `folders_at_once`
    folders read at a time in the order they were found.

    Each folder is read once even when pages link to it again (a loop); each file is listed once even
    when it sits in several folders. A subfolder that asks to sign in is skipped with the reason; the
    root raises PublicFolderNotAccessible.
    """
    visited = {root_id}
    seen_files: set[str] = set()

    async def list_folder(
        folder: _PendingFolder, found: Callable[[_PendingFolder], None]
    ) -> AsyncIterator[list[Entry | Skipped]]:
        try:
            page = await read_folder(fetcher, folder.id, folder.resource_key)
        except PublicFolderNotAccessible as error:
            if folder.id == root_id:
                raise
            yield [
                Skipped(
                    folder.id,
                    folder.name,
                    folder.parent_path,
                    FOLDER_MIME_TYPE,
                    "folder_not_accessible",
                    f"This subfolder cannot be read: {error}",
                )
            ]
            return
        batch: list[Entry | Skipped] = []
        for item in page.items:
            if item.kind == "folder":
                if recursive and item.id not in visited:
                    visited.add(item.id)
                    found(
                        _PendingFolder(
                            item.id, item.resource_key, item.title, _join_path(folder.path, item.title), folder.path
                        )
                    )
                continue
            if item.id in seen_files:
                continue
            seen_files.add(item.id)
            batch.append(to_entry(item, folder.path))
        if batch:
            yield batch

    root = _PendingFolder(root_id, root_key, "", "", "")
    async for batch in walk_tree(root, list_folder, folders_at_once=folders_at_once):
        yield batch
