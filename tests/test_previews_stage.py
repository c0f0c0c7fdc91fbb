"""Previews as a stage of their own: an import completes once its originals are stored and recorded;
previews follow, made by every worker's preview lane from the stored originals, with their own counts.

Most tests run the pipeline's stages by hand on a process without a lane (so "pending" can be seen
and the order checked), and a web app without workers to read the answers and pages."""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
from PIL import Image as PILImage

from conftest import RunningEmulator, wait_for_import, wait_for_previews
from fotoowl.config import AppSettings
from fotoowl.db import create_pool as create_db_pool
from fotoowl.pipeline import control, listing, preview_lane, previews, transfer
from fotoowl.pipeline.deps import Deps
from fotoowl.sources.links import parse_link
from fotoowl.storage import ObjectNotFound, Storage
from fotoowl.storage_backends import open_storage
from fotoowl.testing.images import render_image
from fotoowl.web.app import create_app
from fotoowl.worker import create_arq_pool, http_session, make_deps

PENDING_TILE = 'class="placeholder pending"'


def drive_link(folder_id: str) -> str:
    return f"https://drive.google.com/drive/folders/{folder_id}?usp=sharing"


@contextlib.asynccontextmanager
async def process_without_lane(settings: AppSettings) -> AsyncIterator[Deps]:
    """What a worker process owns (worker.open_deps) but its preview lane: previews stay pending."""
    async with contextlib.AsyncExitStack() as stack:
        pool = await create_db_pool(settings)
        stack.push_async_callback(pool.close)
        redis = await create_arq_pool(settings, patient=True)
        stack.push_async_callback(redis.aclose)
        storage = await stack.enter_async_context(open_storage(settings))
        session = await stack.enter_async_context(http_session(settings))
        deps = make_deps(settings, pool, redis, storage, session)
        stack.callback(deps.close)
        yield deps


async def import_by_hand(deps: Deps, folder_id: str) -> int:
    """List and copy a folder in this process, to the import's end; returns its id."""
    created = await control.create_import(deps.pool, deps.redis, parse_link(drive_link(folder_id)))
    await listing.list_import(deps, created["id"])
    await transfer.transfer_import(deps, created["id"])
    return int(created["id"])


async def make_all_previews(deps: Deps) -> int:
    made = 0
    while claimed := await preview_lane.make_batch(deps):
        made += claimed
    return made


async def no_worker_app(aiohttp_client: Any, settings: AppSettings) -> Any:
    return await aiohttp_client(create_app(settings.replace(embedded_workers=False)))


async def import_json(client: Any, import_id: int) -> dict[str, Any]:
    resp = await client.get(f"/imports/{import_id}")
    assert resp.status == 200
    body: dict[str, Any] = await resp.json()
    return body


async def images_json(client: Any, import_id: int) -> list[dict[str, Any]]:
    body = await (await client.get(f"/images?import_id={import_id}&limit=500")).json()
    images: list[dict[str, Any]] = body["images"]
    return images


async def test_the_import_completes_with_previews_pending_then_they_are_made(
    app_settings: AppSettings, drive: RunningEmulator, storage: Storage, aiohttp_client: Any
) -> None:
    root = drive.emu.add_folder(None, "Shoot")
    for n in range(12):
        drive.emu.add_image(root, f"IMG_{n:02d}.jpg", width=640, height=480)
    client = await no_worker_app(aiohttp_client, app_settings)
    async with process_without_lane(app_settings) as deps:
        import_id = await import_by_hand(deps, root)

        # Every original is stored and recorded, the import is over, and no preview exists yet.
        body = await import_json(client, import_id)
        assert body["status"] == "completed", body
        assert body["counts"]["imported"] == 12
        assert body["previews"] == {"done": 0, "pending": 12, "none": 0}
        images = await images_json(client, import_id)
        assert [(i["preview_status"], i["preview_reason"], i["thumbnail_url"]) for i in images] == [
            ("pending", None, None)
        ] * 12
        thumbnails = f"{app_settings.s3_prefix_normalised}thumbnails/"
        assert [key async for key in storage.list_keys(thumbnails)] == []
        resp = await client.get(f"/images/{images[0]['id']}/thumbnail")
        assert resp.status == 404

        assert await make_all_previews(deps) == 12

    body = await import_json(client, import_id)
    assert body["previews"] == {"done": 12, "pending": 0, "none": 0}
    assert body["status"] == "completed"
    for image in await images_json(client, import_id):
        assert (image["preview_status"], image["preview_reason"]) == ("done", None)
        assert image["thumbnail_url"] == f"/images/{image['id']}/thumbnail"
        resp = await client.get(image["thumbnail_url"])
        assert (resp.status, resp.content_type) == (200, "image/jpeg")
        assert (await resp.read())[:2] == b"\xff\xd8"
    assert len([key async for key in storage.list_keys(thumbnails)]) == 12


