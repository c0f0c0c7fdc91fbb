"""Real servers for the whole test session, and per-test isolation on top of them.

PostgreSQL, Redis and S3 are the embedded launchers of `fotoowl dev` started once per session on
free loopback ports, unless FOTOOWL_TEST_DATABASE_URL / FOTOOWL_TEST_REDIS_URL /
FOTOOWL_TEST_S3_ENDPOINT_URL name servers to use instead. Each test gets its own database (a copy
of a migrated template), a flushed Redis database and its own key prefix in the bucket.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import pytest
import redis.asyncio as aioredis

from fotoowl import embedded
from fotoowl.config import AppSettings, Secret
from fotoowl.db import migrate_url
from fotoowl.storage import Storage
from fotoowl.storage_backends import ensure_bucket, open_storage

TEST_BUCKET = "fotoowl-test"


@dataclass(frozen=True)
class SessionServers:
    pg_admin_url: str
    template_db: str
    redis_url: str
    s3_endpoint_url: str
    aws_access_key_id: str
    aws_secret_access_key: str


def _with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + database))


@pytest.fixture(scope="session")
def tmp_root() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="fotoowl-test-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def servers(tmp_root: Path) -> Iterator[SessionServers]:
    started: list[embedded.Server] = []
    try:
        pg_url = os.environ.get("FOTOOWL_TEST_DATABASE_URL")
        if not pg_url:
            server = embedded.start_postgres(tmp_root / "pg", durable=False, database="postgres")
            started.append(server)
            pg_url = server.extra["admin_url"]
        redis_url = os.environ.get("FOTOOWL_TEST_REDIS_URL")
        if not redis_url:
            server = embedded.start_valkey(tmp_root / "valkey", durable=False)
            started.append(server)
            redis_url = server.url
        s3_url = os.environ.get("FOTOOWL_TEST_S3_ENDPOINT_URL")
        key_id = os.environ.get("AWS_ACCESS_KEY_ID", "fotoowl-test")
        secret = os.environ.get("AWS_SECRET_ACCESS_KEY", "fotoowl-test-secret")
        if not s3_url:
            server = embedded.start_seaweedfs(
                tmp_root / "s3", bucket=TEST_BUCKET, access_key_id=key_id, secret_access_key=secret
            )
            started.append(server)
            s3_url = server.url
        template = f"fotoowl_tpl_{os.getpid()}"
        _run(_create_template(pg_url, template))
        yield SessionServers(pg_url, template, redis_url, s3_url, key_id, secret)
        _run(_drop_database(pg_url, template))
    finally:
        for server in reversed(started):
            server.stop()


def _run(coro: object) -> None:
    import asyncio

    asyncio.run(coro)  # type: ignore[arg-type]


async def _create_template(admin_url: str, template: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{template}"')
        await conn.execute(f'CREATE DATABASE "{template}"')
    finally:
        await conn.close()
    await migrate_url(_with_database(admin_url, template))


async def _drop_database(admin_url: str, name: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture
async def database_url(servers: SessionServers) -> AsyncIterator[str]:
    name = f"fotoowl_t_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(servers.pg_admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{servers.template_db}"')
    finally:
        await conn.close()
    yield _with_database(servers.pg_admin_url, name)
    await _drop_database(servers.pg_admin_url, name)


@pytest.fixture
async def redis_url(servers: SessionServers) -> AsyncIterator[str]:
    client = aioredis.from_url(servers.redis_url)
    try:
        await client.flushdb()
    finally:
        await client.aclose()
    yield servers.redis_url


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain HTTP client session, closed after the test."""
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def s3_prefix() -> str:
    return f"t-{uuid.uuid4().hex[:12]}/"


@pytest.fixture
def base_settings(servers: SessionServers, s3_prefix: str, tmp_path: Path) -> AppSettings:
    """AppSettings pointing at the session's servers, without a database or Redis of the test's own."""
    return AppSettings(
        storage="s3",
        s3_endpoint_url=servers.s3_endpoint_url,
        s3_bucket=TEST_BUCKET,
        s3_prefix=s3_prefix,
        aws_access_key_id=servers.aws_access_key_id,
        aws_secret_access_key=Secret(servers.aws_secret_access_key),
        file_root=tmp_path / "files",
        data_dir=tmp_path / "data",
        preview_spool_dir=str(tmp_path / "preview-spool"),
        google_api_key=Secret("test-key"),
        lease_s=30,
        retry_backoff_s=0.2,
        files_in_flight=8,
        batch_size=50,
        db_pool_size=5,
    )


