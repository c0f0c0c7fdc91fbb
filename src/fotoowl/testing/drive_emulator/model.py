"""The tree: the items of an in-memory Drive and the API that builds and mutates it (DriveTree,
which DriveEmulator extends with its HTTP face), and the files resources it shows."""

from __future__ import annotations

import asyncio
import random
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from fotoowl.testing.drive_emulator.query import rfc3339
from fotoowl.testing.images import FORMAT_MIME_TYPES, Content, render_image

FOLDER_MIME_TYPE = "application/vnd.google-apps.folder"
SHORTCUT_MIME_TYPE = "application/vnd.google-apps.shortcut"
DOCUMENT_MIME_TYPE = "application/vnd.google-apps.document"
SPREADSHEET_MIME_TYPE = "application/vnd.google-apps.spreadsheet"
GOOGLE_APPS_PREFIX = "application/vnd.google-apps."

_ID_ALPHABET = string.ascii_letters + string.digits + "-_"
_EPOCH = datetime(2024, 1, 1, 9, 0, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class ImageMeta:
    width: int
    height: int
    taken_time: str | None = None
    camera_make: str | None = None
    camera_model: str | None = None


@dataclass(slots=True)
class Item:
    id: str
    name: str
    mime_type: str
    parent_id: str | None
    created_time: datetime
    modified_time: datetime
    resource_key: str | None = None
    shared: bool = True
    trashed: bool = False
    content: Content | None = None
    md5_override: str | None = None
    image: ImageMeta | None = None
    shortcut_target_id: str | None = None
    shortcut_target_mime_type: str | None = None
    shortcut_target_resource_key: str | None = None

    @property
    def is_blob(self) -> bool:
        return self.content is not None


class DriveTree:
    """The tree of an in-memory Drive: `items` by id, built and mutated through the methods below.

    DriveEmulator (fotoowl.testing.drive_emulator.app) adds the HTTP face, counters and faults.
    """

    def __init__(self, *, seed: int = 0) -> None:
        self.seed = seed
        self.items: dict[str, Item] = {}
        self._children: dict[str, list[str]] = {}
        self._rng = random.Random(seed)
        self._ticks = 0

    # -- building the tree ---------------------------------------------------------------------------

    def new_id(self) -> str:
        return "1" + "".join(self._rng.choice(_ID_ALPHABET) for _ in range(32))

    def _resource_key(self, resource_key: str | bool | None) -> str | None:
        if resource_key is True:
            return "0-" + "".join(self._rng.choice(_ID_ALPHABET) for _ in range(22))
        return resource_key or None

    def _next_time(self) -> datetime:
        self._ticks += 1
        return _EPOCH + timedelta(minutes=self._ticks)

    def _add(self, item: Item) -> str:
        if item.parent_id is not None and item.parent_id not in self.items:
            raise KeyError(f"unknown parent {item.parent_id}")
        self.items[item.id] = item
        if item.parent_id is not None:
            self._children.setdefault(item.parent_id, []).append(item.id)
        return item.id

    def _new_item(
        self,
        parent_id: str | None,
        name: str,
        mime_type: str,
        *,
        resource_key: str | bool | None,
        created: datetime | None,
        modified: datetime | None,
        shared: bool = True,
    ) -> Item:
        created_time = created or self._next_time()
        return Item(
            id=self.new_id(),
            name=name,
            mime_type=mime_type,
            parent_id=parent_id,
            created_time=created_time,
            modified_time=modified or created_time,
            resource_key=self._resource_key(resource_key),
            shared=shared,
        )

    def add_folder(
        self,
        parent_id: str | None,
        name: str,
        *,
        resource_key: str | bool | None = None,
        shared: bool = True,
        created: datetime | None = None,
        modified: datetime | None = None,
    ) -> str:
        """A folder; `shared=False` makes it invisible to API-key callers (404, empty listings)."""
        item = self._new_item(
            parent_id,
            name,
            FOLDER_MIME_TYPE,
            resource_key=resource_key,
            created=created,
            modified=modified,
            shared=shared,
        )
        return self._add(item)

    def add_image(
        self,
        parent_id: str | None,
        name: str,
        *,
        fmt: str = "jpeg",
        width: int | None = None,
        height: int | None = None,
        size_bytes: int | None = None,
        mime_type: str | None = None,
        md5_override: str | None = None,
        created: datetime | None = None,
        modified: datetime | None = None,
        taken_time: str | None = None,
        camera_make: str | None = None,
        camera_model: str | None = None,
        resource_key: str | bool | None = None,
        image_seed: int | None = None,
    ) -> str:
        """A generated image; `size_bytes` pads it (never shrinks it) to at least that size."""
        width = width or self._rng.randint(64, 800)
        height = height or self._rng.randint(64, 800)
        image_seed = self._rng.getrandbits(32) if image_seed is None else image_seed
        item = self._new_item(
            parent_id,
            name,
            mime_type or FORMAT_MIME_TYPES[fmt],
            resource_key=resource_key,
            created=created,
            modified=modified,
        )
        item.content = _image_content(fmt, width, height, image_seed, size_bytes, taken_time, camera_make, camera_model)
        item.md5_override = md5_override
        item.image = ImageMeta(width, height, taken_time, camera_make, camera_model)
        return self._add(item)

    def add_file(
        self,
        parent_id: str | None,
        name: str,
        mime_type: str,
        content: bytes | Content = b"",
        *,
        resource_key: str | bool | None = None,
        md5_override: str | None = None,
        created: datetime | None = None,
        modified: datetime | None = None,
    ) -> str:
        """A file with exactly these bytes (or a Content), without image metadata."""
        item = self._new_item(parent_id, name, mime_type, resource_key=resource_key, created=created, modified=modified)
        item.content = content if isinstance(content, Content) else Content.from_bytes(content)
        item.md5_override = md5_override
        return self._add(item)

    def add_native(self, parent_id: str | None, name: str, mime_type: str = DOCUMENT_MIME_TYPE) -> str:
        """A Google Docs/Sheets/... file: listed, without size or checksum, not downloadable."""
        if not mime_type.startswith(GOOGLE_APPS_PREFIX):
            raise ValueError("native files have application/vnd.google-apps.* types")
        return self._add(self._new_item(parent_id, name, mime_type, resource_key=None, created=None, modified=None))

    def add_shortcut(
        self,
        parent_id: str | None,
        name: str,
        target_id: str,
        *,
        target_mime_type: str | None = None,
        target_resource_key: str | None = None,
        resource_key: str | bool | None = None,
    ) -> str:
        """A shortcut; the target may be missing (dangling). Type and key default to the target's."""
        target = self.items.get(target_id)
        item = self._new_item(
            parent_id, name, SHORTCUT_MIME_TYPE, resource_key=resource_key, created=None, modified=None
        )
        item.shortcut_target_id = target_id
        item.shortcut_target_mime_type = target_mime_type or (target.mime_type if target else "image/jpeg")
        item.shortcut_target_resource_key = target_resource_key or (target.resource_key if target else None)
        return self._add(item)

    def trash(self, item_id: str) -> None:
        self.items[item_id].trashed = True

    def remove(self, item_id: str) -> None:
        """Delete for good: later requests for it get 404 (shortcuts to it dangle)."""
        item = self.items.pop(item_id)
        if item.parent_id is not None:
            self._children[item.parent_id].remove(item_id)

    def set_shared(self, item_id: str, shared: bool) -> None:
        self.items[item_id].shared = shared

    def set_md5_override(self, item_id: str, md5_hex: str | None) -> None:
        self.items[item_id].md5_override = md5_hex

    def replace_content(
        self,
        file_id: str,
        content: bytes | Content | None = None,
        *,
        image_seed: int | None = None,
        size_bytes: int | None = None,
        modified: datetime | None = None,
    ) -> None:
        """New bytes for a file (a new image for generated ones): new size, MD5 and modifiedTime."""
        item = self.items[file_id]
        if content is not None:
            item.content = content if isinstance(content, Content) else Content.from_bytes(content)
        elif item.image is not None:
            fmt = next((f for f, mime in FORMAT_MIME_TYPES.items() if mime == item.mime_type), "jpeg")
            seed = self._rng.getrandbits(32) if image_seed is None else image_seed
            meta = item.image
            item.content = _image_content(
                fmt, meta.width, meta.height, seed, size_bytes, meta.taken_time, meta.camera_make, meta.camera_model
            )
        else:
            raise ValueError("pass content for a file that is not a generated image")
        item.md5_override = None
        item.modified_time = modified or max(item.modified_time, self._next_time())

    # -- views ---------------------------------------------------------------------------------------

    def md5_of(self, file_id: str) -> str:
        content = self.items[file_id].content
        assert content is not None, "not a file with content"
        return content.md5_hex

    def content_of(self, file_id: str) -> bytes:
        content = self.items[file_id].content
        assert content is not None, "not a file with content"
        return content.read_all()

    def _visible(self, item: Item | None, resource_keys: Mapping[str, str]) -> bool:
        if item is None or not item.shared:
            return False
        return item.resource_key is None or resource_keys.get(item.id) == item.resource_key

    def resource(self, item: Item) -> dict[str, Any]:
        """The full files resource of an item (content must be computed for blobs)."""
        resource: dict[str, Any] = {
            "kind": "drive#file",
            "id": item.id,
            "name": item.name,
            "mimeType": item.mime_type,
            "parents": [item.parent_id] if item.parent_id else [],
            "trashed": item.trashed,
            "explicitlyTrashed": item.trashed,
            "spaces": ["drive"],
            "createdTime": rfc3339(item.created_time),
            "modifiedTime": rfc3339(item.modified_time),
            "shared": item.shared,
            "ownedByMe": False,
        }
        if item.resource_key:
            resource["resourceKey"] = item.resource_key
        if item.content is not None:
            size_bytes = item.content.size_bytes
            resource.update(
                size=str(size_bytes),
                quotaBytesUsed=str(size_bytes),
                md5Checksum=item.md5_override or item.content.md5_hex,
                originalFilename=item.name,
            )
            if "." in item.name.strip("."):
                extension = item.name.rsplit(".", 1)[1]
                resource.update(fileExtension=extension, fullFileExtension=extension)
        if item.image is not None:
            meta = {
                "width": item.image.width,
                "height": item.image.height,
                "time": item.image.taken_time,
                "cameraMake": item.image.camera_make,
                "cameraModel": item.image.camera_model,
            }
            resource["imageMediaMetadata"] = {k: v for k, v in meta.items() if v is not None}
        if item.shortcut_target_id is not None:
            details = {"targetId": item.shortcut_target_id, "targetMimeType": item.shortcut_target_mime_type}
            if item.shortcut_target_resource_key:
                details["targetResourceKey"] = item.shortcut_target_resource_key
            resource["shortcutDetails"] = details
        return resource

    async def _resources(self, items: Sequence[Item]) -> list[dict[str, Any]]:
        pending = [item.content for item in items if item.content is not None and not item.content.is_computed]
        if pending:
            # Rendering images and hashing big files takes long: keep the event loop free.
            await asyncio.to_thread(lambda: [(content.size_bytes, content.md5_hex) for content in pending])
        return [self.resource(item) for item in items]


def _image_content(
    fmt: str,
    width: int,
    height: int,
    image_seed: int,
    size_bytes: int | None,
    taken_time: str | None,
    camera_make: str | None,
    camera_model: str | None,
) -> Content:
    head = partial(
        render_image,
        fmt,
        width,
        height,
        image_seed,
        taken_time=taken_time,
        camera_make=camera_make,
        camera_model=camera_model,
    )
    return Content(head, min_size_bytes=size_bytes or 0, pad_seed=image_seed)
