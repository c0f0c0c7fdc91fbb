"""Watches against the Drive emulator: new, changed and removed files picked up on their own, a
folder that stops being shared backing off with its reason, pause/resume/delete, and one check of a
watch at a time however many workers ask."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any

import asyncpg
import pytest

from conftest import RunningEmulator, wait_for_import
from fotoowl.config import AppSettings
from fotoowl.pipeline.watches import queue_due_checks
from fotoowl.storage import ObjectNotFound, Storage
from fotoowl.testing.images import render_image
from fotoowl.worker import create_arq_pool
from source_kits import DriveKit
from test_import import images_by_source_id

INTERVAL_S = 2


async def new_watch(client: Any, url: str, **body: Any) -> dict[str, Any]:
    resp = await client.post("/watches", json={"url": url, "interval_s": INTERVAL_S, **body})
    assert resp.status == 201, await resp.text()
    watch: dict[str, Any] = await resp.json()
    assert resp.headers["Location"] == f"/watches/{watch['id']}"
    return watch


async def get_watch(client: Any, watch_id: int) -> dict[str, Any]:
    resp = await client.get(f"/watches/{watch_id}")
    assert resp.status == 200
    body: dict[str, Any] = await resp.json()
    return body


async def next_sync(client: Any, watch_id: int, after: int | None, timeout_s: float) -> tuple[dict[str, Any], float]:
    """The first sync import newer than `after`, finished, and how long it took to start."""
    started = time.monotonic()
    deadline = started + timeout_s
    while True:
        watch = await get_watch(client, watch_id)
        last = watch["last_sync"]
        if last is not None and last["import_id"] != after:
            waited_s = time.monotonic() - started
            return await wait_for_import(client, last["import_id"]), waited_s
        assert time.monotonic() < deadline, f"no sync started in {timeout_s} s: {watch}"
        await asyncio.sleep(0.1)


@pytest.mark.slow
async def test_a_watch_keeps_the_folder_in_step(
    client: Any, drive: RunningEmulator, storage: Storage, app_settings: AppSettings
) -> None:
    kit = DriveKit(drive.emu, drive.api_url)
    root = kit.add_folder(None, "Live event")
    ids = [kit.add_image(root, f"{i}.jpg") for i in range(3)]
    watch = await new_watch(client, kit.link(root), prune=True)
    assert (watch["interval_s"], watch["prune"], watch["state"]) == (INTERVAL_S, True, "watching")

    first, _ = await next_sync(client, watch["id"], None, timeout_s=30)
    assert first["counts"]["imported"] == 3 and first["watch_id"] == watch["id"]

    # Nothing changes: checks go on, no sync starts.
    await asyncio.sleep(INTERVAL_S * 2 + 1)
    quiet = await get_watch(client, watch["id"])
    assert quiet["last_sync"]["import_id"] == first["id"]
    assert quiet["last_result"] == "unchanged"

    # A photo arrives: picked up within two intervals (and a little for the worker to take the check).
    new = kit.add_image(root, "arrived.jpg")
    second, waited_s = await next_sync(client, watch["id"], first["id"], timeout_s=2 * INTERVAL_S + 8)
    print(f"new photo picked up after {waited_s:.1f} s (interval {INTERVAL_S} s)")
    assert second["counts"]["imported"] == 1 and second["counts"]["unchanged"] == 3
    assert new in await images_by_source_id(app_settings)

    # A photo is retouched: copied again, its row updated.
    before = (await images_by_source_id(app_settings))[ids[0]]
    kit.replace_content(ids[0], render_image("jpeg", 70, 50, 31337))
    third, _ = await next_sync(client, watch["id"], second["id"], timeout_s=2 * INTERVAL_S + 8)
    assert third["counts"]["imported"] == 1
    after = (await images_by_source_id(app_settings))[ids[0]]
    assert after["id"] == before["id"] and after["md5"] == kit.md5_of(ids[0]) != before["md5"]

    # A photo is deleted: reported and, with prune, gone from storage and the database.
    kit.remove(ids[1])
    gone_key = (await images_by_source_id(app_settings))[ids[1]]["storage_key"]
    fourth, _ = await next_sync(client, watch["id"], third["id"], timeout_s=2 * INTERVAL_S + 8)
    assert (fourth["counts"]["removed"], fourth["counts"]["pruned"]) == (1, 1)
    assert ids[1] not in await images_by_source_id(app_settings)
    try:
        await storage.size(gone_key)
        raise AssertionError("the removed photo is still stored")
    except ObjectNotFound:
        pass
    syncs = await (await client.get(f"/imports?watch_id={watch['id']}")).json()
    assert [i["id"] for i in syncs["imports"]] == [fourth["id"], third["id"], second["id"], first["id"]]


@pytest.mark.slow
async def test_an_unshared_folder_backs_off_with_its_reason(client: Any, drive: RunningEmulator) -> None:
    kit = DriveKit(drive.emu, drive.api_url)
    root = kit.add_folder(None, "Private soon")
    kit.add_image(root, "a.jpg")
    watch = await new_watch(client, kit.link(root))
    first, _ = await next_sync(client, watch["id"], None, timeout_s=30)
    drive.emu.set_shared(root, False)

    deadline = time.monotonic() + 30
    while (state := await get_watch(client, watch["id"]))["error"] is None or state["error"]["failures"] < 2:
        assert time.monotonic() < deadline, state
        await asyncio.sleep(0.2)
    assert state["state"] == "backing_off"
    assert state["error"]["code"] == "folder_not_accessible" and state["error"]["message"]
    assert state["last_sync"]["import_id"] == first["id"], "a failing check starts no sync"
    # Each failure doubles the wait: after the second, the next check is 4 intervals away.
    wait_s = (
        datetime.fromisoformat(state["next_check_at"]) - datetime.fromisoformat(state["last_checked_at"])
    ).total_seconds()
    assert wait_s >= INTERVAL_S * 2**2 - 0.5

    # Shared again and resumed by hand: it checks at once and clears the error.
    drive.emu.set_shared(root, True)
    resp = await client.patch(f"/watches/{watch['id']}", json={"paused": True})
    assert (await resp.json())["state"] == "paused"
    resp = await client.patch(f"/watches/{watch['id']}", json={"paused": False})
    assert resp.status == 200
    deadline = time.monotonic() + 30
    while (state := await get_watch(client, watch["id"]))["error"] is not None:
        assert time.monotonic() < deadline, state
        await asyncio.sleep(0.2)
    assert state["state"] in ("watching", "syncing")


async def test_pause_interval_and_delete(client: Any, drive: RunningEmulator) -> None:
    kit = DriveKit(drive.emu, drive.api_url)
    root = kit.add_folder(None, "Paused")
    watch = await new_watch(client, kit.link(root), interval_s=600)
    resp = await client.patch(f"/watches/{watch['id']}", json={"paused": True, "interval_s": 900})
    body = await resp.json()
    assert (body["state"], body["interval_s"], body["next_check_at"]) == ("paused", 900, None)
    listed = await (await client.get("/watches")).json()
    assert [w["id"] for w in listed["watches"]] == [watch["id"]]
    bad = await client.patch(f"/watches/{watch['id']}", json={"interval_s": 1})
    assert bad.status == 422 and (await bad.json())["error"]["code"] == "invalid_field"
    unknown = await client.patch(f"/watches/{watch['id']}", json={"every": 5})
    assert unknown.status == 422
    assert (await client.delete(f"/watches/{watch['id']}", json={})).status == 204
    assert (await client.get(f"/watches/{watch['id']}")).status == 404
    assert (await client.delete(f"/watches/{watch['id']}", json={})).status == 404


async def test_bad_watches_are_refused(client: Any) -> None:
    resp = await client.post("/watches", json={"url": "https://example.com/x", "interval_s": 60})
    assert resp.status == 422 and (await resp.json())["error"]["code"] == "invalid_folder_url"
    resp = await client.post("/watches", json={"interval_s": 60})
    assert resp.status == 422 and (await resp.json())["error"]["code"] == "missing_field"
    resp = await client.post("/watches", json={"url": "https://drive.google.com/drive/folders/abc", "interval_s": "x"})
    assert resp.status == 422


async def test_two_schedulers_never_check_one_watch_twice(app_settings: AppSettings, client: Any) -> None:
    """The lease: concurrent rounds of the scheduler (two workers) each lease a due watch once."""
    pools = [await asyncpg.create_pool(app_settings.database_url, min_size=1, max_size=4) for _ in range(2)]
    redis = await create_arq_pool(app_settings)
    try:
        await pools[0].execute(
            """INSERT INTO watches (source, folder_id, folder_url, interval_s, paused)
               SELECT 'google_drive', 'f' || n, 'https://drive.google.com/drive/folders/f' || n, 60, true
               FROM generate_series(1, 40) n"""
        )
        # Paused while inserted so the app's own worker leaves them; due now for the two schedulers.
        await pools[0].execute("UPDATE watches SET paused = false, next_check_at = now() - interval '1 s'")
        counts = await asyncio.gather(*(queue_due_checks(pool, redis) for pool in pools for _ in range(3)))
        leased = await pools[0].fetchval("SELECT count(*) FROM watches WHERE checking_until > now()")
        assert sum(counts) <= 40 and leased == 40
    finally:
        await redis.aclose()
        for pool in pools:
            await pool.close()
