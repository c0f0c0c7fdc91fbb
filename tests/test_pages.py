"""The HTML pages without a browser: forms, fragments, escaping and errors, on the real stack."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from typing import Any

import pytest

from conftest import RunningEmulator, wait_for_import, wait_for_previews
from fotoowl.config import AppSettings, Secret
from fotoowl.testing.drive_emulator import Fault
from fotoowl.web.app import create_app
from fotoowl.web.keys import DEMO_FOLDERS
from fotoowl.web.security import CSRF_COOKIE, UNLOCK_COOKIE

HOSTILE = "<script>alert(1)</script>.png"


# --- helpers ----------------------------------------------------------------------------------------


class Elements(HTMLParser):
    """Every start tag with its attributes, in document order: enough to check a page's structure."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))

    def find(self, tag: str, **attrs: str) -> list[dict[str, str]]:
        wanted = {k.rstrip("_").replace("_", "-"): v for k, v in attrs.items()}
        return [a for t, a in self.tags if t == tag and all(a.get(k) == v for k, v in wanted.items())]


def folder_link(folder_id: str) -> str:
    return f"https://drive.google.com/drive/folders/{folder_id}"


async def csrf_token(client: Any, path: str = "/") -> str:
    """Visit a page with a form like a browser: the cookie holds a session id, the form its signed token."""
    resp = await client.get(path)
    assert resp.status == 200
    field = Elements(await resp.text()).find("input", name="csrf_token")[0]["value"]
    cookie = client.session.cookie_jar.filter_cookies(client.make_url("/"))[CSRF_COOKIE].value
    assert field and cookie and field != cookie
    return field


async def submit(client: Any, folder_url: str, token: str | None = None, **extra: str) -> Any:
    data = {"folder_url": folder_url, "recursive": "on", **extra}
    data["csrf_token"] = token if token is not None else await csrf_token(client)
    return await client.post("/ui/imports", data=data, allow_redirects=False)


async def run_import(client: Any, folder_id: str) -> int:
    resp = await submit(client, folder_link(folder_id))
    assert resp.status == 303, await resp.text()
    import_id = int(resp.headers["Location"].rsplit("/", 1)[1])
    body = await wait_for_import(client, import_id)
    assert body["status"] in ("completed", "completed_with_errors"), body
    # The pages show previews, which follow the import.
    await wait_for_previews(client, import_id)
    return import_id


@pytest.fixture
async def idle_client(app_settings: AppSettings, aiohttp_client: Any) -> Any:
    """The app without its worker: imports stay queued, so an active import can be looked at."""
    return await aiohttp_client(create_app(app_settings, run_worker=False))


@pytest.fixture
async def locked_client(app_settings: AppSettings, aiohttp_client: Any) -> AsyncIterator[Any]:
    yield await aiohttp_client(create_app(app_settings.replace(api_token=Secret("s3cret-token"))))


# --- home and the form flow ---------------------------------------------------------------------------


async def test_home_shows_the_form_and_sets_a_csrf_cookie(client: Any) -> None:
    resp = await client.get("/")
    assert resp.status == 200
    assert resp.content_type == "text/html"
    html = await resp.text()
    page = Elements(html)
    form = page.find("form", id="import-form")[0]
    assert (form["method"], form["action"]) == ("post", "/ui/imports")
    assert page.find("input", name="folder_url")
    assert page.find("input", type="checkbox", name="recursive")[0].get("checked") is not None
    assert "No imports yet" in html
    assert not page.find("div", id="demo")

    cookie = resp.cookies[CSRF_COOKIE]
    assert cookie["httponly"] is True
    assert cookie["samesite"] == "Lax"
    token = page.find("input", name="csrf_token")[0]["value"]
    assert token and token != cookie.value  # signed from the cookie, never a copy of it
    assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
    assert resp.headers["Cache-Control"] == "no-store"

    # The same client keeps its token.
    again = await client.get("/")
    assert CSRF_COOKIE not in again.cookies
    assert Elements(await again.text()).find("input", name="csrf_token")[0]["value"] == token


async def test_static_assets_are_served(client: Any) -> None:
    html = await (await client.get("/")).text()
    css = Elements(html).find("link", rel="stylesheet")[0]["href"]
    assert re.fullmatch(r"/static/app\.css\?v=[0-9a-f]{10}", css)
    resp = await client.get(css)
    assert resp.status == 200
    assert resp.content_type == "text/css"


