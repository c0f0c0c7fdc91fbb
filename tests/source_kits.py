"""One face for every source's emulator, so a pipeline test runs against each source unchanged:
build a folder tree, slow or break a file, and read back what the source holds and served."""

from __future__ import annotations

import hashlib
import mimetypes
from dataclasses import dataclass, field
from typing import Any, Protocol

from fotoowl.config import AppSettings, Secret
from fotoowl.testing.drive_emulator import DriveEmulator, Fault
from fotoowl.testing.dropbox_emulator import DropboxEmulator, DropboxFault

TEST_API_KEY = "test-key"
DROPBOX_APP_KEY = "fotoowl-test-app"
DROPBOX_APP_SECRET = "fotoowl-test-secret"


class SourceKit(Protocol):
    source: str

    def add_folder(self, parent: str | None, name: str) -> str: ...

    def add_image(self, parent: str, name: str, *, size_bytes: int | None = None, fmt: str = "jpeg") -> str: ...

    def add_file(self, parent: str, name: str, data: bytes) -> str:
        """A file with exactly these bytes (its type from its name: notes.txt is not an image)."""
        ...

    def replace_content(self, file_id: str, data: bytes) -> None:
        """New bytes for the file: its checksum, size and modification time change as the source shows them."""
        ...

    def slow(self, file_id: str, bandwidth_bytes_per_s: float) -> None: ...

    def remove(self, file_id: str) -> None:
        """Delete the file from the folder for good."""

    def drop_once(self, file_id: str, *, after_bytes: int = 1000) -> None:
        """The next body of the file is cut (connection reset) after `after_bytes`."""
        ...

    def fail_transiently(self, file_id: str) -> None:
        """The next download request for the file is answered 503."""
        ...

    def fail_permanently(self, file_id: str) -> str:
        """The next download request for the file is refused for good; returns the error code fotoowl reports."""
        ...

    def corrupt_checksum(self, file_id: str) -> None:
        """The listing shows a checksum the file's bytes do not have."""
        ...

    def link(self, root: str) -> str: ...

    def md5_of(self, file_id: str) -> str: ...

    def bytes_served(self, file_id: str) -> int: ...

    def range_headers(self, file_id: str) -> list[str | None]:
        """The Range header (None: none) of each byte answer for the file, in order."""
        ...

    def set_latency(self, latency_s: float) -> None: ...

    def env(self) -> dict[str, str]: ...

    def settings(self, settings: AppSettings) -> AppSettings: ...


@dataclass
class DriveKit:
    emu: DriveEmulator
    api_url: str
    source: str = "google_drive"

    def add_folder(self, parent: str | None, name: str) -> str:
        return self.emu.add_folder(parent, name)

    def add_image(self, parent: str, name: str, *, size_bytes: int | None = None, fmt: str = "jpeg") -> str:
        return self.emu.add_image(parent, name, size_bytes=size_bytes, fmt=fmt)

    def add_file(self, parent: str, name: str, data: bytes) -> str:
        mime_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        return self.emu.add_file(parent, name, mime_type, content=data)

    def replace_content(self, file_id: str, data: bytes) -> None:
        self.emu.replace_content(file_id, data)

    def remove(self, file_id: str) -> None:
        self.emu.remove(file_id)

    def slow(self, file_id: str, bandwidth_bytes_per_s: float) -> None:
        self.emu.inject(file_id, Fault.slow(bandwidth_bytes_per_s), times=None)

    def drop_once(self, file_id: str, *, after_bytes: int = 1000) -> None:
        self.emu.inject(file_id, Fault.reset(after_bytes=after_bytes), times=1)

    def fail_transiently(self, file_id: str) -> None:
        self.emu.inject(file_id, Fault.http(503), times=1)

    def fail_permanently(self, file_id: str) -> str:
        self.emu.inject(file_id, Fault.download_quota(), times=1)
        return "downloadQuotaExceeded"

    def corrupt_checksum(self, file_id: str) -> None:
        self.emu.set_md5_override(file_id, "0" * 32)

    def link(self, root: str) -> str:
        return f"https://drive.google.com/drive/folders/{root}"

    def md5_of(self, file_id: str) -> str:
        return self.emu.md5_of(file_id)

    def bytes_served(self, file_id: str) -> int:
        return self.emu.bytes_served[file_id]

    def range_headers(self, file_id: str) -> list[str | None]:
        return [header for served, header in self.emu.range_headers if served == file_id]

    def set_latency(self, latency_s: float) -> None:
        self.emu.latency_s = latency_s

    def env(self) -> dict[str, str]:
        return {"FOTOOWL_GOOGLE_API_KEY": TEST_API_KEY, "FOTOOWL_DRIVE_API_URL": self.api_url}

    def settings(self, settings: AppSettings) -> AppSettings:
        return settings.replace(drive_api_url=self.api_url, google_api_key=Secret(TEST_API_KEY))


