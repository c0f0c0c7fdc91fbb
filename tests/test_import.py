"""The import pipeline end to end: emulator → embedded worker → SeaweedFS + PostgreSQL."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import asyncpg

from conftest import RunningEmulator, wait_for_import
from fotoowl.config import AppSettings
from fotoowl.pipeline import control, limits, listing, transfer
from fotoowl.sources.links import parse_link
from fotoowl.storage import Storage
from fotoowl.testing.drive_emulator import Fault
from fotoowl.worker import open_deps

MiB = 1024 * 1024


def folder_link(folder_id: str) -> str:
    return f"https://drive.google.com/drive/folders/{folder_id}?usp=sharing"


async def start(client: Any, folder_id: str, **extra: Any) -> int:
    resp = await client.post("/import/google-drive", json={"folder_url": folder_link(folder_id), **extra})
    assert resp.status == 202, await resp.text()
    body = await resp.json()
    assert set(body) == {"import_id", "status", "status_url"}
    assert body["status"] == "queued"
    assert body["status_url"] == f"/imports/{body['import_id']}"
    return int(body["import_id"])


async def stored_md5(storage: Storage, key: str) -> str:
    digest = hashlib.md5()
    async for chunk in storage.stream(key):
        digest.update(chunk)
    return digest.hexdigest()


async def images_by_drive_id(settings: AppSettings) -> dict[str, asyncpg.Record]:
    conn = await asyncpg.connect(settings.database_url)
    try:
        rows = await conn.fetch("SELECT * FROM images")
    finally:
        await conn.close()
    by_id = {r["google_drive_id"]: r for r in rows}
    assert len(by_id) == len(rows), "an image was recorded twice"
    return by_id


async def test_tree_import_lands_every_image_once(client: Any, drive: RunningEmulator, app_settings: AppSettings,
                                                  storage: Storage) -> None:
    emu = drive.emu
    root = emu.add_folder(None, "Wedding 2026")
    ceremony = emu.add_folder(root, "Ceremony")
    party = emu.add_folder(ceremony, "Party")
    expected: dict[str, str] = {}
    for i in range(120):
        parent, path = [(root, ""), (ceremony, "Ceremony"), (party, "Ceremony/Party")][i % 3]
        fmt = ["jpeg", "png", "webp"][i % 3]
        file_id = emu.add_image(parent, f"IMG_{i:04d}.{'jpg' if fmt == 'jpeg' else fmt}", fmt=fmt)
        expected[file_id] = path
    emu.add_native(root, "Shot list", "application/vnd.google-apps.document")
    emu.add_file(root, "notes.txt", "text/plain", content=b"not an image")
    emu.add_shortcut(party, "back to root", root)  # a folder cycle

    import_id = await start(client, root)
    body = await wait_for_import(client, import_id)
    assert body["status"] == "completed", body
    assert body["counts"] == {"found": 122, "imported": 120, "skipped": 2, "failed": 0, "pending": 0}
    assert body["folder_name"] == "Wedding 2026"

    images = await images_by_drive_id(app_settings)
    assert set(images) == set(expected)
    for file_id, row in images.items():
        meta = emu.items[file_id]
        assert row["folder_path"] == expected[file_id]
        assert row["name"] == meta.name
        assert row["size"] == meta.content.size_bytes
        assert row["md5"] == emu.md5_of(file_id)
        assert row["mime_type"] == meta.mime_type
        assert row["import_id"] == import_id
        assert row["storage_path"] == f"s3://{app_settings.s3_bucket}/{row['storage_key']}"
        assert row["storage_key"].startswith(app_settings.s3_prefix_normalised + "google_drive/" + file_id)
        assert row["width"] and row["height"]
        assert row["thumbnail_key"], "decodable images get a thumbnail"
    for row in list(images.values())[:30]:
        assert await stored_md5(storage, row["storage_key"]) == row["md5"]

    failures = await (await client.get(f"/imports/{import_id}/failures")).json()
    assert failures == {"failures": [], "next_cursor": None}


async def test_large_file_goes_multipart_and_matches(client: Any, drive: RunningEmulator, storage: Storage,
                                                     app_settings: AppSettings) -> None:
    root = drive.emu.add_folder(None, "Big")
    big = drive.emu.add_image(root, "panorama.jpg", size_bytes=19 * MiB + 4321)
    import_id = await start(client, root)
    body = await wait_for_import(client, import_id)
    assert body["status"] == "completed", body
    row = (await images_by_drive_id(app_settings))[big]
    assert row["size"] == 19 * MiB + 4321
    assert await stored_md5(storage, row["storage_key"]) == drive.emu.md5_of(big)
    assert await storage.open_uploads(app_settings.s3_prefix_normalised) == []


async def test_reimport_skips_unchanged_and_reimports_changed(client: Any, drive: RunningEmulator,
                                                              app_settings: AppSettings) -> None:
    emu = drive.emu
    root = emu.add_folder(None, "Shoot")
    ids = [emu.add_image(root, f"{i}.jpg") for i in range(10)]
    first = await wait_for_import(client, await start(client, root))
    assert first["counts"]["imported"] == 10
    served_before = sum(emu.bytes_served.get(i, 0) for i in ids)

    second = await wait_for_import(client, await start(client, root))
    assert second["status"] == "completed"
    assert second["counts"] == {"found": 10, "imported": 0, "skipped": 10, "failed": 0, "pending": 0}
    assert sum(emu.bytes_served.get(i, 0) for i in ids) == served_before, "a skipped file was downloaded"

    emu.replace_content(ids[3])
    third = await wait_for_import(client, await start(client, root))
    assert third["counts"] == {"found": 10, "imported": 1, "skipped": 9, "failed": 0, "pending": 0}
    images = await images_by_drive_id(app_settings)
    assert len(images) == 10
    assert images[ids[3]]["md5"] == emu.md5_of(ids[3])
    assert images[ids[3]]["import_id"] == third["id"]


async def test_permanent_failure_is_reported_then_retried(client: Any, drive: RunningEmulator) -> None:
    emu = drive.emu
    root = emu.add_folder(None, "Quota")
    ids = [emu.add_image(root, f"{i}.png", fmt="png") for i in range(5)]
    emu.inject(ids[2], Fault.download_quota(), times=1)
    body = await wait_for_import(client, await start(client, root))
    assert body["status"] == "completed_with_errors"
    assert body["counts"]["failed"] == 1 and body["counts"]["imported"] == 4
    failures = (await (await client.get(f"/imports/{body['id']}/failures")).json())["failures"]
    assert [f["file_id"] for f in failures] == [ids[2]]
    assert failures[0]["error"]["code"] == "downloadQuotaExceeded"
    assert failures[0]["error"]["message"]

    resp = await client.post(f"/imports/{body['id']}/retry", json={})
    assert resp.status == 202
    assert (await resp.json())["requeued"] == 1
    again = await wait_for_import(client, body["id"])
    assert again["status"] == "completed"
    assert again["counts"] == {"found": 5, "imported": 5, "skipped": 0, "failed": 0, "pending": 0}


async def test_transient_md5_mismatch_is_retried_then_fails(client: Any, drive: RunningEmulator,
                                                            app_settings: AppSettings, storage: Storage) -> None:
    emu = drive.emu
    root = emu.add_folder(None, "Corrupt")
    good = emu.add_image(root, "good.jpg")
    bad = emu.add_image(root, "bad.jpg", md5_override="0" * 32)
    body = await wait_for_import(client, await start(client, root), timeout_s=120)
    assert body["status"] == "completed_with_errors"
    failures = (await (await client.get(f"/imports/{body['id']}/failures")).json())["failures"]
    assert [(f["file_id"], f["error"]["code"], f["attempts"]) for f in failures] == [
        (bad, "md5_mismatch", app_settings.max_attempts)]
    images = await images_by_drive_id(app_settings)
    assert set(images) == {good}


async def test_cancel_stops_transfers_and_leaves_nothing_half_written(
        client: Any, drive: RunningEmulator, app_settings: AppSettings, storage: Storage) -> None:
    emu = drive.emu
    root = emu.add_folder(None, "Slow")
    for i in range(30):
        file_id = emu.add_image(root, f"{i}.jpg", size_bytes=6 * MiB)
        emu.inject(file_id, Fault.slow(2 * MiB), times=None)
    import_id = await start(client, root)
    for _ in range(100):
        if (await (await client.get(f"/imports/{import_id}")).json())["status"] != "queued":
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.5)
    resp = await client.post(f"/imports/{import_id}/cancel", json={})
    assert resp.status == 202
    body = await wait_for_import(client, import_id)
    assert body["status"] == "cancelled"
    conn = await asyncpg.connect(app_settings.database_url)
    try:
        for _ in range(100):
            in_progress = await conn.fetchval(
                "SELECT count(*) FROM import_items WHERE import_id = $1 AND status IN ('pending', 'in_progress')",
                import_id)
            if in_progress == 0:
                break
            await asyncio.sleep(0.1)
        assert in_progress == 0
        imported = await conn.fetchval("SELECT count(*) FROM images WHERE import_id = $1", import_id)
    finally:
        await conn.close()
    assert imported < 30
    assert await storage.open_uploads(app_settings.s3_prefix_normalised) == []
    resp = await client.post(f"/imports/{import_id}/cancel", json={})
    assert resp.status == 409


async def test_missing_folder_fails_fast_with_a_clear_reason(client: Any, drive: RunningEmulator) -> None:
    import_id = await start(client, "1AbCdEfGhIjKlMnOpQrStUvWxYz012345")
    body = await wait_for_import(client, import_id)
    assert body["status"] == "failed"
    assert "Anyone with the link" in body["error"]["message"]
    assert body["counts"]["found"] == 0


async def test_claim_room_waits_for_a_worthwhile_claim() -> None:
    room = limits.ClaimRoom(5, min_claim_items=2)
    assert await room.reserve(200) == 5
    waiter = asyncio.create_task(room.reserve(200))
    room.give_back(1)
    await asyncio.sleep(0.01)
    assert not waiter.done()  # one free place is not worth a database round trip
    room.give_back(1)
    assert await asyncio.wait_for(waiter, 1) == 2
    assert room.held_items == 5


async def test_worker_processes_split_an_import_instead_of_one_hoarding_it(app_settings: AppSettings,
                                                                           drive: RunningEmulator) -> None:
    """Two processes' pipelines (their own slots and claims) on one import: both get a share."""
    drive.emu.latency_s = 0.02
    root = drive.emu.add_folder(None, "Shoot")
    for n in range(60):
        drive.emu.add_image(root, f"IMG_{n:03d}.jpg", width=16, height=16)
    settings = app_settings.replace(files_in_flight=4)
    async with open_deps(settings) as first, open_deps(settings) as second:
        created = await control.create_import(first.pool, first.redis, parse_link(folder_link(root)))
        await listing.list_import(first, created["id"])
        moved = await asyncio.gather(transfer.transfer_import(first, created["id"]),
                                     transfer.transfer_import(second, created["id"]))
        row = await first.pool.fetchrow("SELECT status, imported_count FROM imports WHERE id = $1", created["id"])
    # With 4 files in flight a process holds at most 5 items: one claim of a whole batch size (as
    # before claims were sized to the room) would have left the other process nothing.
    assert sum(moved) == 60 and min(moved) >= 5
    assert (row["status"], row["imported_count"]) == ("completed", 60)
