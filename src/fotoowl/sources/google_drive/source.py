"""Google Drive as a Source: the protocol of sources/base.py over the Drive v3 client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from fotoowl.sources.base import ByteStream, Entry, FolderLink, Skipped
from fotoowl.sources.google_drive.client import DriveClient
from fotoowl.sources.google_drive.links import FolderRef, parse_folder_link
from fotoowl.sources.google_drive.models import DriveFile, SkippedFile

NAME = "google_drive"


def parse_link(url: str) -> FolderLink:
    """A Drive folder link (or a bare folder id); InvalidFolderLink says why not."""
    ref = parse_folder_link(url)
    return FolderLink(source=NAME, folder_id=ref.folder_id, url=url.strip(), key=ref.resource_key)


def to_entry(item: DriveFile | SkippedFile) -> Entry | Skipped:
    if isinstance(item, SkippedFile):
        return Skipped(
            source_id=item.id,
            name=item.name,
            folder_path=item.folder_path,
            mime_type=item.mime_type,
            reason=item.reason,
            message=item.message,
        )
    return Entry(
        source_id=item.id,
        name=item.name,
        folder_path=item.folder_path,
        mime_type=item.mime_type,
        size_bytes=item.size_bytes,
        checksum=item.md5,
        checksum_kind="md5" if item.md5 else None,
        created_at=item.created_time,
        modified_at=item.modified_time,
        locator=item.resource_key,
        width=item.width,
        height=item.height,
        taken_time=item.taken_time,
        camera_make=item.camera_make,
        camera_model=item.camera_model,
    )


class DriveSource:
    """Reads public Drive folders through the v3 API with an API key."""

    name = NAME

    def __init__(self, client: DriveClient) -> None:
        self.client = client

    def parse_link(self, url: str) -> FolderLink:
        return parse_link(url)

    async def folder_name(self, link: FolderLink) -> str:
        folder = await self.client.get_folder(FolderRef(link.folder_id, link.key))
        return str(folder.get("name") or "")

    async def walk(self, link: FolderLink, *, recursive: bool) -> AsyncIterator[Sequence[Entry | Skipped]]:
        async for batch in self.client.walk(FolderRef(link.folder_id, link.key), recursive=recursive):
            yield [to_entry(item) for item in batch]

    def open(
        self,
        link: FolderLink,
        entry_id: str,
        *,
        locator: str | None,
        expected_size_bytes: int | None,
        chunk_size_bytes: int,
    ) -> ByteStream:
        # The storage layer hashes the bytes itself; MD5 here would cost event-loop time twice.
        return self.client.download(
            entry_id,
            resource_key=locator,
            chunk_size_bytes=chunk_size_bytes,
            expected_size_bytes=expected_size_bytes,
            compute_md5=False,
        )
