"""The tree of an emulated Dropbox: folders and files of one owner, and the shared links onto them.

DropboxTree builds and mutates it (add_folder, add_image, add_file, remove, share...) and shows items
the way the API does for a caller coming through a link: ids, names, sizes, revs, content hashes and
timestamps, never the owner's paths (path_lower / path_display are left out, as Dropbox leaves them).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import string
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, Literal
from urllib.parse import parse_qs, urlencode, urlsplit

from fotoowl.testing.images import Content, render_image

_ID_ALPHABET = string.ascii_letters + string.digits + "_-"
_LINK_ALPHABET = string.ascii_lowercase + string.digits
_KEY_ALPHABET = string.ascii_letters + string.digits + "_-"
_EPOCH = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)
_HOSTS = frozenset({"www.dropbox.com", "dropbox.com"})
_HASH_BLOCK_BYTES = 4 * 1024 * 1024


def block_content_hash(content: Content) -> str:
    """Dropbox's content hash, computed here on its own (not with the client's hasher, which it checks):
    SHA-256 over the concatenated SHA-256 digests of each 4 MiB block."""
    size_bytes = content.size_bytes
    digests = b"".join(
        hashlib.sha256(
            b"".join(content.iter_bytes(start, min(start + _HASH_BLOCK_BYTES, size_bytes), _HASH_BLOCK_BYTES))
        ).digest()
        for start in range(0, size_bytes, _HASH_BLOCK_BYTES)
    )
    return hashlib.sha256(digests).hexdigest()


def dropbox_time(value: datetime) -> str:
    """Dropbox's timestamp format: UTC, whole seconds, a Z."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(slots=True)
class DropboxNode:
    """A folder (content None) or a file of the owner's Dropbox."""

    id: str
    name: str
    parent_id: str | None
    is_folder: bool
    client_modified: datetime
    server_modified: datetime
    rev: str = ""
    content: Content | None = None
    is_downloadable: bool = True
    content_hash: str | None = None  # computed lazily: generated images are rendered on demand


@dataclass(slots=True)
class DropboxSharedLink:
    """A shared link onto a node. `form` "scl" is the current /scl/fo/ (files: /scl/fi/) shape with an
    rlkey; "sh" the older /sh/ (files: /s/) one."""

    node_id: str
    link_id: str
    key: str
    form: Literal["scl", "sh"]
    is_folder: bool
    rlkey: str | None = None
    password: str | None = None
    extra_query: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        """The link as Dropbox's Share > Copy link gives it (with dl=0)."""
        if self.form == "scl":
            kind = "fo" if self.is_folder else "fi"
            query = urlencode({"rlkey": self.rlkey or "", **self.extra_query, "dl": "0"})
            return f"https://www.dropbox.com/scl/{kind}/{self.link_id}/{self.key}?{query}"
        kind = "sh" if self.is_folder else "s"
        return f"https://www.dropbox.com/{kind}/{self.link_id}/{self.key}?dl=0"


