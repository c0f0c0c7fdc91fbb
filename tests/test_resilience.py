"""The service heals itself: outages of our own PostgreSQL, Redis or storage pause work and never fail
a file; poison files, failing listings and unexpected errors end with a reason.

Outages are made by fault proxies between fotoowl and the real servers (the servers keep their data;
only the path to them breaks), so they come and go on cue.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import pytest
import redis.asyncio as aioredis

from conftest import TEST_API_KEY, RunningEmulator
from fotoowl import statuses
from fotoowl.config import AppSettings
from fotoowl.pacer import RedisPacer
from fotoowl.pipeline import claims, control, listing, transfer
from fotoowl.pipeline.deps import Deps
from fotoowl.sources.links import parse_link
from fotoowl.storage_backends import open_storage
from fotoowl.testing.drive_emulator import Fault
from fotoowl.testing.faultproxy import HttpFaultProxy, TcpFaultProxy
from fotoowl.worker import create_arq_pool, json_serializer, open_deps


def folder_link(folder_id: str) -> str:
    return f"https://drive.google.com/drive/folders/{folder_id}"


def _via(url: str, port: int) -> str:
    parts = urlsplit(url)
    host = f"{parts.username}@" if parts.username else ""
    return urlunsplit(parts._replace(netloc=f"{host}127.0.0.1:{port}"))


@contextlib.asynccontextmanager
async def tcp_proxy(url: str) -> AsyncIterator[tuple[TcpFaultProxy, str]]:
    parts = urlsplit(url)
    proxy = TcpFaultProxy(parts.hostname or "127.0.0.1", parts.port or 0)
    port = await proxy.start()
    try:
        yield proxy, _via(url, port)
    finally:
        await proxy.close()


def shoot(drive: RunningEmulator, n: int, name: str = "Shoot") -> str:
    root = drive.emu.add_folder(None, name)
    for i in range(n):
        drive.emu.add_image(root, f"IMG_{i:03d}.jpg", width=32, height=24)
    return root


async def run_import(deps: Deps, root: str) -> asyncpg.Record:
    """List and transfer in this process, as one worker would; returns the import's final row."""
    created = await control.create_import(deps.pool, deps.redis, parse_link(folder_link(root)))
    await listing.list_import(deps, created["id"])
    await transfer.transfer_import(deps, created["id"])
    row = await deps.pool.fetchrow("SELECT * FROM imports WHERE id = $1", created["id"])
    assert row is not None
    return row


async def later(delay_s: float, action: Any) -> None:
    await asyncio.sleep(delay_s)
    action()


# --- storage ----------------------------------------------------------------------------------------


async def heal_after_outage(deps: Deps, proxy: HttpFaultProxy, *, down_s: float) -> None:
    for _ in range(1200):  # a minute at most; the test then says no outage was seen
        if deps.storage_gate.outages:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(down_s)
    proxy.fail_writes = False


@pytest.mark.slow
async def test_storage_answering_500_pauses_copies_without_spending_attempts(
    app_settings: AppSettings, drive: RunningEmulator
) -> None:
    """Before: files failed `storage_error` once botocore's own retries ran out, burning attempts."""
    drive.emu.latency_s = 0.01
    root = shoot(drive, 40)
    proxy = HttpFaultProxy(app_settings.s3_endpoint_url)
    await proxy.start()
    try:
        settings = app_settings.replace(s3_endpoint_url=proxy.url, max_attempts=1, files_in_flight=4)
        async with open_deps(settings) as deps:
            proxy.fail_writes = True
            # Storage comes back a while after the worker saw it down, not at a fixed time: botocore's
            # own retries of a 500 back off up to 30 s, so a fixed window could close before any copy
            # gave up (every copy then succeeds on a retry and the pause is never exercised).
            healing = asyncio.create_task(heal_after_outage(deps, proxy, down_s=3.0))
            row = await run_import(deps, root)
            healing.cancel()
            assert deps.storage_gate.outages >= 1
    finally:
        await proxy.close()
    assert proxy.failed_writes > 0
    assert (row["status"], row["imported_count"], row["failed_count"]) == ("completed", 40, 0)


# --- the database -------------------------------------------------------------------------------------