async def test_demo_mode_offers_the_sample_folder(app_settings: AppSettings, aiohttp_client: Any) -> None:
    app = create_app(app_settings, run_worker=False)
    sample = folder_link("1SampleFolderId_abcdefghijk")
    app[DEMO_FOLDERS] = {"Google Drive": sample}
    client = await aiohttp_client(app)
    html = await (await client.get("/")).text()
    page = Elements(html)
    assert page.find("div", id="demo")
    assert page.find("input", type="hidden", name="folder_url", value=sample)
    assert "Import the sample folder" in html
    resp = await submit(client, sample)
    assert resp.status == 303
    assert re.fullmatch(r"/ui/imports/\d+", resp.headers["Location"])


async def test_form_flow_without_javascript(client: Any, drive: RunningEmulator) -> None:
    root = drive.emu.add_folder(None, "Holiday")
    for day in ("Day 1", "Day 2"):
        sub = drive.emu.add_folder(root, day)
        for n in range(2):
            drive.emu.add_image(sub, f"{day}-{n}.jpg")

    resp = await submit(client, folder_link(root))
    assert resp.status == 303
    location = resp.headers["Location"]
    assert re.fullmatch(r"/ui/imports/\d+", location)
    import_id = int(location.rsplit("/", 1)[1])

    page = await client.get(location)
    assert page.status == 200
    assert Elements(await page.text()).find("section", id="progress")

    await wait_for_import(client, import_id)
    html = await (await client.get(location)).text()
    page_el = Elements(html)
    progress = page_el.find("section", id="progress")[0]
    assert progress["data-status"] == "completed"
    assert "hx-trigger" not in progress
    assert "Holiday" in html
    assert page_el.find("a", href=f"/ui/gallery?import_id={import_id}")
    assert re.search(r'id="count-imported">4<', html)
    assert 'http-equiv="refresh"' not in html  # nothing left to watch

    home = await (await client.get("/")).text()
    assert Elements(home).find("a", href=location, class_="import-row")
    assert 'hx-trigger="every 2s"' not in home


@pytest.mark.parametrize(
    ("link", "message"),
    [
        ("https://example.com/drive/folders/abc", "Paste the link of a shared Google Drive or Dropbox folder"),
        ("https://docs.google.com/document/d/abc/edit", "not a Drive folder"),
        ("", "Paste the link of a shared Google Drive or Dropbox folder"),
    ],
)
async def test_a_bad_link_shows_the_form_again_with_the_reason(client: Any, link: str, message: str) -> None:
    resp = await submit(client, link)
    assert resp.status == 422
    html = await resp.text()
    assert message in html
    page = Elements(html)
    assert page.find("p", id="folder-error", role="alert")
    assert page.find("input", name="folder_url", value=link)
    assert (await (await client.get("/imports")).json())["imports"] == []


async def test_the_typed_link_is_escaped_when_shown_again(client: Any) -> None:
    resp = await submit(client, '"><script>alert(1)</script>')
    assert resp.status == 422
    html = await resp.text()
    assert "<script>alert(1)" not in html
    assert "&#34;&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in html


# --- CSRF and the access token ---------------------------------------------------------------------


async def test_forms_without_the_matching_csrf_token_are_refused(client: Any, idle_client: Any) -> None:
    link = folder_link("1SomeFolderId_abcdefghijklm")
    token = await csrf_token(client)
    for data in (
        {"folder_url": link},
        {"folder_url": link, "csrf_token": "x" * 43},
        {"folder_url": link, "csrf_token": ""},
    ):
        resp = await client.post("/ui/imports", data=data, allow_redirects=False)
        assert resp.status == 403
        assert resp.content_type == "text/html"
        assert "came from another site" in await resp.text()
    # The right token without its cookie (another site's form posting a stolen value) is no better.
    client.session.cookie_jar.clear()
    resp = await client.post("/ui/imports", data={"folder_url": link, "csrf_token": token}, allow_redirects=False)
    assert resp.status == 403
    assert (await (await client.get("/imports")).json())["imports"] == []

    resp = await submit(idle_client, link)
    import_id = int(resp.headers["Location"].rsplit("/", 1)[1])
    for action in ("retry", "cancel"):
        resp = await idle_client.post(f"/ui/imports/{import_id}/{action}", data={}, allow_redirects=False)
        assert resp.status == 403
    assert (await (await idle_client.get(f"/imports/{import_id}")).json())["status"] == "queued"


