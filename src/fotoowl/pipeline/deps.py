"""What the pipeline needs, owned by the process that runs it (worker start-up or the web app)."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from arq import ArqRedis

from fotoowl.config import AppSettings
from fotoowl.liveness import Heartbeat
from fotoowl.pipeline.limits import ByteBudget, ClaimRoom
from fotoowl.pipeline.preview_spool import PreviewSpool, open_spool
from fotoowl.resilience import OutageGate
from fotoowl.sources.base import FolderLink, Source, SourceConfigError
from fotoowl.storage import Storage

_PROBE_KEY = "_fotoowl/probe"


@dataclass
class Deps:
    """What the pipeline needs, owned by the process (worker start-up or the web app)."""

    settings: AppSettings
    pool: asyncpg.Pool
    redis: ArqRedis
    storage: Storage
    # Every source this process can read, by name ("google_drive", "dropbox").
    sources: Mapping[str, Source]
    # Bounds files in flight for the whole process, across all jobs.
    semaphore: asyncio.Semaphore = field(init=False)
    # Bounds the items this process holds claimed, so it never sits on work another could be doing.
    claim_room: ClaimRoom = field(init=False)
    # Bounds the file bodies held in memory while they are transferred.
    transfer_memory: ByteBudget = field(init=False)
    # Previews are CPU work on their own thread(s), so they cannot take every core from the loop.
    thumbnail_executor: ThreadPoolExecutor = field(init=False)
    # Closed while storage is down: no new claims, and copies it failed go back without an attempt.
    storage_gate: OutageGate = field(init=False)
    # This process's beat: items it claims carry its id, so the sweeper can tell when it died.
    heartbeat: Heartbeat = field(init=False)
    # Originals handed from their copy to their preview on this machine; None: previews read storage.
    preview_spool: PreviewSpool | None = field(init=False)

    def __post_init__(self) -> None:
        self.semaphore = asyncio.Semaphore(self.settings.files_in_flight)
        self.claim_room = ClaimRoom.for_files_in_flight(self.settings.files_in_flight)
        self.thumbnail_executor = ThreadPoolExecutor(
            self.settings.thumbnail_threads, thread_name_prefix="fotoowl-thumbnail"
        )
        self.transfer_memory = ByteBudget(self.settings.transfer_memory_bytes)
        self.heartbeat = Heartbeat(self.pool, uuid.uuid4())
        self.preview_spool = open_spool(self.settings)
        probe_key = f"{self.settings.s3_prefix_normalised}{_PROBE_KEY}"
        self.storage_gate = OutageGate("storage", lambda: self.storage.probe_write(probe_key))

    def source(self, name: str, reader: str | None = None) -> Source:
        """The source by name, or one of its other readers ("google_drive:public_page")."""
        key = name if reader in (None, "api") else f"{name}:{reader}"
        try:
            return self.sources[key]
        except KeyError:
            raise SourceConfigError(
                f"This server is not set up to read {name} folders{f' with the {reader} reader' if reader else ''}.",
                reason="source_not_configured",
            ) from None

    def close(self) -> None:
        self.thumbnail_executor.shutdown(wait=False, cancel_futures=True)
        self.storage_gate.cancel()


def folder_link(source: Source, row: Mapping[str, Any]) -> FolderLink:
    """The folder an import row names, as its source reads it (the link as pasted, and its password)."""
    link = source.parse_link(row["folder_url"])
    password = row.get("link_password")
    return dataclasses.replace(link, password=password) if password else link