class DropboxTree:
    """Nodes by id and links by link id; DropboxEmulator (app.py) adds the HTTP face."""

    def __init__(self, *, seed: int = 0) -> None:
        self.seed = seed
        self.nodes: dict[str, DropboxNode] = {}
        self.links: dict[str, DropboxSharedLink] = {}
        self._children: dict[str, list[str]] = {}
        self._rng = random.Random(seed)
        self._ticks = 0

    # -- building the tree ---------------------------------------------------------------------------

    def _random(self, alphabet: str, length: int) -> str:
        return "".join(self._rng.choice(alphabet) for _ in range(length))

    def _next_time(self) -> datetime:
        self._ticks += 1
        return _EPOCH + timedelta(minutes=self._ticks)

    def _new_rev(self) -> str:
        return f"{self._rng.getrandbits(60):015x}"

    def _add(self, parent_id: str | None, name: str, *, is_folder: bool, modified: datetime | None) -> DropboxNode:
        if parent_id is not None and not self.nodes[parent_id].is_folder:
            raise ValueError(f"{parent_id} is a file, not a folder")
        if "/" in name or not name.strip():
            raise ValueError(f"{name!r} cannot be a Dropbox name")
        if any(self.nodes[c].name.lower() == name.lower() for c in self._children.get(parent_id or "", [])):
            raise ValueError(f"{name!r} already exists there (Dropbox names are case-insensitive)")
        when = modified or self._next_time()
        node = DropboxNode(
            "id:" + self._random(_ID_ALPHABET, 22),
            name,
            parent_id,
            is_folder,
            when,
            when,
            rev="" if is_folder else self._new_rev(),
        )
        self.nodes[node.id] = node
        self._children.setdefault(parent_id or "", []).append(node.id)
        return node

    def add_folder(self, parent_id: str | None, name: str) -> str:
        """A folder; parent None puts it at the top of the owner's Dropbox."""
        return self._add(parent_id, name, is_folder=True, modified=None).id

    def add_file(
        self,
        parent_id: str | None,
        name: str,
        content: bytes | Content = b"",
        *,
        is_downloadable: bool = True,
        modified: datetime | None = None,
    ) -> str:
        """A file with exactly these bytes (or a Content)."""
        node = self._add(parent_id, name, is_folder=False, modified=modified)
        node.content = content if isinstance(content, Content) else Content.from_bytes(content)
        node.is_downloadable = is_downloadable
        return node.id

    def add_image(
        self,
        parent_id: str | None,
        name: str,
        *,
        fmt: str = "jpeg",
        width: int | None = None,
        height: int | None = None,
        size_bytes: int | None = None,
        image_seed: int | None = None,
        modified: datetime | None = None,
    ) -> str:
        """A generated JPEG/PNG/WebP (fotoowl.testing.images); `size_bytes` pads it to at least that size."""
        width = width or self._rng.randint(48, 320)
        height = height or self._rng.randint(48, 320)
        image_seed = self._rng.getrandbits(32) if image_seed is None else image_seed
        head = partial(render_image, fmt, width, height, image_seed)
        content = Content(head, min_size_bytes=size_bytes or 0, pad_seed=image_seed)
        return self.add_file(parent_id, name, content, modified=modified)

    def replace_content(self, node_id: str, content: bytes | Content) -> None:
        """New bytes for a file: a new rev, size, content hash and server_modified."""
        node = self.nodes[node_id]
        node.content = content if isinstance(content, Content) else Content.from_bytes(content)
        node.content_hash = None
        node.rev = self._new_rev()
        node.server_modified = max(node.server_modified, self._next_time())

    def remove(self, node_id: str) -> None:
        """Delete for good, with everything inside; links onto it stop working."""
        for child in list(self._children.get(node_id, [])):
            self.remove(child)
        node = self.nodes.pop(node_id)
        self._children.pop(node_id, None)
        self._children[node.parent_id or ""].remove(node_id)
        for link_id in [k for k, link in self.links.items() if link.node_id == node_id]:
            del self.links[link_id]

    def share(
        self, node_id: str, *, form: Literal["scl", "sh"] = "scl", password: str | None = None
    ) -> DropboxSharedLink:
        """A new shared link onto a folder or file ("Anyone with the link"; with a password if given)."""
        node = self.nodes[node_id]
        if form == "scl":
            link_id = self._random(_LINK_ALPHABET, 21)
            key = self._random(_KEY_ALPHABET, 23) if node.is_folder else node.name
            link = DropboxSharedLink(
                node_id,
                link_id,
                key,
                form,
                node.is_folder,
                rlkey=self._random(_LINK_ALPHABET, 25),
                password=password,
                extra_query={"st": self._random(_LINK_ALPHABET, 8)},
            )
        else:
            link_id = self._random(_LINK_ALPHABET, 15)
            key = self._random(_KEY_ALPHABET, 25) if node.is_folder else node.name
            link = DropboxSharedLink(node_id, link_id, key, form, node.is_folder, password=password)
        self.links[link_id] = link
        return link

    def revoke(self, link: DropboxSharedLink) -> None:
        self.links.pop(link.link_id, None)

    # -- views ---------------------------------------------------------------------------------------

    def content_of(self, node_id: str) -> bytes:
        content = self.nodes[node_id].content
        assert content is not None, "not a file"
        return content.read_all()

    def content_hash_of(self, node_id: str) -> str:
        node = self.nodes[node_id]
        if node.content_hash is None:
            assert node.content is not None, "not a file"
            node.content_hash = block_content_hash(node.content)
        return node.content_hash

    def children(self, folder_id: str) -> list[DropboxNode]:
        return [self.nodes[child] for child in self._children.get(folder_id, [])]

    def find_link(self, url: object) -> DropboxSharedLink | None:
        """The link a URL names, if it exists and carries the right key (and rlkey for /scl/ links)."""
        if not isinstance(url, str):
            return None
        try:
            parts = urlsplit(url)
        except ValueError:
            return None
        if (parts.hostname or "").lower() not in _HOSTS:
            return None
        segments = [s for s in parts.path.split("/") if s]
        if segments[:1] == ["scl"]:
            segments = segments[1:]
        if len(segments) != 3 or segments[0] not in ("fo", "fi", "sh", "s"):
            return None
        link = self.links.get(segments[1])
        if link is None or link.key != segments[2]:
            return None
        is_scl = segments[0] in ("fo", "fi")
        if is_scl != (link.form == "scl") or (segments[0] in ("fo", "sh")) != link.is_folder:
            return None
        if link.form == "scl" and (parse_qs(parts.query).get("rlkey") or [""])[0] != link.rlkey:
            return None
        return link

    def resolve(self, link: DropboxSharedLink, path: str) -> DropboxNode | None:
        """The node at `path` ("" or "/a/b", case-insensitive) inside the link's root."""
        node = self.nodes.get(link.node_id)
        for name in (segment for segment in path.split("/") if segment):
            if node is None or not node.is_folder:
                return None
            node = next((c for c in self.children(node.id) if c.name.lower() == name.lower()), None)
        return node

    def metadata(self, node: DropboxNode) -> dict[str, Any]:
        """The node as list_folder shows it through a link (content hash must be computed already)."""
        if node.is_folder:
            return {".tag": "folder", "name": node.name, "id": node.id}
        assert node.content is not None
        return {
            ".tag": "file",
            "name": node.name,
            "id": node.id,
            "client_modified": dropbox_time(node.client_modified),
            "server_modified": dropbox_time(node.server_modified),
            "rev": node.rev,
            "size": node.content.size_bytes,
            "is_downloadable": node.is_downloadable,
            "content_hash": node.content_hash,
        }

    def link_metadata(self, link: DropboxSharedLink, node: DropboxNode) -> dict[str, Any]:
        """SharedLinkMetadata, as get_shared_link_metadata (and get_shared_link_file's result header) show it."""
        visibility = "password" if link.password else "public"
        result: dict[str, Any] = {
            ".tag": "folder" if node.is_folder else "file",
            "url": link.url,
            "id": node.id,
            "name": node.name,
            "link_permissions": {
                "can_revoke": False,
                "resolved_visibility": {".tag": visibility},
                "revoke_failure_reason": {".tag": "owner_only"},
                "allow_download": True,
            },
        }
        if not node.is_folder:
            assert node.content is not None
            result.update(
                client_modified=dropbox_time(node.client_modified),
                server_modified=dropbox_time(node.server_modified),
                rev=node.rev,
                size=node.content.size_bytes,
            )
        return result

    async def prepare(self, nodes: list[DropboxNode]) -> None:
        """Compute sizes and content hashes off the event loop: rendering and hashing big files takes long."""
        pending = [n for n in nodes if not n.is_folder and n.content_hash is None]
        if pending:
            await asyncio.to_thread(lambda: [self.content_hash_of(n.id) for n in pending])
