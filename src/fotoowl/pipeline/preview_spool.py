"""Originals handed from their copy to their preview on this machine, so that making a preview does
not read the original back from storage.

While a file is copied, its bytes are also written to a file in the spool directory (tmpfs where the
machine has one); once storage holds the original, that file is committed under the original's
storage key. A preview lane on this machine (the worker's preview child, or its own lane) makes the
preview from it and deletes it. A lane on another machine, a file the spool had no room for, one a
restart lost: each is read back from storage as before. The spool is a cache: a failure of it never
fails a copy or a preview, it only costs the read it would have saved.

Reading an original back cost as much CPU again as storing it (storage serving the bytes, this
process receiving them), on the machine's cores the copies need.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import stat
import time
import uuid
from pathlib import Path

from fotoowl.config import AppSettings

log = logging.getLogger("fotoowl.pipeline.preview_spool")

# Larger originals get a placeholder, not a preview: reading them costs more than a preview is worth.
MAX_ORIGINAL_BYTES = 64 * 1024 * 1024
# Larger ones are read back from storage: a few of them would take the room of a thousand photos.
MAX_SPOOLED_BYTES = 16 * 1024 * 1024

# Written but not taken (made by a lane on another machine, or the preview was disabled meanwhile):
# deleted after this long.
MAX_AGE_S = 600.0
# The directory's size is scanned at most this often; writes in between are added to the last scan.
_RESCAN_EVERY_S = 1.0
_PART = ".part"


def open_spool(settings: AppSettings) -> PreviewSpool | None:
    """This process's spool, or None when previews are off or the spool is turned off."""
    if settings.thumbnail_px <= 0 or settings.preview_spool_bytes <= 0:
        return None
    root = Path(settings.preview_spool_dir) if settings.preview_spool_dir else _default_root(settings)
    where = settings.s3_endpoint_url + "/" + settings.s3_bucket if settings.storage == "s3" else str(settings.file_root)
    return PreviewSpool(
        root, limit_bytes=settings.preview_spool_bytes, max_file_bytes=MAX_SPOOLED_BYTES, namespace=where
    )


def _default_root(settings: AppSettings) -> Path:
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        return shm / f"fotoowl-preview-spool-{os.getuid()}"
    return settings.data_dir / "preview-spool"


class PreviewSpool:
    """Files in `root`, at most `limit_bytes` of them together, each at most `max_file_bytes`."""

    def __init__(self, root: Path, *, limit_bytes: int, max_file_bytes: int, namespace: str) -> None:
        self.root = root
        self.limit_bytes = limit_bytes
        self.max_file_bytes = max_file_bytes
        # Deployments sharing a machine (and its tmpfs) may use the same object keys in other buckets.
        self._namespace = namespace
        self._used_bytes = 0
        self._scanned_at_s = float("-inf")
        self._checked_root: bool | None = None

    def path(self, storage_key: str) -> Path:
        name = hashlib.sha256(f"{self._namespace}\n{storage_key}".encode()).hexdigest()
        return self.root / name

    def writer(self, storage_key: str, size_bytes: int) -> SpoolWriter | None:
        """A writer for this original's bytes, or None when the spool has no room for them (0: the
        size is not known; the writer gives up if they outgrow the room)."""
        room_bytes = min(self.max_file_bytes, self.limit_bytes - self.used_bytes())
        if size_bytes > room_bytes or room_bytes <= 0:
            return None
        if not self._private_root():
            return None
        final = self.path(storage_key)
        try:
            writer = SpoolWriter(final, final.with_name(f"{final.name}.{uuid.uuid4().hex}{_PART}"), room_bytes)
        except OSError as exc:
            log.debug("preview spool unavailable: %s", exc)
            return None
        self._used_bytes += size_bytes
        return writer

    def take(self, storage_key: str, size_bytes: int) -> Path | None:
        """The spooled original, if this machine has it whole."""
        if not self._private_root():
            return None
        path = self.path(storage_key)
        try:
            found_bytes = path.stat().st_size
        except OSError:
            return None
        # A known size that differs: not this original (nothing should cause it, but a stale file
        # must never become a wrong preview).
        return path if size_bytes <= 0 or found_bytes == size_bytes else None

    def _private_root(self) -> bool:
        """Whether the directory is ours alone: in a shared tmpfs another local user could have made
        it first, to read the originals or to plant files that become previews."""
        if self._checked_root is None:
            try:
                self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
                found = os.lstat(self.root)
                self._checked_root = (
                    stat.S_ISDIR(found.st_mode) and found.st_uid == os.getuid() and not found.st_mode & 0o077
                )
            except OSError as exc:
                log.debug("preview spool unavailable: %s", exc)
                self._checked_root = False
            if not self._checked_root:
                log.warning("the preview spool %s is not a private directory of this user: not used", self.root)
        return self._checked_root

    def discard(self, storage_key: str) -> None:
        with contextlib.suppress(OSError):
            self.path(storage_key).unlink()

    def used_bytes(self) -> int:
        now_s = time.monotonic()
        if now_s - self._scanned_at_s >= _RESCAN_EVERY_S:
            self._scanned_at_s = now_s
            self._used_bytes = sum(size for _, size, _ in self._entries())
        return self._used_bytes

    def sweep(self, max_age_s: float = MAX_AGE_S) -> int:
        """Delete files older than `max_age_s` (never taken, or left half-written by a killed process)."""
        cutoff_s = time.time() - max_age_s
        removed = 0
        for path, _, mtime_s in self._entries():
            if mtime_s < cutoff_s:
                with contextlib.suppress(OSError):
                    path.unlink()
                    removed += 1
        return removed

    def _entries(self) -> list[tuple[Path, int, float]]:
        found = []
        try:
            with os.scandir(self.root) as entries:
                for entry in entries:
                    with contextlib.suppress(OSError):
                        stat = entry.stat(follow_symlinks=False)
                        found.append((Path(entry.path), stat.st_size, stat.st_mtime))
        except OSError:
            return []
        return found


class SpoolWriter:
    """One original's bytes as they are copied: committed once storage holds them, else abandoned."""

    def __init__(self, final: Path, part: Path, limit_bytes: int) -> None:
        self._final = final
        self._part = part
        self._limit_bytes = limit_bytes
        self.written_bytes = 0
        self._fd: int | None = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)

    def write(self, chunk: bytes) -> None:
        if self._fd is None:
            return
        if self.written_bytes + len(chunk) > self._limit_bytes:
            self.abandon()
            return
        try:
            view = memoryview(chunk)
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError as exc:  # a full tmpfs, most likely: the preview reads storage instead
            log.debug("preview spool write failed: %s", exc)
            self.abandon()
            return
        self.written_bytes += len(chunk)

    def commit(self) -> None:
        if self._fd is None:
            return
        try:
            os.close(self._fd)
            self._fd = None
            # Atomic: a lane never sees half an original.
            os.replace(self._part, self._final)
        except OSError as exc:
            log.debug("preview spool commit failed: %s", exc)
            self.abandon()

    def abandon(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
        with contextlib.suppress(OSError):
            self._part.unlink()
