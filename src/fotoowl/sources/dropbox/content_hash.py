"""Dropbox's content hash: SHA-256 over the SHA-256 digests of the file's 4 MiB blocks.

Dropbox lists it for every file (`content_hash`), so a copy can be checked without trusting sizes
alone. The hasher is incremental: feed it chunks of any size as they stream in.
"""

from __future__ import annotations

import hashlib

__all__ = ["BLOCK_SIZE_BYTES", "DropboxContentHasher", "content_hash"]

BLOCK_SIZE_BYTES = 4 * 1024 * 1024


class DropboxContentHasher:
    """`update(chunk)` as bytes arrive, then `hexdigest()` (which may be called again after more updates)."""

    __slots__ = ("_block", "_block_bytes", "_overall", "bytes_hashed")

    def __init__(self) -> None:
        self._overall = hashlib.sha256()
        self._block = hashlib.sha256()
        self._block_bytes = 0
        self.bytes_hashed = 0

    def update(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        while view:
            take = min(BLOCK_SIZE_BYTES - self._block_bytes, len(view))
            self._block.update(view[:take])
            self._block_bytes += take
            self.bytes_hashed += take
            view = view[take:]
            if self._block_bytes == BLOCK_SIZE_BYTES:
                self._overall.update(self._block.digest())
                self._block = hashlib.sha256()
                self._block_bytes = 0

    def digest(self) -> bytes:
        # A copy, so that the pending partial block can still grow: hexdigest() mid-stream is harmless.
        overall = self._overall.copy()
        if self._block_bytes:
            overall.update(self._block.digest())
        return overall.digest()

    def hexdigest(self) -> str:
        return self.digest().hex()

    def __repr__(self) -> str:
        return f"DropboxContentHasher(bytes_hashed={self.bytes_hashed})"


def content_hash(data: bytes | bytearray | memoryview) -> str:
    """The content hash of bytes held in memory."""
    hasher = DropboxContentHasher()
    hasher.update(data)
    return hasher.hexdigest()
