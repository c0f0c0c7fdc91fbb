"""The tree the keyless pages show: folders, files and Google-native documents, who may see them, and
the builder API tests use (add_folder, add_image, add_file, add_native, set_shared, set_quota_exceeded)."""

from __future__ import annotations

import random
import string
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Literal

from fotoowl.testing.images import FORMAT_MIME_TYPES, Content, render_image

FOLDER_MIME_TYPE = "application/vnd.google-apps.folder"
# docs.google.com/<path kind>/d/<id>/edit and the Drive type of each kind of native file.
NATIVE_KINDS = {
    "document": "application/vnd.google-apps.document",
    "spreadsheets": "application/vnd.google-apps.spreadsheet",
    "presentation": "application/vnd.google-apps.presentation",
    "forms": "application/vnd.google-apps.form",
    "drawings": "application/vnd.google-apps.drawing",
}
_ID_ALPHABET = string.ascii_letters + string.digits + "-_"
_EPOCH = datetime(2024, 1, 1, 9, 0, tzinfo=UTC)


@dataclass(slots=True)
class PublicItem:
    id: str
    name: str
    kind: Literal["folder", "file", "native"]
    parent_id: str | None
    mime_type: str
    modified: datetime
    content: Content | None = None
    resource_key: str | None = None
    shared: bool = True
    quota_exceeded: bool = False
    # Where this file's download answers a redirect to (a foreign host tests the client's allow-list).
    redirect_to: str | None = None
    native_kind: str | None = None


class PublicTree:
    """A Drive as an anonymous visitor sees it. PublicDriveEmulator (app.py) adds the HTTP face."""

    def __init__(self, *, seed: int = 0) -> None:
        self.items: dict[str, PublicItem] = {}
        self._children: dict[str, list[str]] = {}
        self._rng = random.Random(seed)
        self._ticks = 0

    def new_id(self) -> str:
        return "1" + "".join(self._rng.choice(_ID_ALPHABET) for _ in range(32))

    def _resource_key(self, resource_key: str | bool | None) -> str | None:
        if resource_key is True:
            return "0-" + "".join(self._rng.choice(_ID_ALPHABET) for _ in range(22))
        return resource_key or None

    def _add(
        self,
        parent_id: str | None,
        name: str,
        kind: Literal["folder", "file", "native"],
        mime_type: str,
        *,
        resource_key: str | bool | None = None,
        shared: bool = True,
    ) -> PublicItem:
        if parent_id is not None and self.items.get(parent_id, None) is None:
            raise KeyError(f"unknown parent {parent_id}")
        if parent_id is not None and self.items[parent_id].kind != "folder":
            raise ValueError("only folders hold items")
        self._ticks += 1
        item = PublicItem(
            id=self.new_id(),
            name=name,
            kind=kind,
            parent_id=parent_id,
            mime_type=mime_type,
            modified=_EPOCH + timedelta(hours=self._ticks),
            resource_key=self._resource_key(resource_key),
            shared=shared,
        )
        self.items[item.id] = item
        if parent_id is not None:
            self._children.setdefault(parent_id, []).append(item.id)
        return item

    # -- building ------------------------------------------------------------------------------------

    def add_folder(
        self, parent_id: str | None, name: str, *, shared: bool = True, resource_key: str | bool | None = None
    ) -> str:
        """A folder; `shared=False` makes it (and all under it) ask anonymous visitors to sign in."""
        return self._add(parent_id, name, "folder", FOLDER_MIME_TYPE, resource_key=resource_key, shared=shared).id

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
        resource_key: str | bool | None = None,
        image_seed: int | None = None,
    ) -> str:
        """A generated image; `size_bytes` pads it (never shrinks it) to at least that size."""
        item = self._add(parent_id, name, "file", mime_type or FORMAT_MIME_TYPES[fmt], resource_key=resource_key)
        seed = self._rng.getrandbits(32) if image_seed is None else image_seed
        head = partial(
            render_image, fmt, width or self._rng.randint(32, 200), height or self._rng.randint(32, 200), seed
        )
        item.content = Content(head, min_size_bytes=size_bytes or 0, pad_seed=seed)
        return item.id

    def add_file(
        self,
        parent_id: str | None,
        name: str,
        mime_type: str,
        content: bytes | Content = b"",
        *,
        resource_key: str | bool | None = None,
    ) -> str:
        """A file with exactly these bytes (or a Content)."""
        item = self._add(parent_id, name, "file", mime_type, resource_key=resource_key)
        item.content = content if isinstance(content, Content) else Content.from_bytes(content)
        return item.id

    def add_native(self, parent_id: str | None, name: str, kind: str = "document") -> str:
        """A Google Docs/Sheets/... file (`kind` as in its docs.google.com/<kind>/d/ link): listed, never
        downloadable."""
        if kind not in NATIVE_KINDS:
            raise ValueError(f"native kinds are {sorted(NATIVE_KINDS)}")
        item = self._add(parent_id, name, "native", NATIVE_KINDS[kind])
        item.native_kind = kind
        return item.id

    def set_shared(self, item_id: str, shared: bool) -> None:
        self.items[item_id].shared = shared

    def set_quota_exceeded(self, file_id: str, exceeded: bool = True) -> None:
        """The file's download answers Google's "Too many users have viewed or downloaded" page."""
        self.items[file_id].quota_exceeded = exceeded

    def set_redirect(self, file_id: str, location: str | None) -> None:
        """The file's download answers a 302 to `location` (None: serve it again)."""
        self.items[file_id].redirect_to = location

    def remove(self, item_id: str) -> None:
        item = self.items.pop(item_id)
        if item.parent_id is not None:
            self._children[item.parent_id].remove(item_id)

    # -- views ---------------------------------------------------------------------------------------

    def content_of(self, file_id: str) -> bytes:
        content = self.items[file_id].content
        assert content is not None, "not a file"
        return content.read_all()

    def _shared_chain(self, item: PublicItem) -> bool:
        # A folder that is not shared hides everything under it, as "Restricted" does in Drive.
        current: PublicItem | None = item
        while current is not None:
            if not current.shared:
                return False
            current = self.items.get(current.parent_id) if current.parent_id is not None else None
        return True

    def accessible(self, item: PublicItem, resource_key: str | None) -> bool:
        """Whether an anonymous visitor may open it: shared, under shared folders, with its resource key."""
        return self._shared_chain(item) and (item.resource_key is None or resource_key == item.resource_key)

    def visible_children(self, folder_id: str) -> list[PublicItem]:
        """What the folder's page lists: the children an anonymous visitor may see."""
        children = (self.items[child_id] for child_id in self._children.get(folder_id, []))
        return [child for child in children if self._shared_chain(child)]
