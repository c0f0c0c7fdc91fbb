"""The JSON manifest an emulator process writes: everything the contenders need about the folder."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class ManifestFile:
    id: str
    name: str
    folder_path: str  # "" in the root folder
    size: int
    md5: str
    mime_type: str

    @property
    def rel_path(self) -> str:
        return f"{self.folder_path}/{self.name}" if self.folder_path else self.name


@dataclass(frozen=True, slots=True)
class Manifest:
    api_url: str
    api_key: str
    root_id: str
    folder_link: str
    latency_s: float
    bandwidth_bytes_per_s: float | None
    files: list[ManifestFile]
    source: str = "google_drive"  # or "dropbox": which emulator serves it, which FOTOOWL_* settings reach it
    api_secret: str = ""  # Dropbox: the app secret (api_key is the app key)

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def source_env(self) -> dict[str, str]:
        """The FOTOOWL_* settings that point a fotoowl process at this folder's emulator."""
        if self.source == "dropbox":
            # One emulator address answers both Dropbox hosts (the RPC one and the content one).
            return {
                "FOTOOWL_DROPBOX_APP_KEY": self.api_key,
                "FOTOOWL_DROPBOX_APP_SECRET": self.api_secret,
                "FOTOOWL_DROPBOX_API_URL": self.api_url,
                "FOTOOWL_DROPBOX_CONTENT_URL": self.api_url,
            }
        return {"FOTOOWL_GOOGLE_API_KEY": self.api_key, "FOTOOWL_DRIVE_API_URL": self.api_url}

    def write(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self)))
        tmp.replace(path)  # readers never see a half-written manifest

    @classmethod
    def read(cls, path: Path) -> Manifest:
        data = json.loads(path.read_text())
        data["files"] = [ManifestFile(**f) for f in data["files"]]
        return cls(**data)

    def sample(self, count: int) -> list[ManifestFile]:
        """A deterministic sample spread over the whole folder (every k-th file), so it has the same mix."""
        if count >= len(self.files):
            return list(self.files)
        step = len(self.files) / count
        return [self.files[int(i * step)] for i in range(count)]