@pytest.fixture
async def settings(base_settings: AppSettings, database_url: str, redis_url: str) -> AppSettings:
    settings = base_settings.replace(database_url=database_url, redis_url=redis_url)
    await ensure_bucket(settings)
    return settings


@pytest.fixture
async def storage(settings: AppSettings) -> AsyncIterator[Storage]:
    async with open_storage(settings) as storage:
        yield storage


# --- the Drive emulator and the app ---------------------------------------------------------------

TEST_API_KEY = "test-key"


@dataclass
class RunningEmulator:
    emu: Any
    api_url: str


@pytest.fixture
async def drive() -> AsyncIterator[RunningEmulator]:
    """A fresh, empty Drive emulator on a free port; tests build their folder tree on `drive.emu`."""
    from fotoowl.testing.drive_emulator import DriveEmulator, start_emulator

    emu = DriveEmulator(api_keys={TEST_API_KEY}, seed=1)
    runner, api_url = await start_emulator(emu)
    yield RunningEmulator(emu, api_url)
    await runner.cleanup()


@dataclass
class RunningDropbox:
    emu: Any
    url: str


@pytest.fixture
async def dropbox() -> AsyncIterator[RunningDropbox]:
    """A fresh, empty Dropbox emulator on a free port (one address serves the API and content hosts)."""
    from fotoowl.testing.dropbox_emulator import DropboxEmulator, start_emulator
    from source_kits import DROPBOX_APP_KEY, DROPBOX_APP_SECRET

    emu = DropboxEmulator(app_key=DROPBOX_APP_KEY, app_secret=DROPBOX_APP_SECRET, seed=3)
    runner, url = await start_emulator(emu)
    yield RunningDropbox(emu, url)
    await runner.cleanup()


@pytest.fixture(params=["google_drive", "dropbox"])
def kit(request: pytest.FixtureRequest, drive: RunningEmulator, dropbox: RunningDropbox) -> Any:
    """The same pipeline test against each source's emulator."""
    from source_kits import DriveKit, DropboxKit

    if request.param == "google_drive":
        return DriveKit(drive.emu, drive.api_url)
    return DropboxKit(dropbox.emu, dropbox.url)


@pytest.fixture
async def app_settings(settings: AppSettings, drive: RunningEmulator, dropbox: RunningDropbox) -> AppSettings:
    """Settings that read both emulators: Drive with the test key, Dropbox with the test app."""
    from source_kits import DROPBOX_APP_KEY, DROPBOX_APP_SECRET

    return settings.replace(
        drive_api_url=drive.api_url,
        google_api_key=Secret(TEST_API_KEY),
        dropbox_app_key=DROPBOX_APP_KEY,
        dropbox_app_secret=Secret(DROPBOX_APP_SECRET),
        dropbox_api_url=dropbox.url,
        dropbox_content_url=dropbox.url,
    )


@pytest.fixture
async def client(app_settings: AppSettings, aiohttp_client: Any) -> Any:
    """The whole app (API, pages, embedded worker) on real servers and the emulator."""
    from fotoowl.web.app import create_app

    return await aiohttp_client(create_app(app_settings))


async def wait_for_import(client: Any, import_id: int, timeout_s: float = 60.0) -> dict[str, Any]:
    """Poll the API until the import finishes; returns its JSON."""
    import asyncio

    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        resp = await client.get(f"/imports/{import_id}")
        body: dict[str, Any] = await resp.json()
        if body["status"] in ("completed", "completed_with_errors", "failed", "cancelled"):
            return body
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"import {import_id} did not finish in {timeout_s} s: {body}")
        await asyncio.sleep(0.2)


def without_previews(body: dict[str, Any]) -> dict[str, Any]:
    """An import's JSON but its preview counts, which move on after the import ends (previews follow)."""
    return {key: value for key, value in body.items() if key != "previews"}


async def wait_for_previews(client: Any, import_id: int, timeout_s: float = 60.0) -> dict[str, Any]:
    """Poll the API until the import is finished and none of its previews is pending (they follow the
    originals: an import completes before its previews); returns its JSON."""
    import asyncio

    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        body: dict[str, Any] = await (await client.get(f"/imports/{import_id}")).json()
        if body["status"] not in ("queued", "listing", "running") and body["previews"]["pending"] == 0:
            return body
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"the previews of import {import_id} were not made in {timeout_s} s: {body}")
        await asyncio.sleep(0.2)


def counts(**given: int) -> dict[str, int]:
    """An import's `counts` as the API answers them: the ones given, every other one 0."""
    names = ("found", "imported", "deduplicated", "unchanged", "skipped", "failed", "pending", "removed", "pruned")
    return dict.fromkeys(names, 0) | given
