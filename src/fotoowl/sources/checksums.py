"""Checksums by the kind a source names them, so a copy is verified against what its source listed."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterable, AsyncIterator, Callable
from typing import Protocol

from fotoowl.sources.dropbox.content_hash import DropboxContentHasher


class Hasher(Protocol):
    def update(self, data: bytes, /) -> None: ...

    def hexdigest(self) -> str: ...


_HASHERS: dict[str, Callable[[], Hasher]] = {
    "md5": hashlib.md5,
    "sha256": hashlib.sha256,
    "dropbox_content_hash": DropboxContentHasher,
}


def checksum_hasher(kind: str | None) -> Hasher | None:
    """A fresh hasher for `kind`, or None for a kind fotoowl cannot compute (the copy is then
    checked by its size only)."""
    factory = _HASHERS.get(kind or "")
    return factory() if factory is not None else None


async def hashing(chunks: AsyncIterable[bytes], hasher: Hasher) -> AsyncIterator[bytes]:
    """The same chunks, each fed to `hasher` on its way through."""
    async for chunk in chunks:
        hasher.update(chunk)
        yield chunk