async def test_database_cut_mid_import_is_waited_out_not_left_to_the_lease(
    app_settings: AppSettings, drive: RunningEmulator
) -> None:
    """Before: the failure path needed the database that was down, so items sat `in_progress` until
    their lease (here 300 s, beyond this test's timeout) expired."""
    drive.emu.latency_s = 0.02
    root = shoot(drive, 60)
    async with tcp_proxy(app_settings.database_url) as (proxy, url):
        settings = app_settings.replace(database_url=url, lease_s=300, files_in_flight=4)
        async with open_deps(settings) as deps:
            created = await control.create_import(deps.pool, deps.redis, parse_link(folder_link(root)))
            await listing.list_import(deps, created["id"])
            copying = asyncio.create_task(transfer.transfer_import(deps, created["id"]))
            await asyncio.sleep(0.5)
            proxy.refuse()
            await asyncio.sleep(3.0)
            proxy.restore()
            await asyncio.wait_for(copying, 90)
            row = await deps.pool.fetchrow("SELECT * FROM imports WHERE id = $1", created["id"])
            assert deps.claim_room.held_items == 0
    assert proxy.connections_refused > 0
    assert (row["status"], row["imported_count"], row["failed_count"]) == ("completed", 60, 0)


# --- Redis ----------------------------------------------------------------------------------------------


async def test_pacer_paces_locally_while_redis_is_unreachable(redis_url: str) -> None:
    """Before: the pacer's Redis error escaped every copy in flight, failing whole batches."""
    async with tcp_proxy(redis_url) as (proxy, url):
        client = aioredis.Redis.from_url(url, socket_connect_timeout=1)
        try:
            pacer = RedisPacer(client, "fotoowl:pacer:test", rate_per_s=100.0, burst=5)
            await pacer.acquire()
            assert pacer.shared
            proxy.refuse()
            for _ in range(5):
                await pacer.acquire()
            assert not pacer.shared
            assert await pacer.slow_down() == pytest.approx(50.0, rel=0.1)
        finally:
            await client.aclose()


def test_a_failed_jobs_result_serialises() -> None:
    """Before: arq logged "error serializing result" for every failed job (JSON meets an exception)."""
    assert b"ValueError: bad" in json_serializer({"r": ValueError("bad"), "s": False})


def _worker_env(settings: AppSettings, api_url: str) -> dict[str, str]:
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
        "FOTOOWL_FILES_IN_FLIGHT": "4",
        "FOTOOWL_LOG_FORMAT": "text",
        "FOTOOWL_DB_POOL_SIZE": "4",
        "FOTOOWL_WORKER_HTTP_PORT": "0",
    }


async def wait_for_status(pool: asyncpg.Pool, import_id: int, timeout_s: float) -> asyncpg.Record:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        row = await pool.fetchrow("SELECT * FROM imports WHERE id = $1", import_id)
        assert row is not None
        if row["status"] in statuses.FINISHED:
            return row
        assert asyncio.get_running_loop().time() < deadline, dict(row)
        await asyncio.sleep(0.2)


@pytest.mark.slow
async def test_worker_process_outlives_a_redis_outage(
    settings: AppSettings, drive: RunningEmulator, tmp_path: Path
) -> None:
    """Before: arq's poll loop raised ConnectionError, `fotoowl worker` ran once and exited.

    Also: the worker serves its own /healthz and /metrics, which count the files it copied."""
    from fotoowl.embedded import free_port

    http_port = free_port()
    async with tcp_proxy(settings.redis_url) as (proxy, url):
        worker_settings = settings.replace(redis_url=url)
        log_path = tmp_path / "worker.log"
        env = {**_worker_env(worker_settings, drive.api_url), "FOTOOWL_WORKER_HTTP_PORT": str(http_port)}
        with open(log_path, "wb") as log_file:  # noqa: ASYNC230 - opening a log file is instant
            proc = await asyncio.create_subprocess_exec(
                str(Path(sys.executable).parent / "fotoowl"),
                "worker",
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        try:
            deadline = asyncio.get_running_loop().time() + 60
            while b"worker started" not in log_path.read_bytes():
                assert proc.returncode is None and asyncio.get_running_loop().time() < deadline, log_path.read_text()
                await asyncio.sleep(0.2)
            proxy.refuse()
            await asyncio.sleep(4.0)
            assert proc.returncode is None, log_path.read_text()
            proxy.restore()
            root = shoot(drive, 10)
            pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=2)
            redis = await create_arq_pool(settings)
            try:
                created = await control.create_import(pool, redis, parse_link(folder_link(root)))
                row = await wait_for_status(pool, created["id"], 60)
            finally:
                await redis.aclose()
                await pool.close()
            assert (row["status"], row["imported_count"]) == ("completed", 10)
            assert proc.returncode is None
            async with aiohttp.ClientSession() as http:
                async with http.get(f"http://127.0.0.1:{http_port}/healthz") as resp:
                    assert resp.status == 200, await resp.text()
                async with http.get(f"http://127.0.0.1:{http_port}/metrics") as resp:
                    metrics = await resp.text()
            assert 'fotoowl_files_total{outcome="imported",reason=""} 10.0' in metrics
        finally:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def test_embedded_workers_outlive_a_redis_outage_and_readyz_tells(
    app_settings: AppSettings, drive: RunningEmulator, aiohttp_client: Any
) -> None:
    """Before: the server's workers hung for good while /readyz kept answering ready."""
    from fotoowl.web.app import create_app

    drive.emu.latency_s = 0.02
    root = shoot(drive, 40)
    async with tcp_proxy(app_settings.redis_url) as (proxy, url):
        client = await aiohttp_client(create_app(app_settings.replace(redis_url=url, files_in_flight=4)))
        resp = await client.post("/import/google-drive", json={"folder_url": folder_link(root)})
        import_id = (await resp.json())["import_id"]
        await asyncio.sleep(1.0)
        proxy.refuse()
        deadline = asyncio.get_running_loop().time() + 40
        while True:
            resp = await client.get("/readyz")
            if resp.status == 503 and "workers" in (await resp.json())["checks"]:
                break
            assert asyncio.get_running_loop().time() < deadline, await resp.text()
            await asyncio.sleep(0.5)
        proxy.restore()
        deadline = asyncio.get_running_loop().time() + 60
        while True:
            body = await (await client.get(f"/imports/{import_id}")).json()
            if body["status"] in statuses.FINISHED:
                break
            assert asyncio.get_running_loop().time() < deadline, body
            await asyncio.sleep(0.3)
        assert (body["status"], body["counts"]["imported"]) == ("completed", 40)
        deadline = asyncio.get_running_loop().time() + 30
        while (resp := await client.get("/readyz")).status != 200:
            assert asyncio.get_running_loop().time() < deadline, await resp.text()
            await asyncio.sleep(0.5)


