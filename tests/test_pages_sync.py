"""The pages of keeping folders in step, without a browser: the import page driven by Server-Sent
Events, the sync counts and removed files, deleting imports and images, and watches."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest

from conftest import RunningEmulator, wait_for_import
from fotoowl.config import AppSettings, Secret
from fotoowl.web.app import create_app
from source_kits import DriveKit
from test_pages import Elements, csrf_token, folder_link, run_import, submit

TOKEN = "s3cret-token"


@pytest.fixture
async def idle(app_settings: AppSettings, aiohttp_client: Any) -> Any:
    """The app without its worker: imports stay queued, watches are never checked."""
    return await aiohttp_client(create_app(app_settings, run_worker=False))


@pytest.fixture
async def locked(app_settings: AppSettings, aiohttp_client: Any) -> AsyncIterator[Any]:
    yield await aiohttp_client(create_app(app_settings.replace(api_token=Secret(TOKEN)), run_worker=False))


async def post(client: Any, path: str, csrf: str | None, **data: str) -> Any:
    if csrf is not None:
        data["csrf_token"] = csrf
    return await client.post(path, data=data, allow_redirects=False)


async def unlock(client: Any) -> str:
    token = await csrf_token(client, "/ui/unlock")
    resp = await post(client, "/ui/unlock", token, token=TOKEN, next="/")
    assert resp.status == 303
    return token


async def wait_until(check: Any, what: str, timeout_s: float = 60.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not (result := await check()):
        assert asyncio.get_running_loop().time() < deadline, f"{what} did not happen in {timeout_s} s"
        await asyncio.sleep(0.2)
    return result


# --- the import page: live through Server-Sent Events, counts, removed files ------------------------


async def test_the_import_page_goes_live_through_server_sent_events(idle: Any) -> None:
    resp = await submit(idle, folder_link("1QueuedForeverFolder_abcdef"))
    location = resp.headers["Location"]
    import_id = int(location.rsplit("/", 1)[1])
    html = await (await idle.get(location)).text()
    page = Elements(html)
    (script,) = [s["src"] for s in page.find("script") if "live.js" in s.get("src", "")]
    assert re.fullmatch(r"/static/live\.js\?v=[0-9a-f]{10}", script)
    asset = await idle.get(script)
    assert asset.status == 200 and "javascript" in asset.content_type
    assert "EventSource" in await asset.text()
    assert '<noscript><meta http-equiv="refresh"' in html  # no JavaScript: the page reloads itself

    # Until the stream drives it, the section polls; it says where its events and fragments are.
    section = page.find("section", id="progress")[0]
    assert section["data-live"] == f"/imports/{import_id}/events"
    assert section["data-poll-fragment"] == f"{location}/_progress?seen_failed=0"
    assert section["data-live-fragment"] == f"{location}/_progress?seen_failed=0&live=1"
    assert section["hx-trigger"] == "every 1s"

    # The fragment fetched on an event does not poll, and still knows its way back to polling.
    fragment = Elements(await (await idle.get(section["data-live-fragment"])).text())
    live = fragment.find("section", id="progress")[0]
    assert "hx-trigger" not in live and "hx-get" not in live
    assert live["data-live"] == f"/imports/{import_id}/events"
    assert live["data-poll-fragment"] == f"{location}/_progress?seen_failed=0"
    polled = Elements(await (await idle.get(section["data-poll-fragment"])).text())
    assert polled.find("section", id="progress")[0]["hx-trigger"] == "every 1s"

    # A finished import has nothing to stream.
    token = await csrf_token(idle)
    await post(idle, f"{location}/cancel", token)
    done = Elements(await (await idle.get(f"{location}/_progress?live=1")).text()).find("section", id="progress")[0]
    assert "data-live" not in done and "hx-trigger" not in done


async def test_sync_counts_and_removed_files_are_shown(client: Any, drive: RunningEmulator) -> None:
    kit = DriveKit(drive.emu, drive.api_url)
    root = kit.add_folder(None, "Synced")
    ids = [kit.add_image(root, f"{n}.jpg") for n in range(3)]
    await run_import(client, root)
    html = await (await client.get(f"/ui/imports/{await run_import(client, root)}")).text()
    assert re.search(r'id="count-unchanged">3<', html)
    assert re.search(r'id="count-imported">0<', html)
    assert re.search(r'id="count-deduplicated">0<', html)
    assert re.search(r'id="count-removed">0<', html)
    assert 'id="count-pruned"' not in html
    assert Elements(html).find("progress", value="100")  # unchanged files are done too
    assert not Elements(html).find("section", id="removed")
    home = await (await client.get("/")).text()
    assert "3 of 3 done (0 copied, 3 unchanged)" in " ".join(home.split())

    kit.remove(ids[0])
    kept_id = await run_import(client, root)
    html = await (await client.get(f"/ui/imports/{kept_id}")).text()
    page = Elements(html)
    assert re.search(r'id="count-removed">1<', html)
    removed = page.find("section", id="removed")[0]
    assert removed["hx-trigger"] == "failures-changed from:body"
    assert len(page.find("li", class_="removed-file")) == 1
    assert "0.jpg" in html and "Kept" in html
    image_links = [a["href"] for a in page.find("a") if a["href"].startswith("/ui/images/")]
    assert len(image_links) == 1
    fragment = await (await client.get(f"/ui/imports/{kept_id}/_removed")).text()
    assert Elements(fragment).find("section", id="removed") and "<html" not in fragment

    resp = await client.post("/imports", json={"folder_url": kit.link(root), "prune": True})
    pruned = await wait_for_import(client, (await resp.json())["import_id"])
    html = await (await client.get(f"/ui/imports/{pruned['id']}")).text()
    assert re.search(r'id="count-pruned">1<', html)
    assert "Its image was deleted too." in html
    assert "1 removed (1 pruned)" in " ".join((await (await client.get("/")).text()).split())


# --- deleting an import and an image ------------------------------------------------------------------


async def test_deleting_an_import_from_its_page(client: Any, drive: RunningEmulator) -> None:
    root = drive.emu.add_folder(None, "To delete")
    for n in range(2):
        drive.emu.add_image(root, f"{n}.jpg")
    import_id = await run_import(client, root)
    page = Elements(await (await client.get(f"/ui/imports/{import_id}")).text())
    assert page.find("a", href=f"/ui/imports/{import_id}/delete")

    resp = await client.get(f"/ui/imports/{import_id}/delete")
    assert resp.status == 200
    html = await resp.text()
    assert "2 stored images" in html
    confirm = Elements(html)
    assert confirm.find("form", method="post", action=f"/ui/imports/{import_id}/delete")
    assert confirm.find("a", href=f"/ui/imports/{import_id}")  # keep it

    assert (await post(client, f"/ui/imports/{import_id}/delete", None)).status == 403
    assert (await client.get(f"/imports/{import_id}")).status == 200
    token = Elements(html).find("input", name="csrf_token")[0]["value"]
    resp = await post(client, f"/ui/imports/{import_id}/delete", token)
    assert resp.status == 303
    assert resp.headers["Location"] == "/?deleted=1"
    home = await (await client.get(resp.headers["Location"])).text()
    assert Elements(home).find("p", id="deleted-notice")

    async def gone() -> bool:
        return bool((await client.get(f"/imports/{import_id}")).status == 404)

    await wait_until(gone, "the deletion")
    assert (await (await client.get(f"/images?import_id={import_id}")).json())["images"] == []
    assert (await client.get(f"/ui/imports/{import_id}/delete")).status == 404
    assert (await post(client, f"/ui/imports/{import_id}/delete", token)).status == 404


async def test_a_deleting_import_says_so(idle: Any) -> None:
    resp = await submit(idle, folder_link("1QueuedForeverFolder_abcdef"))
    location = resp.headers["Location"]
    token = await csrf_token(idle)
    assert (await post(idle, f"{location}/delete", token)).status == 303
    html = await (await idle.get(location)).text()  # no worker: it stays "deleting"
    page = Elements(html)
    assert page.find("section", id="progress")[0]["data-status"] == "deleting"
    assert "Deleting" in html and "is being deleted" in html
    assert not page.find("a", href=f"{location}/delete")
    # The home list watches it until it is gone.
    home = Elements(await (await idle.get("/")).text())
    assert home.find("div", id="imports")[0]["hx-trigger"] == "every 2s"
    # Asking again changes nothing; the confirmation is not offered again.
    assert (await post(idle, f"{location}/delete", token)).status == 303
    resp = await idle.get(f"{location}/delete", allow_redirects=False)
    assert (resp.status, resp.headers["Location"]) == (303, location)


async def test_deleting_needs_the_access_token_when_one_is_set(locked: Any) -> None:
    resp = await locked.post(
        "/imports",
        json={"folder_url": folder_link("1QueuedForeverFolder_abcdef")},
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    import_id = (await resp.json())["import_id"]
    page = Elements(await (await locked.get(f"/ui/imports/{import_id}")).text())
    assert not page.find("a", href=f"/ui/imports/{import_id}/delete")
    assert page.find("a", href=f"/ui/unlock?next=/ui/imports/{import_id}/delete")
    confirm = Elements(await (await locked.get(f"/ui/imports/{import_id}/delete")).text())
    assert not confirm.find("form", action=f"/ui/imports/{import_id}/delete")

    token = await csrf_token(locked, "/ui/unlock")
    resp = await post(locked, f"/ui/imports/{import_id}/delete", token)
    assert resp.status == 401
    assert (await (await locked.get(f"/imports/{import_id}")).json())["status"] == "queued"
    for path in ("/ui/images/1/delete", "/ui/watches/1/delete", "/ui/watches/1/pause"):
        assert (await post(locked, path, token)).status == 401, path

    await unlock(locked)
    assert Elements(await (await locked.get(f"/ui/imports/{import_id}")).text()).find(
        "a", href=f"/ui/imports/{import_id}/delete"
    )
    resp = await post(locked, f"/ui/imports/{import_id}/delete", token)
    assert resp.status == 303
    assert (await (await locked.get(f"/imports/{import_id}")).json())["status"] == "deleting"


async def test_deleting_an_image_from_its_page(client: Any, drive: RunningEmulator) -> None:
    root = drive.emu.add_folder(None, "Two")
    drive.emu.add_image(root, "keep.jpg")
    drive.emu.add_image(root, "drop.jpg")
    import_id = await run_import(client, root)
    images = {i["name"]: i for i in (await (await client.get(f"/images?import_id={import_id}")).json())["images"]}
    target = images["drop.jpg"]
    page = Elements(await (await client.get(f"/ui/images/{target['id']}")).text())
    assert page.find("a", href=f"/ui/images/{target['id']}/delete")

    html = await (await client.get(f"/ui/images/{target['id']}/delete")).text()
    assert "drop.jpg" in html
    assert Elements(html).find("form", action=f"/ui/images/{target['id']}/delete")
    assert (await post(client, f"/ui/images/{target['id']}/delete", "x" * 43)).status == 403
    token = Elements(html).find("input", name="csrf_token")[0]["value"]
    resp = await post(client, f"/ui/images/{target['id']}/delete", token)
    assert resp.status == 303
    assert resp.headers["Location"] == "/ui/gallery?deleted=1"
    gallery = await (await client.get(resp.headers["Location"])).text()
    assert "The image was deleted." in gallery
    assert {a["title"] for a in Elements(gallery).find("a", class_="tile")} == {"keep.jpg"}
    assert (await client.get(f"/images/{target['id']}")).status == 404
    assert (await client.get(f"/ui/images/{target['id']}/delete")).status == 404
    assert (await post(client, f"/ui/images/{target['id']}/delete", token)).status == 404
    assert (await client.get(images["keep.jpg"]["url"])).status == 200


# --- watches ------------------------------------------------------------------------------------------


async def test_a_watch_from_the_home_form_shows_what_its_syncs_store(client: Any, drive: RunningEmulator) -> None:
    kit = DriveKit(drive.emu, drive.api_url)
    root = kit.add_folder(None, "Wedding")
    for n in range(2):
        kit.add_image(root, f"first-{n}.jpg")
    home = Elements(await (await client.get("/")).text())
    assert home.find("input", type="checkbox", name="keep_in_step")
    assert home.find("input", name="interval_s", value="300")
    assert home.find("a", href="/ui/watches")  # the nav entry

    resp = await submit(client, kit.link(root), keep_in_step="on", interval_s="2")
    assert resp.status == 303, await resp.text()
    location = resp.headers["Location"]
    assert re.fullmatch(r"/ui/watches/\d+", location)
    watch_id = int(location.rsplit("/", 1)[1])
    watch = await (await client.get(f"/watches/{watch_id}")).json()
    assert (watch["interval_s"], watch["recursive"], watch["prune"]) == (2, True, False)

    async def synced() -> dict[str, Any] | None:
        body: dict[str, Any] = await (await client.get(f"/watches/{watch_id}")).json()
        last = body["last_sync"]
        return body if last and last["status"] == "completed" else None

    first = (await wait_until(synced, "the first sync"))["last_sync"]
    html = await (await client.get(location)).text()
    page = Elements(html)
    assert "Wedding" in html  # the folder's name, learnt by the sync
    tiles = page.find("a", class_="tile")
    assert len(tiles) == 2
    assert page.find("div", id="grid")
    assert page.find("a", href=f"/ui/imports/{first['import_id']}")
    assert "2 imported · 0 deduplicated · 0 unchanged · 0 removed" in " ".join(html.split())
    assert '<noscript><meta http-equiv="refresh"' in html
    live = page.find("section", id="watch-live")[0]
    assert live["hx-trigger"] == "every 3s"
    newest = max(int(t["href"].rsplit("/", 1)[1]) for t in tiles)
    assert live["hx-get"] == f"{location}/_live?after={newest}"
    assert page.find("form", action=f"{location}/pause")
    assert page.find("a", href=f"{location}/delete")

    # The polled fragment: nothing new yet, then the photo the next sync stores, for the top of the grid.
    fragment = Elements(await (await client.get(live["hx-get"])).text())
    assert fragment.find("section", id="watch-live")[0]["hx-get"] == live["hx-get"]
    assert fragment.find("h1", id="watch-title", hx_swap_oob="true")  # the folder's name, once known
    assert not fragment.find("div", id="new-tiles")
    kit.add_image(root, "arrived.jpg")

    async def arrived() -> Elements | None:
        got = Elements(await (await client.get(live["hx-get"])).text())
        return got if got.find("div", id="new-tiles") else None

    fragment = await wait_until(arrived, "the new photo")
    assert fragment.find("div", id="new-tiles")[0]["hx-swap-oob"] == "afterbegin:#grid"
    (new_tile,) = fragment.find("a", class_="tile")
    assert new_tile["title"] == "arrived.jpg"
    after = fragment.find("section", id="watch-live")[0]["hx-get"]
    assert after == f"{location}/_live?after={new_tile['href'].rsplit('/', 1)[1]}"
    grid = Elements(await (await client.get(f"{location}/_grid")).text())
    assert len(grid.find("a", class_="tile")) == 3

    # Listed with its last sync, and paused, resumed and deleted from the pages.
    listing = await (await client.get("/ui/watches")).text()
    row = Elements(listing).find("li", id=f"watch-{watch_id}")[0]
    assert row["data-state"] in ("watching", "syncing")
    token = await csrf_token(client, "/ui/watches")
    resp = await post(client, f"{location}/pause", token, back="list")
    assert (resp.status, resp.headers["Location"]) == (303, "/ui/watches?done=paused")
    listing = await (await client.get(resp.headers["Location"])).text()
    assert "The watch is paused" in listing
    assert Elements(listing).find("li", id=f"watch-{watch_id}")[0]["data-state"] == "paused"
    assert Elements(listing).find("form", action=f"{location}/resume")
    paused = Elements(await (await client.get(location)).text())
    assert "hx-trigger" not in paused.find("section", id="watch-live")[0]
    resp = await post(client, f"{location}/resume", token)
    assert (resp.status, resp.headers["Location"]) == (303, f"{location}?done=resumed")
    assert (await (await client.get(f"/watches/{watch_id}")).json())["state"] != "paused"

    confirm = Elements(await (await client.get(f"{location}/delete")).text())
    assert confirm.find("form", action=f"{location}/delete")
    resp = await post(client, f"{location}/delete", token)
    assert (resp.status, resp.headers["Location"]) == (303, "/ui/watches?done=deleted")
    assert (await client.get(f"/watches/{watch_id}")).status == 404
    assert (await client.get(location)).status == 404
    # The imports it started stay.
    assert (await client.get(f"/imports/{first['import_id']}")).status == 200


async def test_a_watch_from_the_watches_page(idle: Any, app_settings: AppSettings) -> None:
    page = Elements(await (await idle.get("/ui/watches")).text())
    form = page.find("form", id="watch-form")[0]
    assert (form["method"], form["action"]) == ("post", "/ui/watches")
    interval = page.find("input", name="interval_s")[0]
    assert interval["min"] == str(app_settings.watch_min_interval_s)
    assert page.find("a", href="/ui/watches", **{"aria-current": "page"})

    token = await csrf_token(idle, "/ui/watches")
    link = folder_link("1WatchedFolderId_abcdefghijk")
    resp = await post(idle, "/ui/watches", token, folder_url=link, interval_s="60", prune="on")
    assert resp.status == 303
    watch_id = int(resp.headers["Location"].rsplit("/", 1)[1])
    body = await (await idle.get(f"/watches/{watch_id}")).json()
    assert (body["interval_s"], body["recursive"], body["prune"]) == (60, False, True)

    # Never checked yet (no worker here): the list polls until its first check.
    html = await (await idle.get("/ui/watches")).text()
    listing = Elements(html)
    assert listing.find("div", id="watches")[0]["hx-trigger"] == "every 2s"
    assert "No sync yet: the first check starts one." in html
    fragment = await (await idle.get("/ui/_watches")).text()
    assert "<html" not in fragment and Elements(fragment).find("li", id=f"watch-{watch_id}")
    watch_page = Elements(await (await idle.get(f"/ui/watches/{watch_id}")).text())
    assert watch_page.find("p", id="grid-empty")
    assert watch_page.find("div", id="grid")

    resp = await post(idle, f"/ui/watches/{watch_id}/check", token)
    assert (resp.status, resp.headers["Location"]) == (303, f"/ui/watches/{watch_id}?done=checking")
    for action in ("pause", "resume", "check", "delete"):
        assert (await post(idle, f"/ui/watches/{watch_id}/{action}", None)).status == 403, action
        assert (await post(idle, f"/ui/watches/999999/{action}", token)).status == 404, action
    for path in ("/ui/watches/999999", "/ui/watches/999999/_live", "/ui/watches/abc", "/ui/watches/999999/delete"):
        resp = await idle.get(path)
        assert (resp.status, resp.content_type) == (404, "text/html"), path
    # What the pages read from the query string: refused with a page, or ignored; never a 500.
    for path, status in (
        (f"/ui/watches/{watch_id}?cursor=not-a-cursor", 400),
        (f"/ui/watches/{watch_id}/_grid?cursor=not-a-cursor", 400),
        (f"/ui/watches/{watch_id}/_live?after=%00", 200),
        (f"/ui/watches/{watch_id}/_live?after=" + "9" * 400, 200),
        (f"/ui/watches/{watch_id}?done=%3Cscript%3E", 200),
        ("/ui/watches?done=deleted%00", 200),
    ):
        resp = await idle.get(path)
        assert (resp.status, resp.content_type) == (status, "text/html"), path
        assert "<script>" not in await resp.text()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"folder_url": "https://example.com/folders/abc", "interval_s": "60"}, "Paste the link of a shared"),
        ({"folder_url": folder_link("1WatchedFolderId_abcdefghijk"), "interval_s": "1"}, "at least 2"),
        ({"folder_url": folder_link("1WatchedFolderId_abcdefghijk"), "interval_s": "soon"}, "whole number"),
        ({"folder_url": folder_link("1WatchedFolderId_abcdefghijk"), "interval_s": "9" * 40}, "whole number"),
    ],
)
async def test_bad_watch_forms_are_shown_again_with_the_reason(idle: Any, fields: dict[str, str], message: str) -> None:
    token = await csrf_token(idle, "/ui/watches")
    resp = await post(idle, "/ui/watches", token, recursive="on", **fields)
    assert resp.status == 422
    html = await resp.text()
    assert message in html
    page = Elements(html)
    assert page.find("p", id="watch-error", role="alert")
    assert page.find("input", name="folder_url", value=fields["folder_url"])
    assert page.find("input", name="interval_s", value=fields["interval_s"][:20])
    assert page.find("input", type="checkbox", name="recursive", checked="")

    # The home form's "Keep this folder in step" says the same, and keeps the box ticked.
    resp = await submit(idle, fields["folder_url"], token, keep_in_step="on", interval_s=fields["interval_s"])
    assert resp.status == 422
    html = await resp.text()
    assert message in html
    assert Elements(html).find("input", name="keep_in_step", checked="")
    assert (await (await idle.get("/watches")).json())["watches"] == []
    assert (await (await idle.get("/imports")).json())["imports"] == []


async def test_the_watches_page_is_locked_without_the_token(locked: Any) -> None:
    html = await (await locked.get("/ui/watches")).text()
    page = Elements(html)
    assert not page.find("form", id="watch-form")
    assert page.find("a", href="/ui/unlock?next=/ui/watches")
    token = await csrf_token(locked, "/ui/unlock")
    link = folder_link("1WatchedFolderId_abcdefghijk")
    resp = await post(locked, "/ui/watches", token, folder_url=link, interval_s="60")
    assert resp.status == 401
    await unlock(locked)
    resp = await post(locked, "/ui/watches", token, folder_url=link, interval_s="60")
    assert resp.status == 303