async def test_the_embedded_workers_make_every_preview_after_the_import(
    client: Any, drive: RunningEmulator, app_settings: AppSettings
) -> None:
    root = drive.emu.add_folder(None, "Party")
    for n in range(20):
        drive.emu.add_image(root, f"P_{n:02d}.jpg", width=320, height=200)
    resp = await client.post("/imports", json={"folder_url": drive_link(root)})
    import_id = (await resp.json())["import_id"]
    finished = await wait_for_import(client, import_id)
    assert finished["status"] == "completed"
    assert sum(finished["previews"].values()) == 20
    body = await wait_for_previews(client, import_id)
    assert body["previews"] == {"done": 20, "pending": 0, "none": 0}
    images = await images_json(client, import_id)
    assert {i["preview_status"] for i in images} == {"done"}
    assert all(i["thumbnail_url"] for i in images)


async def test_an_undecodable_image_ends_with_no_preview_and_a_placeholder(
    app_settings: AppSettings, drive: RunningEmulator, aiohttp_client: Any
) -> None:
    root = drive.emu.add_folder(None, "Mixed")
    drive.emu.add_image(root, "fine.jpg")
    drive.emu.add_file(root, "not-really.jpg", "image/jpeg", b"This is text, not a JPEG.\n")
    client = await no_worker_app(aiohttp_client, app_settings)
    async with process_without_lane(app_settings) as deps:
        import_id = await import_by_hand(deps, root)
        html = await (await client.get(f"/ui/gallery?import_id={import_id}")).text()
        assert html.count(PENDING_TILE) == 2
        assert "Preview coming" in html
        await make_all_previews(deps)

    body = await import_json(client, import_id)
    assert body["previews"] == {"done": 1, "pending": 0, "none": 1}
    by_name = {i["name"]: i for i in await images_json(client, import_id)}
    assert (by_name["not-really.jpg"]["preview_status"], by_name["not-really.jpg"]["preview_reason"]) == (
        "none",
        "undecodable",
    )
    assert by_name["not-really.jpg"]["thumbnail_url"] is None
    assert by_name["fine.jpg"]["preview_status"] == "done"
    html = await (await client.get(f"/ui/gallery?import_id={import_id}")).text()
    assert PENDING_TILE not in html
    assert html.count('class="placeholder"') == 1  # the undecodable one: no preview, for good
    assert len(re.findall(r'<img src="/images/\d+/thumbnail"', html)) == 1
    page = await (await client.get(f"/ui/imports/{import_id}")).text()
    assert re.search(r'id="count-previews">1\s*</dd>', page), page


async def test_previews_of_a_worker_that_died_are_made_by_another(
    app_settings: AppSettings, drive: RunningEmulator
) -> None:
    root = drive.emu.add_folder(None, "Lost")
    for n in range(6):
        drive.emu.add_image(root, f"L_{n}.jpg")
    async with process_without_lane(app_settings) as deps:
        import_id = await import_by_hand(deps, root)
        # A lane claims them and is SIGKILLed: nothing is recorded, nothing handed back.
        dead = await previews.claim_previews(deps.pool, uuid.uuid4(), 32, previews.lease_s(deps))
        assert len(dead) == 6
        assert await preview_lane.make_batch(deps) == 0, "leased previews are not claimed again"
        # Its lease runs out (30 s here; made to have run out now).
        await deps.pool.execute("UPDATE images SET preview_lease_expires_at = now() - interval '1 second'")
        assert await make_all_previews(deps) == 6
        rows = await deps.pool.fetch("SELECT preview_status, preview_attempts, preview_lease_token FROM images")
        assert [tuple(r) for r in rows] == [("done", 2, None)] * 6
        counts = await deps.pool.fetchrow("SELECT * FROM imports WHERE id = $1", import_id)
        assert (counts["previews_done_count"], counts["previews_pending_count"]) == (6, 0)