# --- an end for every import ------------------------------------------------------------------------------


async def test_a_nul_byte_in_a_name_is_imported_not_a_listing_forever(
    app_settings: AppSettings, drive: RunningEmulator
) -> None:
    """Before: the listing insert raised CharacterNotInRepertoireError and the import stayed `listing`."""
    root = drive.emu.add_folder(None, "Shoot")
    drive.emu.add_image(root, "bad\x00name.jpg", width=8, height=8)
    drive.emu.add_image(root, "good.jpg", width=8, height=8)
    async with open_deps(app_settings) as deps:
        row = await run_import(deps, root)
        names = {r["name"] for r in await deps.pool.fetch("SELECT name FROM images")}
    assert (row["status"], row["imported_count"]) == ("completed", 2)
    assert names == {"bad\ufffdname.jpg", "good.jpg"}


async def test_a_listing_that_keeps_failing_fails_the_import_with_its_reason(
    drive: RunningEmulator, app_settings: AppSettings, aiohttp_client: Any
) -> None:
    """Before: a folder whose listing answered 502 every time stayed `listing` through every retry."""
    from conftest import wait_for_import
    from fotoowl.web.app import create_app

    client = await aiohttp_client(create_app(app_settings.replace(drive_max_tries=2, max_list_attempts=3)))
    root = shoot(drive, 3)
    drive.emu.inject(None, Fault.http(502), times=None, on="list")
    resp = await client.post("/import/google-drive", json={"folder_url": folder_link(root)})
    import_id = (await resp.json())["import_id"]
    body = await wait_for_import(client, import_id, timeout_s=90)
    assert body["status"] == "failed"
    assert body["error"]["code"] == "listing_failed"
    assert "3 times" in body["error"]["message"] and "502" in body["error"]["message"]


async def test_an_expired_item_with_its_attempts_spent_fails_instead_of_looping(
    app_settings: AppSettings, drive: RunningEmulator
) -> None:
    """Before: expired items were reclaimed with no cap, so a file that kills its worker ran forever."""
    root = shoot(drive, 5)
    async with open_deps(app_settings) as deps:
        created = await control.create_import(deps.pool, deps.redis, parse_link(folder_link(root)))
        await listing.list_import(deps, created["id"])
        poison = await deps.pool.fetchval(
            """UPDATE import_items SET status = 'in_progress', attempts = $2, lease_token = gen_random_uuid(),
                      lease_expires_at = now() - interval '1 second'
               WHERE id = (SELECT min(id) FROM import_items WHERE import_id = $1) RETURNING id""",
            created["id"],
            app_settings.max_attempts,
        )
        await transfer.transfer_import(deps, created["id"])
        item = await deps.pool.fetchrow("SELECT status, error_code FROM import_items WHERE id = $1", poison)
        row = await deps.pool.fetchrow("SELECT * FROM imports WHERE id = $1", created["id"])
    assert (item["status"], item["error_code"]) == ("failed", "worker_lost")
    assert (row["status"], row["imported_count"], row["failed_count"]) == ("completed_with_errors", 4, 1)