async def test_with_an_api_token_the_ui_must_be_unlocked(locked_client: Any, drive: RunningEmulator) -> None:
    client = locked_client
    link = folder_link(drive.emu.add_folder(None, "Private"))
    html = await (await client.get("/")).text()
    assert not Elements(html).find("form", id="import-form")
    assert Elements(html).find("a", href="/ui/unlock?next=/")

    token = await csrf_token(client, "/ui/unlock")
    resp = await submit(client, link, token)
    assert resp.status == 401
    assert "access token" in await resp.text()

    resp = await client.post(
        "/ui/unlock", data={"csrf_token": token, "token": "wrong", "next": "/"}, allow_redirects=False
    )
    assert resp.status == 401
    assert "not this server" in await resp.text()
    resp = await client.post("/ui/unlock", data={"token": "s3cret-token", "next": "/"}, allow_redirects=False)
    assert resp.status == 403  # the unlock form is CSRF-protected too

    resp = await client.post(
        "/ui/unlock",
        data={"csrf_token": token, "token": "s3cret-token", "next": "//evil.example/"},
        allow_redirects=False,
    )
    assert resp.status == 303
    assert resp.headers["Location"] == "/"  # no open redirect
    cookie = resp.cookies[UNLOCK_COOKIE]
    assert cookie["httponly"] is True
    assert "s3cret-token" not in cookie.value

    resp = await submit(client, link, token)
    assert resp.status == 303
    # The JSON API still wants the Bearer token: the UI cookie is not a way around it.
    resp = await client.post("/import/google-drive", json={"folder_url": link})
    assert resp.status == 401

    resp = await client.post("/ui/lock", data={"csrf_token": token}, allow_redirects=False)
    assert resp.status == 303
    assert (await submit(client, link, token)).status == 401


# --- the import page and its fragments ------------------------------------------------------------


async def test_progress_fragment_polls_while_active_and_stops_when_finished(idle_client: Any) -> None:
    client = idle_client
    resp = await submit(client, folder_link("1QueuedForeverFolder_abcdef"))
    location = resp.headers["Location"]
    import_id = int(location.rsplit("/", 1)[1])

    html = await (await client.get(location)).text()
    assert '<noscript><meta http-equiv="refresh"' in html  # the no-JS fallback
    page = Elements(html)
    assert page.find("a", href=location, class_="quiet refresh")
    assert page.find("form", action=f"{location}/cancel")
    assert not page.find("form", action=f"{location}/retry")

    resp = await client.get(f"{location}/_progress?seen_failed=0")
    assert resp.status == 200
    assert "HX-Trigger" not in resp.headers
    fragment = await resp.text()
    assert "<html" not in fragment
    section = Elements(fragment).find("section", id="progress")[0]
    assert section["data-status"] == "queued"
    assert section["hx-trigger"] == "every 1s"
    assert section["hx-swap"] == "outerHTML"
    assert section["hx-get"] == f"{location}/_progress?seen_failed=0"
    for name in ("found", "imported", "skipped", "failed", "pending"):
        assert Elements(fragment).find("dd", id=f"count-{name}")
    # The heading outside the fragment is updated out of band (the folder's name arrives later).
    assert Elements(fragment).find("h1", id="import-title", hx_swap_oob="true")

    # A changed failure count tells the failures list to reload.
    resp = await client.get(f"{location}/_progress?seen_failed=3")
    assert resp.headers["HX-Trigger"] == "failures-changed"

    token = await csrf_token(client)
    resp = await client.post(f"{location}/cancel", data={"csrf_token": token}, allow_redirects=False)
    assert resp.status == 303
    assert resp.headers["Location"] == f"{location}?cancelled=1"
    html = await (await client.get(resp.headers["Location"])).text()
    assert "The import was cancelled." in html
    assert "http-equiv" not in html

    resp = await client.get(f"{location}/_progress?seen_failed=0")
    section = Elements(await resp.text()).find("section", id="progress")[0]
    assert section["data-status"] == "cancelled"
    assert "hx-trigger" not in section and "hx-get" not in section
    assert resp.headers["HX-Trigger"] == "failures-changed"  # the final state of the list

    resp = await client.post(f"{location}/cancel", data={"csrf_token": token}, allow_redirects=False)
    assert resp.headers["Location"] == f"{location}?cancelled=0"
    assert (await (await client.get(f"/imports/{import_id}")).json())["status"] == "cancelled"