async def until_previews_are_claimed(deps: Deps) -> None:
    """Wait (up to 30 s) until a lane holds some previews under its lease."""
    deadline = asyncio.get_running_loop().time() + 30
    while not await deps.pool.fetchval("SELECT count(*) FROM images WHERE preview_lease_token IS NOT NULL"):
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.005)


async def test_a_lane_cancelled_mid_batch_hands_its_previews_back(
    app_settings: AppSettings, drive: RunningEmulator
) -> None:
    root = drive.emu.add_folder(None, "Many")
    for n in range(40):
        drive.emu.add_image(root, f"M_{n:02d}.jpg", width=1600, height=1200)
    async with process_without_lane(app_settings) as deps:
        import_id = await import_by_hand(deps, root)
        batch = asyncio.create_task(preview_lane.make_batch(deps, limit=40))
        await until_previews_are_claimed(deps)
        batch.cancel()
        await asyncio.gather(batch, return_exceptions=True)
        rows = await deps.pool.fetch(
            "SELECT preview_status, preview_attempts, preview_lease_token, preview_lease_expires_at FROM images"
        )
        # Nothing left claimed: what was made is recorded, the rest is pending again with its try given back.
        assert all(r["preview_lease_token"] is None for r in rows)
        assert all(r["preview_status"] == "done" or r["preview_attempts"] == 0 for r in rows)
        assert await make_all_previews(deps) == sum(r["preview_status"] == "pending" for r in rows)
        counts = await deps.pool.fetchrow("SELECT * FROM imports WHERE id = $1", import_id)
        assert (counts["previews_done_count"], counts["previews_pending_count"]) == (40, 0)


async def test_copies_come_first_previews_trickle_beside_them(
    app_settings: AppSettings, drive: RunningEmulator
) -> None:
    root = drive.emu.add_folder(None, "Busy")
    for n in range(40):
        drive.emu.add_image(root, f"B_{n:02d}.jpg", width=1600, height=1200)
    async with process_without_lane(app_settings) as deps:
        import_id = await import_by_hand(deps, root)
        batch = asyncio.create_task(preview_lane.make_batch(deps))
        await until_previews_are_claimed(deps)
        await deps.claim_room.reserve(1)  # this process starts copying
        assert await batch == 40
        rows = await deps.pool.fetch("SELECT preview_status, preview_attempts, preview_lease_token FROM images")
        # What had not started went back, its try given back; what was under way was finished.
        assert all(r["preview_lease_token"] is None for r in rows)
        assert all(r["preview_status"] == "done" or r["preview_attempts"] == 0 for r in rows)
        pending = sum(r["preview_status"] == "pending" for r in rows)
        # While it copies, one at a time.
        assert await preview_lane.make_batch(deps) == min(1, pending)
        deps.claim_room.give_back(1)
        await make_all_previews(deps)
        counts = await deps.pool.fetchrow("SELECT * FROM imports WHERE id = $1", import_id)
        assert (counts["previews_done_count"], counts["previews_pending_count"]) == (40, 0)


