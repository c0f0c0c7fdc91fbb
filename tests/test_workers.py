"""Separate `arq fotoowl.worker.Settings` processes sharing one import, one of them SIGKILLed."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from arq import ArqRedis

from conftest import TEST_API_KEY, RunningEmulator
from fotoowl import statuses
from fotoowl.config import AppSettings
from fotoowl.pipeline import control
from fotoowl.sources.links import parse_link
from fotoowl.storage import Storage
from fotoowl.testing.drive_emulator import Fault
from fotoowl.worker import create_arq_pool
from source_kits import SourceKit

MiB = 1024 * 1024
pytestmark = pytest.mark.slow


def worker_env(settings: AppSettings, api_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "FOTOOWL_DATABASE_URL": settings.database_url,
        "FOTOOWL_REDIS_URL": settings.redis_url,
        "FOTOOWL_S3_ENDPOINT_URL": settings.s3_endpoint_url,
        "FOTOOWL_S3_BUCKET": settings.s3_bucket,
        "FOTOOWL_S3_PREFIX": settings.s3_prefix,
        "AWS_ACCESS_KEY_ID": settings.aws_access_key_id,
        "AWS_SECRET_ACCESS_KEY": settings.aws_secret_access_key.get(),
        "FOTOOWL_GOOGLE_API_KEY": TEST_API_KEY,
        "FOTOOWL_DRIVE_API_URL": api_url,
        # A killed worker's items come back quickly.
        "FOTOOWL_LEASE_S": "3",
        "FOTOOWL_FILES_IN_FLIGHT": "4",
        "FOTOOWL_BATCH_SIZE": "8",
        "FOTOOWL_RETRY_BACKOFF_S": "0.2",
        "FOTOOWL_LOG_FORMAT": "json",
        "FOTOOWL_DB_POOL_SIZE": "4",
        "FOTOOWL_WORKER_HTTP_PORT": "0",
    }


@pytest.fixture
async def handles(settings: AppSettings) -> AsyncIterator[tuple[asyncpg.Pool, ArqRedis]]:
    """A pool and an arq Redis of the test's own, to start imports and watch them from outside."""
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=2)
    redis = await create_arq_pool(settings)
    try:
        yield pool, redis
    finally:
        await redis.aclose()
        await pool.close()


@pytest.fixture
def spawn_worker(tmp_path: Path) -> Iterator[object]:
    procs: list[subprocess.Popen[bytes]] = []

    def spawn(env: dict[str, str], name: str) -> tuple[subprocess.Popen[bytes], Path]:
        log_path = tmp_path / f"{name}.log"
        with open(log_path, "wb") as log_file:
            proc = subprocess.Popen(
                [str(Path(sys.executable).parent / "arq"), "fotoowl.worker.Settings"],
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        procs.append(proc)
        return proc, log_path

    yield spawn
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def test_two_workers_share_an_import_and_survive_a_sigkill(
    settings: AppSettings, kit: SourceKit, storage: Storage, spawn_worker: object
) -> None:
    """For every source: exactly once after a SIGKILL mid-import, open multipart uploads included."""
    kit.set_latency(0.02)
    root = kit.add_folder(None, "Event")
    sub = kit.add_folder(root, "Stage")
    small = [kit.add_image(root if i % 2 else sub, f"small-{i}.jpg") for i in range(80)]
    large = [kit.add_image(sub, f"large-{i}.jpg", size_bytes=12 * MiB) for i in range(6)]
    for file_id in large:
        # Slow enough that multipart uploads are open when the kill lands.
        kit.slow(file_id, 6 * MiB)

    env = {**worker_env(settings, "http://127.0.0.1:9/not-used"), **kit.env()}
    proc_a, log_a = spawn_worker(env, "worker-a")  # type: ignore[operator]
    proc_b, log_b = spawn_worker(env, "worker-b")  # type: ignore[operator]

    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=2)
    redis = await create_arq_pool(settings)
    try:
        row = await control.create_import(pool, redis, parse_link(kit.link(root)))
        import_id = row["id"]
        # Kill worker A while it holds claimed items, ideally with a multipart upload open.
        for _ in range(600):
            imported = await pool.fetchval("SELECT imported_count FROM imports WHERE id = $1", import_id)
            open_multipart = await pool.fetchval(
                "SELECT count(*) FROM import_items WHERE import_id = $1 AND upload_id IS NOT NULL", import_id
            )
            if imported >= 20 and open_multipart:
                break
            assert proc_a.poll() is None and proc_b.poll() is None, "a worker died on its own"
            await asyncio.sleep(0.05)
        proc_a.send_signal(signal.SIGKILL)
        proc_a.wait()

        for _ in range(1200):
            status = await pool.fetchval("SELECT status FROM imports WHERE id = $1", import_id)
            if status not in statuses.ACTIVE:
                break
            await asyncio.sleep(0.1)
        final = await pool.fetchrow("SELECT * FROM imports WHERE id = $1", import_id)
        assert final["status"] == "completed", dict(final)
        assert (final["found_count"], final["imported_count"], final["failed_count"]) == (86, 86, 0)
        rows = await pool.fetch("SELECT source, source_id, storage_key, md5, size FROM images")
    finally:
        await redis.aclose()
        await pool.close()

    assert {r["source"] for r in rows} == {kit.source}
    assert sorted(r["source_id"] for r in rows) == sorted(small + large)
    for r in rows:
        if r["source_id"] in large or r["source_id"] in small[:10]:
            digest = hashlib.md5()
            async for chunk in storage.stream(r["storage_key"]):
                digest.update(chunk)
            assert digest.hexdigest() == kit.md5_of(r["source_id"])
    # Exactly once in storage too: one object per image (plus its thumbnail), nothing else.
    keys = [k async for k in storage.list_keys(f"{settings.s3_prefix_normalised}{kit.source}/")]
    assert sorted(keys) == sorted(r["storage_key"] for r in rows)
    assert await storage.open_uploads(settings.s3_prefix_normalised) == []
    # Both processes took part.
    assert b"batch claimed" in log_a.read_bytes()
    assert b"batch claimed" in log_b.read_bytes()


