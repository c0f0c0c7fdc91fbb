"""Shared pieces for the Drive client and emulator tests (fixtures live in the test modules)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from fotoowl.sources.google_drive.client import DriveClient
from fotoowl.sources.google_drive.links import FolderRef
from fotoowl.sources.google_drive.models import DriveFile, SkippedFile
from fotoowl.testing.drive_emulator import DriveEmulator, running_emulator

API_KEY = "test-key"


def fast_client(session: aiohttp.ClientSession, api_url: str, **overrides: Any) -> DriveClient:
    """A client whose backoff is milliseconds, so retry tests stay fast."""
    options: dict[str, Any] = {
        "api_key": API_KEY,
        "max_tries": 4,
        "backoff_base_s": 0.001,
        "backoff_cap_s": 0.005,
        "read_timeout_s": 5.0,
    }
    options.update(overrides)
    return DriveClient(session, api_url=api_url, **options)


@asynccontextmanager
async def drive(emu: DriveEmulator, session: aiohttp.ClientSession, **overrides: Any) -> AsyncIterator[DriveClient]:
    async with running_emulator(emu) as api_url:
        yield fast_client(session, api_url, **overrides)


@dataclass
class Walked:
    files: list[DriveFile] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)
    batch_sizes: list[int] = field(default_factory=list)

    @property
    def file_ids(self) -> list[str]:
        return [f.id for f in self.files]

    def by_name(self, name: str) -> DriveFile:
        (found,) = [f for f in self.files if f.name == name]
        return found


async def walk_all(client: DriveClient, ref: FolderRef, *, recursive: bool = True) -> Walked:
    walked = Walked()
    async for batch in client.walk(ref, recursive=recursive):
        walked.batch_sizes.append(len(batch))
        for entry in batch:
            if isinstance(entry, DriveFile):
                walked.files.append(entry)
            else:
                walked.skipped.append(entry)
    return walked


async def read_all(client: DriveClient, file_id: str, **kwargs: Any) -> tuple[bytes, str]:
    async with client.download(file_id, **kwargs) as download:
        data = b"".join([chunk async for chunk in download])
    return data, download.md5_hex