async def test_a_changed_file_gets_a_new_preview_under_the_import_that_copied_it(
    app_settings: AppSettings, drive: RunningEmulator, aiohttp_client: Any
) -> None:
    root = drive.emu.add_folder(None, "Sync")
    ids = [drive.emu.add_image(root, f"S_{n}.jpg") for n in range(3)]
    client = await no_worker_app(aiohttp_client, app_settings)
    async with process_without_lane(app_settings) as deps:
        first = await import_by_hand(deps, root)
        await make_all_previews(deps)
        drive.emu.replace_content(ids[1], render_image("jpeg", 200, 100, 77))
        second = await import_by_hand(deps, root)
        # The image is the second import's now, its preview to be made again from the new bytes.
        assert (await import_json(client, first))["previews"] == {"done": 2, "pending": 0, "none": 0}
        assert (await import_json(client, second))["previews"] == {"done": 0, "pending": 1, "none": 0}
        (changed,) = await images_json(client, second)
        assert (changed["preview_status"], changed["thumbnail_url"]) == ("pending", None)
        await make_all_previews(deps)
    (changed,) = await images_json(client, second)
    assert changed["preview_status"] == "done"
    thumbnail = await (await client.get(changed["thumbnail_url"])).read()
    with PILImage.open(io.BytesIO(thumbnail)) as made:
        assert made.size == (200, 100), "the preview of the new bytes"
    assert (await import_json(client, second))["previews"] == {"done": 1, "pending": 0, "none": 0}


async def test_a_preview_made_for_an_image_deleted_meanwhile_is_not_left_behind(
    app_settings: AppSettings, drive: RunningEmulator, storage: Storage
) -> None:
    root = drive.emu.add_folder(None, "Gone")
    drive.emu.add_image(root, "gone.jpg")
    async with process_without_lane(app_settings) as deps:
        await import_by_hand(deps, root)
        token = uuid.uuid4()
        (pending,) = await previews.claim_previews(deps.pool, token, 32, previews.lease_s(deps))
        made = await previews.make_preview(deps, pending)
        assert isinstance(made, previews.PreviewMade) and made.thumbnail_key
        assert await storage.size(made.thumbnail_key) > 0
        await deps.pool.execute("DELETE FROM images")
        recorded = await previews.record_previews(deps.pool, token, [made])
        assert recorded == set()
        assert await previews.drop_strays(deps, [made], recorded) == 1
        try:
            await storage.size(made.thumbnail_key)
            raise AssertionError("the stray preview is still stored")
        except ObjectNotFound:
            pass


async def test_counts_follow_every_change_of_an_image(app_settings: AppSettings) -> None:
    """The counts are kept by triggers: inserts, upserts that move an image to another import, updates
    and deletes, whichever statement makes them."""
    conn = await asyncpg.connect(app_settings.database_url)
    try:
        a, b = [
            await conn.fetchval("INSERT INTO imports (folder_id, folder_url) VALUES ('f', 'u') RETURNING id")
            for _ in range(2)
        ]
        upsert = """INSERT INTO images (source, source_id, name, size, mime_type, storage_path, storage_key,
                                        import_id, preview_status)
                    SELECT 'dropbox', x, x, 1, 'image/jpeg', 'p', 'k', $1, $3 FROM unnest($2::text[]) x
                    ON CONFLICT (source, source_id) DO UPDATE SET import_id = EXCLUDED.import_id,
                                                                  preview_status = EXCLUDED.preview_status"""

        async def counts() -> list[tuple[int, int, int]]:
            rows = await conn.fetch(
                """SELECT previews_done_count, previews_pending_count, previews_none_count FROM imports
                   ORDER BY id"""
            )
            return [tuple(r) for r in rows]

        await conn.execute(upsert, a, ["x1", "x2", "x3"], "pending")
        await conn.execute(upsert, a, ["x4"], "done")
        assert await counts() == [(1, 3, 0), (0, 0, 0)]
        await conn.execute(upsert, b, ["x1", "x4", "x5"], "pending")  # b takes x1 and x4 over
        assert await counts() == [(0, 2, 0), (0, 3, 0)]
        await conn.execute("UPDATE images SET preview_status = 'none' WHERE source_id IN ('x1', 'x2')")
        await conn.execute("UPDATE images SET preview_attempts = preview_attempts + 1")  # no state change
        assert await counts() == [(0, 1, 1), (0, 2, 1)]
        await conn.execute("DELETE FROM images WHERE source_id IN ('x3', 'x5')")
        assert await counts() == [(0, 0, 1), (0, 1, 1)]
    finally:
        await conn.close()