async def test_sigterm_hands_claimed_items_back(
    settings: AppSettings,
    drive: RunningEmulator,
    spawn_worker: object,
    handles: tuple[asyncpg.Pool, ArqRedis],
) -> None:
    emu = drive.emu
    root = emu.add_folder(None, "Slow")
    for i in range(12):
        file_id = emu.add_image(root, f"{i}.jpg", size_bytes=4 * MiB)
        emu.inject(file_id, Fault.slow(1 * MiB), times=None)
    env = worker_env(settings, drive.api_url) | {"FOTOOWL_LEASE_S": "300"}
    proc, _ = spawn_worker(env, "worker")  # type: ignore[operator]
    pool, redis = handles
    row = await control.create_import(pool, redis, parse_link(root))
    for _ in range(600):
        claimed = await pool.fetchval(
            "SELECT count(*) FROM import_items WHERE import_id = $1 AND status = 'in_progress'", row["id"]
        )
        if claimed:
            break
        await asyncio.sleep(0.05)
    assert claimed
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(proc.wait, 30) is not None
    # Nothing is left waiting for a 300 s lease to run out: every claimed item went back to pending.
    statuses = await pool.fetch(
        "SELECT status, lease_token, upload_id FROM import_items WHERE import_id = $1", row["id"]
    )
    assert {r["status"] for r in statuses} <= {"pending", "done"}
    assert all(r["lease_token"] is None for r in statuses if r["status"] == "pending")


def _preview_children(parent_pid: int) -> list[int]:
    """Live processes running fotoowl.preview_worker whose parent is `parent_pid`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or not (fields := _stat(int(entry))) or fields[0] == "Z":
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if b"fotoowl.preview_worker" in cmdline and int(fields[1]) == parent_pid:
            found.append(int(entry))
    return found


async def test_previews_are_made_by_a_lowest_priority_child_that_never_outlives_its_worker(
    settings: AppSettings,
    drive: RunningEmulator,
    spawn_worker: object,
    handles: tuple[asyncpg.Pool, ArqRedis],
) -> None:
    emu = drive.emu
    root = emu.add_folder(None, "Previews")
    for i in range(12):
        emu.add_image(root, f"{i}.jpg")
    proc, log_path = spawn_worker(worker_env(settings, drive.api_url), "worker")  # type: ignore[operator]
    pool, redis = handles
    row = await control.create_import(pool, redis, parse_link(root))
    for _ in range(600):
        pending = await pool.fetchval(
            "SELECT count(*) FROM images WHERE import_id = $1 AND preview_status <> 'done'", row["id"]
        )
        imported = await pool.fetchval("SELECT imported_count FROM imports WHERE id = $1", row["id"])
        if imported == 12 and not pending:
            break
        await asyncio.sleep(0.1)
    assert (imported, pending) == (12, 0)
    children = _preview_children(proc.pid)
    assert len(children) == 1, log_path.read_text()[-3000:]
    assert os.getpriority(os.PRIO_PROCESS, children[0]) == 19
    assert b"preview process ready" in log_path.read_bytes()

    # Killed outright, the worker cannot stop its child: the child sees its stdin close and exits.
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    for _ in range(100):
        if not _alive(children[0]):
            break
        await asyncio.sleep(0.1)
    assert not _alive(children[0])


def _stat(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command name (state, ppid, ...); empty once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return []


def _alive(pid: int) -> bool:
    fields = _stat(pid)
    return bool(fields) and fields[0] != "Z"