async def test_a_row_the_database_refuses_fails_alone_and_gives_every_place_back(
    app_settings: AppSettings, drive: RunningEmulator
) -> None:
    """Before: the batch's error killed the transfer job, and a batch cancelled before it ran kept its
    places in the claim room for good, until every later transfer waited forever."""
    drive.emu.latency_s = 0.01
    root = shoot(drive, 30)
    drive.emu.add_image(root, "boom.jpg", width=8, height=8)
    async with open_deps(app_settings.replace(files_in_flight=4)) as deps:
        await deps.pool.execute(
            """CREATE FUNCTION refuse_boom() RETURNS trigger LANGUAGE plpgsql AS $$
               BEGIN IF NEW.name = 'boom.jpg' THEN RAISE EXCEPTION 'refused by a trigger'; END IF;
                     RETURN NEW; END $$;
               CREATE TRIGGER refuse_boom BEFORE INSERT ON images FOR EACH ROW EXECUTE FUNCTION refuse_boom();"""
        )
        row = await run_import(deps, root)
        failure = await deps.pool.fetchrow(
            "SELECT name, error_code, error_message FROM import_items WHERE status = 'failed'"
        )
        assert deps.claim_room.held_items == 0
        again = await run_import(deps, shoot(drive, 6, "Second"))
    assert (row["status"], row["imported_count"], row["failed_count"]) == ("completed_with_errors", 30, 1)
    assert (failure["name"], failure["error_code"]) == ("boom.jpg", "internal_error")
    assert "refused by a trigger" in failure["error_message"]
    assert (again["status"], again["imported_count"]) == ("completed", 6)


async def test_objects_are_stored_with_a_safe_content_type(app_settings: AppSettings, drive: RunningEmulator) -> None:
    """Before: an object took Drive's mime type as its Content-Type, `image/svg+xml` and junk included."""
    root = drive.emu.add_folder(None, "Shoot")
    svg = drive.emu.add_file(root, "logo.svg", "image/svg+xml", content=b"<svg xmlns='http://www.w3.org/2000/svg'/>")
    jpeg = drive.emu.add_image(root, "a.jpg", width=8, height=8)
    async with open_deps(app_settings) as deps:
        await run_import(deps, root)
        keys = {r["google_drive_id"]: r["storage_key"] for r in await deps.pool.fetch("SELECT * FROM images")}
    async with open_storage(app_settings) as storage:
        client = storage.client  # type: ignore[attr-defined]
        types = {
            file_id: (await client.head_object(Bucket=app_settings.s3_bucket, Key=key))["ContentType"]
            for file_id, key in keys.items()
        }
    assert types == {svg: "application/octet-stream", jpeg: "image/jpeg"}


async def test_items_of_a_worker_that_stopped_beating_go_back_before_their_lease(
    app_settings: AppSettings, drive: RunningEmulator
) -> None:
    """Before: a SIGKILLed worker's items waited out their whole lease (300 s by default)."""
    from fotoowl.liveness import DEAD_AFTER_S, reclaim_from_the_dead

    root = shoot(drive, 6)
    settings = app_settings.replace(lease_s=300)
    async with open_deps(settings) as dead, open_deps(settings) as alive:
        created = await control.create_import(dead.pool, dead.redis, parse_link(folder_link(root)))
        await listing.list_import(dead, created["id"])
        claimed = await claims.claim(
            dead.pool, created["id"], uuid.uuid4(), 4, lease_s=300.0, max_attempts=3, worker_id=dead.heartbeat.worker_id
        )
        assert len(claimed) == 4
        # The claimer goes silent (as after a SIGKILL); the survivor has been beating for a while.
        await dead.pool.execute(
            "UPDATE workers SET heartbeat_at = now() - make_interval(secs => $2) WHERE id = $1",
            dead.heartbeat.worker_id,
            DEAD_AFTER_S + 5,
        )
        assert await reclaim_from_the_dead(alive.heartbeat) == {}  # not trusted yet: just started
        alive.heartbeat._beating_since_s = 0.0
        await alive.heartbeat.beat()
        assert await reclaim_from_the_dead(alive.heartbeat) == {created["id"]: 4}
        await transfer.transfer_import(alive, created["id"])
        row = await alive.pool.fetchrow("SELECT * FROM imports WHERE id = $1", created["id"])
    assert (row["status"], row["imported_count"]) == ("completed", 6)