async def test_failures_are_listed_with_reasons_and_can_be_retried(client: Any, drive: RunningEmulator) -> None:
    root = drive.emu.add_folder(None, "Half broken")
    drive.emu.add_image(root, "fine.jpg")
    broken = drive.emu.add_image(root, HOSTILE, fmt="png")
    drive.emu.inject(broken, Fault.http(404), times=None, on="media")
    import_id = await run_import(client, root)

    html = await (await client.get(f"/ui/imports/{import_id}")).text()
    page = Elements(html)
    assert page.find("section", id="progress")[0]["data-status"] == "completed_with_errors"
    failures = page.find("section", id="failures")[0]
    assert failures["hx-trigger"] == "failures-changed from:body"
    assert failures["hx-get"] == f"/ui/imports/{import_id}/_failures"
    assert len(page.find("li", class_="failure")) == 1
    assert "&lt;script&gt;alert(1)&lt;/script&gt;.png" in html
    assert HOSTILE not in html
    assert page.find("form", action=f"/ui/imports/{import_id}/retry")

    fragment = await (await client.get(f"/ui/imports/{import_id}/_failures")).text()
    assert Elements(fragment).find("section", id="failures")
    assert "<html" not in fragment

    drive.emu.clear_faults()
    token = await csrf_token(client)
    resp = await client.post(f"/ui/imports/{import_id}/retry", data={"csrf_token": token}, allow_redirects=False)
    assert resp.status == 303
    assert resp.headers["Location"] == f"/ui/imports/{import_id}?retried=1"
    assert "1 failed file queued again." in await (await client.get(resp.headers["Location"])).text()
    body = await wait_for_import(client, import_id)
    assert body["status"] == "completed"
    assert body["counts"]["failed"] == 0


async def test_unknown_ids_give_an_html_404(client: Any) -> None:
    for path in (
        "/ui/imports/999999",
        "/ui/imports/999999/_progress",
        "/ui/imports/abc",
        "/ui/images/999999",
        "/ui/images/-1",
        "/ui/no-such-page",
    ):
        resp = await client.get(path)
        assert resp.status == 404, path
        assert resp.content_type == "text/html", path
        assert "Not found" in await resp.text()
    token = await csrf_token(client)
    for action in ("retry", "cancel"):
        resp = await client.post(f"/ui/imports/999999/{action}", data={"csrf_token": token}, allow_redirects=False)
        assert resp.status == 404
        assert resp.content_type == "text/html"


# --- gallery and image view ----------------------------------------------------------------------------


async def test_gallery_pages_through_keyset_cursors(client: Any, drive: RunningEmulator) -> None:
    root = drive.emu.add_folder(None, "Five")
    for n in range(5):
        drive.emu.add_image(root, f"five-{n}.jpg", width=400, height=200)
    import_id = await run_import(client, root)

    html = await (await client.get(f"/ui/gallery?import_id={import_id}&limit=2")).text()
    page = Elements(html)
    seen = [a["href"] for a in page.find("a", class_="tile")]
    assert len(seen) == 2
    for img in page.find("img", loading="lazy"):
        assert (img["width"], img["height"]) == ("320", "160")  # the thumbnail's own shape
        assert re.fullmatch(r"/images/\d+/thumbnail", img["src"])
    more = page.find("a", class_="more")[0]
    assert more["hx-trigger"] == "revealed"
    assert more["href"].startswith("/ui/gallery?") and "cursor=" in more["href"]  # works without JS
    assert more["hx-get"].startswith("/ui/gallery/_grid?")

    next_grid: str | None = more["hx-get"]
    while next_grid:
        resp = await client.get(next_grid)
        assert resp.status == 200
        fragment = Elements(await resp.text())
        assert not fragment.find("html")
        seen += [a["href"] for a in fragment.find("a", class_="tile")]
        sentinel = fragment.find("a", class_="more")
        next_grid = sentinel[0]["hx-get"] if sentinel else None
    assert len(seen) == len(set(seen)) == 5

    # The no-JS link renders the next page as a whole page.
    resp = await client.get(more["href"])
    page = Elements(await resp.text())
    assert len(page.find("a", class_="tile")) == 2
    assert page.find("div", id="grid")
    assert "Back to the newest images" in await resp.text()

    assert (await client.get("/ui/gallery?cursor=not-a-cursor")).status == 400


async def test_gallery_filters_by_name_and_import(client: Any, drive: RunningEmulator) -> None:
    first = drive.emu.add_folder(None, "First")
    drive.emu.add_image(first, "beach.jpg")
    drive.emu.add_image(first, "mountain.jpg")
    second = drive.emu.add_folder(None, "Second")
    drive.emu.add_image(second, "beach-again.jpg")
    first_id = await run_import(client, first)
    await run_import(client, second)

    def titles(html: str) -> set[str]:
        return {a["title"] for a in Elements(html).find("a", class_="tile")}

    assert titles(await (await client.get("/ui/gallery")).text()) == {"beach.jpg", "mountain.jpg", "beach-again.jpg"}
    assert titles(await (await client.get("/ui/gallery?q=beach")).text()) == {"beach.jpg", "beach-again.jpg"}
    html = await (await client.get(f"/ui/gallery?q=beach&import_id={first_id}")).text()
    assert titles(html) == {"beach.jpg"}
    assert Elements(html).find("option", value=str(first_id), selected="")
    html = await (await client.get("/ui/gallery?q=nothing-like-this")).text()
    assert "No images match." in html