@dataclass
class DropboxKit:
    emu: DropboxEmulator
    url: str
    source: str = "dropbox"
    # The API path of each file in the link (what faults and counters are keyed by).
    paths: dict[str, str] = field(default_factory=dict)
    _folders: dict[str, str] = field(default_factory=dict)
    _links: dict[str, Any] = field(default_factory=dict)

    def add_folder(self, parent: str | None, name: str) -> str:
        folder = self.emu.add_folder(parent, name)
        self._folders[folder] = "" if parent is None else f"{self._folders[parent]}/{name}"
        return folder

    def add_image(self, parent: str, name: str, *, size_bytes: int | None = None, fmt: str = "jpeg") -> str:
        file_id = self.emu.add_image(parent, name, size_bytes=size_bytes, fmt=fmt)
        self.paths[file_id] = f"{self._folders[parent]}/{name}"
        return file_id

    def add_file(self, parent: str, name: str, data: bytes) -> str:
        file_id = self.emu.add_file(parent, name, data)
        self.paths[file_id] = f"{self._folders[parent]}/{name}"
        return file_id

    def replace_content(self, file_id: str, data: bytes) -> None:
        self.emu.replace_content(file_id, data)

    def remove(self, file_id: str) -> None:
        self.emu.remove(file_id)

    def slow(self, file_id: str, bandwidth_bytes_per_s: float) -> None:
        self.emu.inject(self.paths[file_id], DropboxFault.slow(bandwidth_bytes_per_s), times=None)

    def drop_once(self, file_id: str, *, after_bytes: int = 1000) -> None:
        self.emu.inject(self.paths[file_id], DropboxFault.reset(after_bytes=after_bytes), times=1)

    def fail_transiently(self, file_id: str) -> None:
        self.emu.inject(self.paths[file_id], DropboxFault.http(503), times=1)

    def fail_permanently(self, file_id: str) -> str:
        self.emu.inject(self.paths[file_id], DropboxFault.route_error("path", "restricted_content"), times=1)
        return "restricted_content"

    def corrupt_checksum(self, file_id: str) -> None:
        # The emulator computes a content hash only while it has none: set one the bytes do not have.
        self.emu.nodes[file_id].content_hash = "0" * 64

    def link(self, root: str) -> str:
        if root not in self._links:
            self._links[root] = self.emu.share(root)
        return str(self._links[root].url)

    def md5_of(self, file_id: str) -> str:
        return hashlib.md5(self.emu.content_of(file_id)).hexdigest()

    def bytes_served(self, file_id: str) -> int:
        return self.emu.bytes_served[self.paths[file_id]]

    def range_headers(self, file_id: str) -> list[str | None]:
        return [header for served, header in self.emu.range_headers if served == self.paths[file_id]]

    def set_latency(self, latency_s: float) -> None:
        self.emu.latency_s = latency_s

    def env(self) -> dict[str, str]:
        return {
            "FOTOOWL_DROPBOX_APP_KEY": DROPBOX_APP_KEY,
            "FOTOOWL_DROPBOX_APP_SECRET": DROPBOX_APP_SECRET,
            "FOTOOWL_DROPBOX_API_URL": self.url,
            "FOTOOWL_DROPBOX_CONTENT_URL": self.url,
        }

    def settings(self, settings: AppSettings) -> AppSettings:
        return settings.replace(
            dropbox_app_key=DROPBOX_APP_KEY,
            dropbox_app_secret=Secret(DROPBOX_APP_SECRET),
            dropbox_api_url=self.url,
            dropbox_content_url=self.url,
        )
