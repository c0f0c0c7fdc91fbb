"""The import pipeline end to end: a source's emulator → embedded worker → SeaweedFS + PostgreSQL.

Tests taking `kit` run once per source (google_drive, dropbox: tests/source_kits.py) and state the
guarantees every source gets; the others are about Drive's own behaviour or the pipeline's insides."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import asyncpg
import pytest

from conftest import RunningEmulator, counts, wait_for_import, wait_for_previews
from fotoowl.config import AppSettings
from fotoowl.pipeline import control, limits, listing, transfer
from fotoowl.sources.links import parse_link
from fotoowl.storage import Storage
from fotoowl.testing.drive_emulator import DOCUMENT_MIME_TYPE
from fotoowl.testing.images import FORMAT_MIME_TYPES, render_image
from fotoowl.web.app import create_app
from fotoowl.worker import open_deps
from source_kits import SourceKit

MiB = 1024 * 1024
NO_FAILURES: dict[str, Any] = {"failures": [], "next_cursor": None}


def drive_link(folder_id: str) -> str:
    return f"https://drive.google.com/drive/folders/{folder_id}?usp=sharing"


async def start(client: Any, folder_url: str) -> int:
    """POST /imports, which tells the source from the link."""
    resp = await client.post("/imports", json={"folder_url": folder_url})
    assert resp.status == 202, await resp.text()
    body = await resp.json()
    assert set(body) == {"import_id", "status", "status_url"}
    assert body["status"] == "queued"
    assert body["status_url"] == f"/imports/{body['import_id']}"
    return int(body["import_id"])


async def run_import(client: Any, kit: SourceKit, root: str, timeout_s: float = 60.0) -> dict[str, Any]:
    body = await wait_for_import(client, await start(client, kit.link(root)), timeout_s)
    assert body["source"] == kit.source
    return body


async def failures_of(client: Any, import_id: int) -> list[dict[str, Any]]:
    page: dict[str, Any] = await (await client.get(f"/imports/{import_id}/failures")).json()
    assert page["next_cursor"] is None
    return list(page["failures"])


async def stored_md5(storage: Storage, key: str) -> str:
    digest = hashlib.md5()
    async for chunk in storage.stream(key):
        digest.update(chunk)
    return digest.hexdigest()


async def stored_keys(storage: Storage, settings: AppSettings, source: str) -> list[str]:
    """The originals in storage for one source (thumbnails live elsewhere)."""
    return sorted([key async for key in storage.list_keys(f"{settings.s3_prefix_normalised}{source}/")])


async def fetch(settings: AppSettings, query: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(settings.database_url)
    try:
        return list(await conn.fetch(query, *args))
    finally:
        await conn.close()


async def images_by_source_id(settings: AppSettings) -> dict[str, asyncpg.Record]:
    rows = await fetch(settings, "SELECT * FROM images")
    by_id = {r["source_id"]: r for r in rows}
    assert len(by_id) == len(rows), "an image was recorded twice"
    return by_id


async def items_by_file_id(settings: AppSettings, import_id: int) -> dict[str, asyncpg.Record]:
    rows = await fetch(settings, "SELECT * FROM import_items WHERE import_id = $1", import_id)
    return {r["file_id"]: r for r in rows}


# --- the same guarantees for every source -----------------------------------------------------------


async def test_tree_import_lands_every_image_once(
    client: Any, kit: SourceKit, app_settings: AppSettings, storage: Storage
) -> None:
    root = kit.add_folder(None, "Wedding 2026")
    ceremony = kit.add_folder(root, "Ceremony")
    party = kit.add_folder(ceremony, "Party")
    expected: dict[str, tuple[str, str, str]] = {}  # id -> (folder_path, name, mime type)
    for i in range(60):
        parent, path = [(root, ""), (ceremony, "Ceremony"), (party, "Ceremony/Party")][i % 3]
        fmt = ["jpeg", "png", "webp"][i % 3]
        name = f"IMG_{i:04d}.{'jpg' if fmt == 'jpeg' else fmt}"
        expected[kit.add_image(parent, name, fmt=fmt)] = (path, name, FORMAT_MIME_TYPES[fmt])
    kit.add_file(root, "notes.txt", b"not an image")

    body = await run_import(client, kit, root)
    assert body["status"] == "completed", body
    assert body["counts"] == counts(found=61, imported=60, skipped=1)
    assert body["folder_name"] == "Wedding 2026"

    # Previews follow the import: made once its originals are stored and recorded.
    previews = (await wait_for_previews(client, body["id"]))["previews"]
    assert previews == {"done": 60, "pending": 0, "none": 0}
    images = await images_by_source_id(app_settings)
    assert set(images) == set(expected)
    for file_id, row in images.items():
        assert (row["source"], row["folder_path"], row["name"], row["mime_type"]) == (kit.source, *expected[file_id])
        assert row["md5"] == kit.md5_of(file_id)
        assert row["import_id"] == body["id"]
        assert row["storage_path"] == f"s3://{app_settings.s3_bucket}/{row['storage_key']}"
        assert row["width"] and row["height"]
        assert row["thumbnail_key"], "decodable images get a thumbnail"
    for row in list(images.values())[:30]:
        assert await stored_md5(storage, row["storage_key"]) == row["md5"]
    # Exactly once in storage too: one original per image, nothing else under the source's prefix.
    assert await stored_keys(storage, app_settings, kit.source) == sorted(r["storage_key"] for r in images.values())
    assert await (await client.get(f"/imports/{body['id']}/failures")).json() == NO_FAILURES


async def test_large_file_goes_multipart_and_matches(
    client: Any, kit: SourceKit, storage: Storage, app_settings: AppSettings
) -> None:
    root = kit.add_folder(None, "Big")
    big = kit.add_image(root, "panorama.jpg", size_bytes=19 * MiB + 4321)
    body = await run_import(client, kit, root)
    assert body["status"] == "completed", body
    row = (await images_by_source_id(app_settings))[big]
    assert row["size"] == 19 * MiB + 4321
    assert await stored_md5(storage, row["storage_key"]) == row["md5"] == kit.md5_of(big)
    assert await storage.open_uploads(app_settings.s3_prefix_normalised) == []


async def test_reimport_skips_unchanged_and_reimports_changed(
    client: Any, kit: SourceKit, storage: Storage, app_settings: AppSettings
) -> None:
    root = kit.add_folder(None, "Shoot")
    ids = [kit.add_image(root, f"{i}.jpg") for i in range(10)]
    first = await run_import(client, kit, root)
    assert first["counts"]["imported"] == 10
    served_before = sum(kit.bytes_served(i) for i in ids)

    second = await run_import(client, kit, root)
    assert second["status"] == "completed"
    assert second["counts"] == counts(found=10, unchanged=10)
    assert sum(kit.bytes_served(i) for i in ids) == served_before, "a skipped file was downloaded"

    new_bytes = render_image("jpeg", 96, 64, 4242)
    kit.replace_content(ids[3], new_bytes)
    third = await run_import(client, kit, root)
    assert third["counts"] == counts(found=10, imported=1, unchanged=9)
    images = await images_by_source_id(app_settings)
    assert len(images) == 10
    changed = images[ids[3]]
    assert changed["md5"] == kit.md5_of(ids[3]) == hashlib.md5(new_bytes).hexdigest()
    assert (changed["size"], changed["import_id"]) == (len(new_bytes), third["id"])
    assert await stored_md5(storage, changed["storage_key"]) == changed["md5"]
    assert {images[i]["import_id"] for i in ids if i != ids[3]} == {first["id"]}


async def test_permanent_failure_is_reported_then_retried(client: Any, kit: SourceKit) -> None:
    root = kit.add_folder(None, "Refused")
    ids = [kit.add_image(root, f"{i}.png", fmt="png") for i in range(5)]
    code = kit.fail_permanently(ids[2])
    body = await run_import(client, kit, root)
    assert body["status"] == "completed_with_errors"
    assert body["counts"]["failed"] == 1 and body["counts"]["imported"] == 4
    failures = await failures_of(client, body["id"])
    # Permanent: reported after one attempt, not tried again on its own.
    assert [(f["file_id"], f["error"]["code"], f["attempts"]) for f in failures] == [(ids[2], code, 1)]
    assert failures[0]["error"]["message"]

    resp = await client.post(f"/imports/{body['id']}/retry", json={})
    assert resp.status == 202
    assert (await resp.json())["requeued"] == 1
    again = await wait_for_import(client, body["id"])
    assert again["status"] == "completed"
    assert again["counts"] == counts(found=5, imported=5)
    assert await failures_of(client, body["id"]) == []


async def test_transient_failure_is_retried_to_success(
    kit: SourceKit, app_settings: AppSettings, aiohttp_client: Any
) -> None:
    # One try per request in the source's client, so the failure reaches the pipeline's own retries.
    client = await aiohttp_client(create_app(app_settings.replace(drive_max_tries=1)))
    root = kit.add_folder(None, "Hiccup")
    ids = [kit.add_image(root, f"{i}.jpg") for i in range(4)]
    kit.fail_transiently(ids[1])
    body = await run_import(client, kit, root)
    assert body["status"] == "completed", body
    assert body["counts"] == counts(found=4, imported=4)
    items = await items_by_file_id(app_settings, body["id"])
    assert {i: (r["status"], r["attempts"], r["error_code"]) for i, r in items.items()} == {
        i: ("done", 2 if i == ids[1] else 1, None) for i in ids
    }
    assert await failures_of(client, body["id"]) == []


async def test_checksum_mismatch_is_retried_then_fails(
    client: Any, kit: SourceKit, app_settings: AppSettings, storage: Storage
) -> None:
    """Bytes that fail their source's checksum (MD5 on Drive, the content hash on Dropbox) never reach
    storage: the check runs before the object is committed."""
    root = kit.add_folder(None, "Corrupt")
    good = kit.add_image(root, "good.jpg")
    bad = kit.add_image(root, "bad.jpg")
    kit.corrupt_checksum(bad)
    body = await run_import(client, kit, root, timeout_s=120)
    assert body["status"] == "completed_with_errors"
    failures = await failures_of(client, body["id"])
    assert [(f["file_id"], f["error"]["code"], f["attempts"]) for f in failures] == [
        (bad, "md5_mismatch" if kit.source == "google_drive" else "checksum_mismatch", app_settings.max_attempts)
    ]
    images = await images_by_source_id(app_settings)
    assert set(images) == {good}
    assert await stored_keys(storage, app_settings, kit.source) == [images[good]["storage_key"]], (
        "bytes that failed their checksum were left in storage"
    )


async def test_a_dropped_body_is_resumed_not_restarted(
    client: Any, kit: SourceKit, app_settings: AppSettings, storage: Storage
) -> None:
    root = kit.add_folder(None, "Flaky")
    small = kit.add_image(root, "small.jpg", size_bytes=200_000)
    large = kit.add_image(root, "large.jpg", size_bytes=12 * MiB)
    kit.drop_once(small, after_bytes=1000)
    kit.drop_once(large, after_bytes=9 * MiB)  # into the second part of its multipart upload
    body = await run_import(client, kit, root)
    assert body["status"] == "completed", body
    assert body["counts"] == counts(found=2, imported=2)
    items = await items_by_file_id(app_settings, body["id"])
    images = await images_by_source_id(app_settings)
    for file_id in (small, large):
        assert items[file_id]["attempts"] == 1, "resumed within the attempt, not failed and tried again"
        first, *resumed = kit.range_headers(file_id)
        assert first is None and resumed, kit.range_headers(file_id)
        # Asked again from where the body broke off, never from the start.
        assert all(h is not None and h.startswith("bytes=") and int(h[6:].split("-")[0]) > 0 for h in resumed)
        assert await stored_md5(storage, images[file_id]["storage_key"]) == kit.md5_of(file_id)
    assert await storage.open_uploads(app_settings.s3_prefix_normalised) == []


async def test_cancel_stops_transfers_and_leaves_nothing_half_written(
    client: Any, kit: SourceKit, app_settings: AppSettings, storage: Storage
) -> None:
    root = kit.add_folder(None, "Slow")
    for i in range(12):
        # Multipart, and slow enough that uploads are open when the cancel lands.
        kit.slow(kit.add_image(root, f"{i}.jpg", size_bytes=12 * MiB), 3 * MiB)
    import_id = await start(client, kit.link(root))
    open_multipart = "SELECT count(*) FROM import_items WHERE import_id = $1 AND upload_id IS NOT NULL"
    for _ in range(300):
        if (await fetch(app_settings, open_multipart, import_id))[0][0]:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("no multipart upload was ever open")
    resp = await client.post(f"/imports/{import_id}/cancel", json={})
    assert resp.status == 202
    body = await wait_for_import(client, import_id)
    assert body["status"] == "cancelled"
    unfinished = "SELECT count(*) FROM import_items WHERE import_id = $1 AND status IN ('pending', 'in_progress')"
    for _ in range(100):
        if (in_progress := (await fetch(app_settings, unfinished, import_id))[0][0]) == 0:
            break
        await asyncio.sleep(0.1)
    assert in_progress == 0
    images = await images_by_source_id(app_settings)
    assert len(images) < 12
    assert await storage.open_uploads(app_settings.s3_prefix_normalised) == []
    # Every original in storage is a whole, recorded image.
    assert await stored_keys(storage, app_settings, kit.source) == sorted(r["storage_key"] for r in images.values())
    resp = await client.post(f"/imports/{import_id}/cancel", json={})
    assert resp.status == 409


# --- Drive's own behaviour --------------------------------------------------------------------------


async def test_drive_native_docs_and_shortcut_cycles_are_passed_over(
    client: Any, drive: RunningEmulator, app_settings: AppSettings
) -> None:
    emu = drive.emu
    root = emu.add_folder(None, "Mixed")
    sub = emu.add_folder(root, "Sub")
    ids = {emu.add_image(root, "a.jpg"), emu.add_image(sub, "b.jpg")}
    emu.add_native(root, "Shot list", DOCUMENT_MIME_TYPE)
    emu.add_shortcut(sub, "back to root", root)  # a folder cycle
    body = await wait_for_import(client, await start(client, drive_link(root)))
    assert body["status"] == "completed", body
    assert body["counts"] == counts(found=3, imported=2, skipped=1)
    assert set(await images_by_source_id(app_settings)) == ids


async def test_missing_folder_fails_fast_with_a_clear_reason(client: Any, drive: RunningEmulator) -> None:
    body = await wait_for_import(client, await start(client, drive_link("1AbCdEfGhIjKlMnOpQrStUvWxYz012345")))
    assert body["status"] == "failed"
    assert "Anyone with the link" in body["error"]["message"]
    assert body["counts"]["found"] == 0


# --- the pipeline's insides -------------------------------------------------------------------------


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


@pytest.mark.parametrize("files_in_flight", [1, 4, 32])
async def test_the_next_claim_is_made_while_every_copy_place_is_busy(files_in_flight: int) -> None:
    """Before: room for a quarter more than the files in flight, and claims of at least half of them,
    so a claim waited until a quarter of the copy places stood empty (and stayed so for its round trip)."""
    room = limits.ClaimRoom.for_files_in_flight(files_in_flight)
    assert await room.reserve(200) == room.capacity_items
    claiming = asyncio.create_task(room.reserve(200))
    while not claiming.done():
        room.give_back(1)  # a file stored: its place comes back
        await asyncio.sleep(0)
    # When the claim goes out, the items still held (copying or waiting to) fill every copy place.
    assert room.held_items - await claiming >= files_in_flight


async def test_worker_processes_split_an_import_instead_of_one_hoarding_it(
    app_settings: AppSettings, drive: RunningEmulator
) -> None:
    """Two processes' pipelines (their own slots and claims) on one import: both get a share."""
    drive.emu.latency_s = 0.02
    root = drive.emu.add_folder(None, "Shoot")
    for n in range(60):
        drive.emu.add_image(root, f"IMG_{n:03d}.jpg", width=16, height=16)
    settings = app_settings.replace(files_in_flight=4)
    async with open_deps(settings) as first, open_deps(settings) as second:
        created = await control.create_import(first.pool, first.redis, parse_link(drive_link(root)))
        await listing.list_import(first, created["id"])
        moved = await asyncio.gather(
            transfer.transfer_import(first, created["id"]), transfer.transfer_import(second, created["id"])
        )
        row = await first.pool.fetchrow("SELECT status, imported_count FROM imports WHERE id = $1", created["id"])
    # With 4 files in flight a process holds at most 6 items: one claim of a whole batch size (as
    # before claims were sized to the room) would have left the other process nothing.
    assert sum(moved) == 60 and min(moved) >= 5
    assert (row["status"], row["imported_count"]) == ("completed", 60)
