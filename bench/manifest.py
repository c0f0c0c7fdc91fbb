"""The JSON manifest the emulator process writes: everything the contenders need about the folder."""

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

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

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
