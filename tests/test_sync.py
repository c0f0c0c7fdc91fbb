"""Keeping a folder in step: a second import is a sync (unchanged files are not downloaded, changed
ones are, removed ones are reported and, with prune, deleted), content dedupe across folders and
sources, and deleting imports and images. Each test runs once per source (tests/source_kits.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

from conftest import counts, wait_for_import, wait_for_previews
from fotoowl.config import AppSettings
from fotoowl.storage import ObjectNotFound, Storage
from fotoowl.testing.images import render_image
from source_kits import SourceKit
from test_import import images_by_source_id, run_import, start, stored_keys, stored_md5


async def removed_of(client: Any, import_id: int) -> list[dict[str, Any]]:
    page: dict[str, Any] = await (await client.get(f"/imports/{import_id}/removed")).json()
    assert page["next_cursor"] is None
    return list(page["removed"])


async def import_with(client: Any, kit: SourceKit, root: str, **body: Any) -> dict[str, Any]:
    resp = await client.post("/imports", json={"folder_url": kit.link(root), **body})
    assert resp.status == 202, await resp.text()
    return await wait_for_import(client, (await resp.json())["import_id"])


async def test_a_second_import_is_a_sync(
    client: Any, kit: SourceKit, storage: Storage, app_settings: AppSettings
) -> None:
    root = kit.add_folder(None, "Event")
    sub = kit.add_folder(root, "Day 2")
    ids = [kit.add_image(root, f"{i}.jpg") for i in range(6)] + [kit.add_image(sub, "late.jpg")]
    first = await run_import(client, kit, root)
    assert first["counts"] == counts(found=7, imported=7)
    served = sum(kit.bytes_served(i) for i in ids)

    # Nothing changed: nothing downloaded, every file unchanged.
    second = await run_import(client, kit, root)
    assert second["status"] == "completed"
    assert second["counts"] == counts(found=7, unchanged=7)
    assert sum(kit.bytes_served(i) for i in ids) == served
    assert await removed_of(client, second["id"]) == []

    # One changed, one new, one removed.
    kit.replace_content(ids[0], render_image("jpeg", 80, 60, 777))
    new = kit.add_image(sub, "new.jpg")
    kit.remove(ids[1])
    images_before = await images_by_source_id(app_settings)
    third = await run_import(client, kit, root)
    assert third["counts"] == counts(found=7, imported=2, unchanged=5, removed=1)
    images = await images_by_source_id(app_settings)
    assert images[ids[0]]["md5"] == kit.md5_of(ids[0]) != images_before[ids[0]]["md5"]
    assert images[ids[0]]["id"] == images_before[ids[0]]["id"], "a changed file updates its row"
    assert await stored_md5(storage, images[ids[0]]["storage_key"]) == kit.md5_of(ids[0])
    assert new in images
    (removed,) = await removed_of(client, third["id"])
    assert removed == {
        "file_id": ids[1],
        "name": "1.jpg",
        "folder_path": "",
        "mime_type": "image/jpeg",
        "size": images_before[ids[1]]["size"],
        "pruned": False,
        "image_id": images_before[ids[1]]["id"],
    }
    # Reported, not deleted: the image is still there and reads back.
    assert (await client.get(f"/images/{images_before[ids[1]]['id']}/content")).status == 200

    # With prune: the removed file's image goes, from storage and the database.
    fourth = await import_with(client, kit, root, prune=True)
    assert fourth["counts"] == counts(found=7, unchanged=7, removed=1, pruned=1)
    assert fourth["prune"] is True
    (pruned,) = await removed_of(client, fourth["id"])
    assert (pruned["file_id"], pruned["pruned"], pruned["image_id"]) == (ids[1], True, None)
    images = await images_by_source_id(app_settings)
    assert ids[1] not in images
    try:
        await storage.size(images_before[ids[1]]["storage_key"])
        raise AssertionError("the pruned image's object is still stored")
    except ObjectNotFound:
        pass
    assert await stored_keys(storage, app_settings, kit.source) == sorted(r["storage_key"] for r in images.values())
    # Nothing left to prune: the next sync reports nothing removed.
    fifth = await import_with(client, kit, root, prune=True)
    assert fifth["counts"] == counts(found=7, unchanged=7)


async def test_a_non_recursive_sync_does_not_report_subfolders_as_removed(client: Any, kit: SourceKit) -> None:
    root = kit.add_folder(None, "Top")
    sub = kit.add_folder(root, "Inner")
    kit.add_image(root, "a.jpg")
    kit.add_image(sub, "b.jpg")
    await run_import(client, kit, root)
    top_only = await import_with(client, kit, root, recursive=False, prune=True)
    assert top_only["counts"] == counts(found=1, unchanged=1)


async def test_identical_bytes_elsewhere_are_copied_inside_storage(
    client: Any, kit: SourceKit, storage: Storage, app_settings: AppSettings
) -> None:
    photos = [render_image("jpeg", 64 + i, 48, 900 + i) for i in range(5)]
    first_root = kit.add_folder(None, "Photographer")
    originals = [kit.add_file(first_root, f"IMG_{i}.jpg", data) for i, data in enumerate(photos)]
    first = await run_import(client, kit, first_root)
    assert first["counts"] == counts(found=5, imported=5)
    # With their previews made, a copy of the bytes copies the preview too.
    await wait_for_previews(client, first["id"])

    # The same photos under other ids, in another shared folder (an agency's selection).
    second_root = kit.add_folder(None, "Agency")
    copies = [kit.add_file(second_root, f"selected_{i}.jpg", data) for i, data in enumerate(photos)]
    copies.append(kit.add_file(second_root, "fresh.jpg", render_image("jpeg", 50, 50, 4)))
    second = await run_import(client, kit, second_root)
    assert second["counts"] == counts(found=6, imported=1, deduplicated=5)
    assert sum(kit.bytes_served(c) for c in copies[:5]) == 0, "a deduplicated file was downloaded"
    images = await images_by_source_id(app_settings)
    for original, copy in zip(originals, copies[:5], strict=True):
        assert images[copy]["storage_key"] != images[original]["storage_key"]
        assert images[copy]["md5"] == images[original]["md5"] == kit.md5_of(copy)
        assert await stored_md5(storage, images[copy]["storage_key"]) == kit.md5_of(copy)
        assert images[copy]["thumbnail_key"] is not None and images[copy]["preview_status"] == "done"

    # Deleting the first import leaves the copies' bytes alone.
    assert (await client.delete(f"/imports/{first['id']}", json={})).status == 202
    await wait_gone(client, first["id"])
    images = await images_by_source_id(app_settings)
    assert not set(originals) & set(images)
    for copy in copies[:5]:
        resp = await client.get(f"/images/{images[copy]['id']}/content")
        assert resp.status == 200
        assert len(await resp.read()) == images[copy]["size"]


async def wait_gone(client: Any, import_id: int, timeout_s: float = 60.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while (resp := await client.get(f"/imports/{import_id}")).status != 404:
        body = await resp.json()
        assert body["status"] == "deleting", body
        assert asyncio.get_running_loop().time() < deadline, "the import was not deleted in time"
        await asyncio.sleep(0.2)


async def test_deleting_an_import_leaves_nothing_of_it(
    client: Any, kit: SourceKit, storage: Storage, app_settings: AppSettings
) -> None:
    keep_root = kit.add_folder(None, "Keep")
    kit.add_image(keep_root, "keep.jpg")
    kept = await run_import(client, kit, keep_root)
    root = kit.add_folder(None, "Gone")
    for i in range(8):
        kit.add_image(root, f"{i}.jpg")
    gone = await run_import(client, kit, root)
    await wait_for_previews(client, gone["id"])  # their thumbnails are deleted too
    rows = await fetch_rows(app_settings, "SELECT * FROM images WHERE import_id = $1", gone["id"])
    assert len(rows) == 8
    keys = [k for r in rows for k in (r["storage_key"], r["thumbnail_key"]) if k]

    first = await client.delete(f"/imports/{gone['id']}", json={})
    assert first.status == 202
    assert await first.json() == {"import_id": gone["id"], "status": "deleting"}
    again = await client.delete(f"/imports/{gone['id']}", json={})
    assert again.status in (202, 404)
    await wait_gone(client, gone["id"])
    assert (await client.delete(f"/imports/{gone['id']}", json={})).status == 404

    assert await fetch_rows(app_settings, "SELECT 1 FROM images WHERE import_id = $1", gone["id"]) == []
    assert await fetch_rows(app_settings, "SELECT 1 FROM import_items WHERE import_id = $1", gone["id"]) == []
    for key in keys:
        try:
            await storage.size(key)
            raise AssertionError(f"{key} is still stored")
        except ObjectNotFound:
            pass
    # The other import is untouched.
    assert (await client.get(f"/imports/{kept['id']}")).status == 200
    (kept_image,) = (await (await client.get(f"/images?import_id={kept['id']}")).json())["images"]
    assert (await client.get(kept_image["url"])).status == 200


async def test_deleting_an_import_mid_copy_stops_it_and_leaves_nothing(
    client: Any, kit: SourceKit, storage: Storage, app_settings: AppSettings
) -> None:
    root = kit.add_folder(None, "Slow")
    ids = [kit.add_image(root, f"{i}.jpg", size_bytes=300_000) for i in range(12)]
    for file_id in ids:
        kit.slow(file_id, 200_000)
    import_id = await start(client, kit.link(root))
    deadline = asyncio.get_running_loop().time() + 30
    while not await fetch_rows(
        app_settings, "SELECT 1 FROM import_items WHERE import_id = $1 AND status = 'in_progress'", import_id
    ):
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.05)
    assert (await client.delete(f"/imports/{import_id}", json={})).status == 202
    await wait_gone(client, import_id)
    await asyncio.sleep(1.5)  # anything still in flight would land by now
    assert await fetch_rows(app_settings, "SELECT 1 FROM images WHERE import_id = $1", import_id) == []
    assert await stored_keys(storage, app_settings, kit.source) == []
    assert await storage.open_uploads(app_settings.s3_prefix_normalised) == []


async def test_deleting_one_image(client: Any, kit: SourceKit, storage: Storage, app_settings: AppSettings) -> None:
    root = kit.add_folder(None, "Two")
    kit.add_image(root, "a.jpg")
    kit.add_image(root, "b.jpg")
    body = await run_import(client, kit, root)
    images = (await (await client.get(f"/images?import_id={body['id']}")).json())["images"]
    target, other = images
    rows = await fetch_rows(app_settings, "SELECT * FROM images WHERE id = $1", target["id"])
    resp = await client.delete(f"/images/{target['id']}", json={})
    assert resp.status == 204
    assert (await client.get(f"/images/{target['id']}")).status == 404
    assert (await client.delete(f"/images/{target['id']}", json={})).status == 404
    try:
        await storage.size(rows[0]["storage_key"])
        raise AssertionError("the deleted image's object is still stored")
    except ObjectNotFound:
        pass
    assert (await client.get(other["url"])).status == 200


async def test_deletes_need_the_token_and_json(client: Any, kit: SourceKit) -> None:
    assert (await client.delete("/imports/1", data=b"", headers={"Content-Type": "text/plain"})).status == 415
    assert (await client.delete("/images/1", headers={"Sec-Fetch-Site": "cross-site"}, json={})).status == 403


async def fetch_rows(settings: AppSettings, query: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(settings.database_url)
    try:
        return list(await conn.fetch(query, *args))
    finally:
        await conn.close()


async def read_events(resp: Any, until: str, timeout_s: float = 60.0) -> list[tuple[str, str | None, Any]]:
    """Server-Sent Events as (event, id, data) until the named one arrives."""
    import json

    events: list[tuple[str, str | None, Any]] = []
    name, event_id, data = "", None, ""
    async with asyncio.timeout(timeout_s):
        async for raw in resp.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("id: "):
                event_id = line[4:]
            elif line.startswith("data: "):
                data = line[6:]
            elif line == "" and name:
                events.append((name, event_id, json.loads(data)))
                if name == until:
                    return events
                name, event_id, data = "", None, ""
    return events


async def test_progress_streams_as_server_sent_events(client: Any, kit: SourceKit) -> None:
    root = kit.add_folder(None, "Streamed")
    ids = [kit.add_image(root, f"{i}.jpg") for i in range(6)]
    kit.set_latency(0.05)
    import_id = await start(client, kit.link(root))
    resp = await client.get(f"/imports/{import_id}/events?after=0")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    events = await read_events(resp, "end")
    statuses = [data for name, _, data in events if name == "status"]
    assert statuses[-1]["status"] == "completed" and statuses[-1]["counts"]["imported"] == 6
    assert statuses[0]["id"] == import_id
    streamed = [image for name, _, data in events if name == "images" for image in data["images"]]
    assert sorted(image["source_id"] for image in streamed) == sorted(ids)
    last_id = [event_id for name, event_id, _ in events if name == "images"][-1]
    assert last_id == str(max(image["id"] for image in streamed))
    assert events[-1] == ("end", None, {"status": "completed"})

    # Resuming after the last image: nothing is sent twice.
    again = await client.get(f"/imports/{import_id}/events", headers={"Last-Event-ID": last_id})
    assert [name for name, _, _ in await read_events(again, "end")] == ["status", "end"]
    assert (await client.get("/imports/999999/events")).status == 404