async def test_images_without_a_thumbnail_get_a_placeholder(client: Any, drive: RunningEmulator) -> None:
    root = drive.emu.add_folder(None, "Raw")
    drive.emu.add_file(root, "DSC_0001.NEF", "image/x-nikon-nef", b"not something Pillow can decode" * 10)
    drive.emu.add_file(root, "not-really.jpg", "image/jpeg", b"This is text, not a JPEG.\n")
    import_id = await run_import(client, root)
    images = (await (await client.get(f"/images?import_id={import_id}")).json())["images"]
    assert {i["name"]: i["thumbnail_url"] for i in images} == {"DSC_0001.NEF": None, "not-really.jpg": None}

    html = await (await client.get("/ui/gallery")).text()
    page = Elements(html)
    assert not page.find("img", loading="lazy")  # never a broken image
    assert len(page.find("span", class_="placeholder")) == 2
    assert '<span class="kind">NEF</span>' in html
    assert '<span class="kind">JPEG</span>' in html

    raw = next(i for i in images if i["name"] == "DSC_0001.NEF")
    html = await (await client.get(f"/ui/images/{raw['id']}")).text()
    page = Elements(html)
    assert not page.find("img", src=f"/images/{raw['id']}/content")
    assert page.find("span", class_="placeholder big")
    assert page.find("a", href=f"/images/{raw['id']}/content", download="")

    # A "JPEG" nothing could decode is not shown inline either: it would be a broken image.
    text = next(i for i in images if i["name"] == "not-really.jpg")
    page = Elements(await (await client.get(f"/ui/images/{text['id']}")).text())
    assert not page.find("img", src=f"/images/{text['id']}/content")


async def test_image_page_shows_the_image_and_its_metadata(client: Any, drive: RunningEmulator) -> None:
    root = drive.emu.add_folder(None, "Meta")
    sub = drive.emu.add_folder(root, "Sub")
    drive.emu.add_image(
        sub,
        "portrait.jpg",
        width=300,
        height=400,
        taken_time="2024:05:01 10:00:00",
        camera_make="Canon",
        camera_model="Canon EOS R5",
    )
    import_id = await run_import(client, root)
    image = (await (await client.get(f"/images?import_id={import_id}")).json())["images"][0]

    resp = await client.get(f"/ui/images/{image['id']}")
    assert resp.status == 200
    html = await resp.text()
    page = Elements(html)
    img = page.find("img", src=f"/images/{image['id']}/content")[0]
    assert (img["width"], img["height"]) == ("300", "400")
    for text in (
        "portrait.jpg",
        "image/jpeg",
        "300 \N{MULTIPLICATION SIGN} 400 px",
        "2024:05:01 10:00:00",
        "Canon EOS R5",
        "Sub",
        image["md5"],
        image["google_drive_id"],
        image["storage_path"],
    ):
        assert text in html, text
    assert "Canon Canon" not in html
    assert page.find("a", href=f"/ui/imports/{import_id}")


async def test_hostile_names_are_shown_as_text(client: Any, drive: RunningEmulator) -> None:
    root = drive.emu.add_folder(None, "<b>bold</b> & co")
    drive.emu.add_image(root, HOSTILE, fmt="png")
    drive.emu.add_image(root, 'it\'s "quoted" & more.jpg')
    import_id = await run_import(client, root)
    image_ids = [i["id"] for i in (await (await client.get(f"/images?import_id={import_id}")).json())["images"]]

    for path in [
        "/",
        f"/ui/imports/{import_id}",
        "/ui/gallery",
        f"/ui/gallery?import_id={import_id}",
        *(f"/ui/images/{i}" for i in image_ids),
    ]:
        html = await (await client.get(path)).text()
        assert "<script>alert" not in html, path
        assert "<b>bold" not in html, path
    gallery = await (await client.get("/ui/gallery")).text()
    assert 'title="&lt;script&gt;alert(1)&lt;/script&gt;.png"' in gallery
    assert "it&#39;s &#34;quoted&#34; &amp; more.jpg" in gallery
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; co" in await (await client.get("/")).text()
