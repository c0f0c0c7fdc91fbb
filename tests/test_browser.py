"""End to end in a real Chromium: paste a folder link, watch the import finish live, browse the gallery."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from fotoowl.config import AppSettings

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason=f"Debian's Chromium is not installed at {CHROMIUM}: "
        "run `make browser` (apt-get install chromium) to enable the browser test",
    ),
]
SCREENSHOTS = Path(__file__).resolve().parents[1] / "artifacts" / "screenshots"
# Generous: a wait for the pipeline on a slow machine, not a performance assertion.
IMPORT_WAIT_MS = 90_000

ALL_THUMBNAILS_LOADED = """() => {
    const imgs = [...document.querySelectorAll('#grid img')];
    return imgs.length > 0 && imgs.every(img => img.complete && img.naturalWidth > 0);
}"""


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture
async def base_url(app_settings: AppSettings, aiohttp_server: Any) -> str:
    """The whole app with its embedded worker, on a real TCP port the browser can reach."""
    from fotoowl.web.app import create_app

    server = await aiohttp_server(create_app(app_settings))
    return str(server.make_url("")).rstrip("/")


def _watch_for_errors(page: Page) -> list[str]:
    """Console errors (a CSP violation, a 404 asset, a script error) would mean a half-broken page."""
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return errors


async def test_import_a_folder_and_browse_it(browser: Browser, base_url: str, drive: Any) -> None:
    emu = drive.emu
    root = emu.add_folder(None, "Browser trip")
    for day in ("Day 1", "Day 2"):
        folder = emu.add_folder(root, day)
        for n in range(10):
            emu.add_image(
                folder,
                f"{day} {n + 1:02d}.{'png' if n % 3 == 0 else 'jpg'}",
                fmt="png" if n % 3 == 0 else "jpeg",
                width=480 + 16 * n,
                height=360,
            )
    link = f"https://drive.google.com/drive/folders/{root}"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    errors = _watch_for_errors(page)

    await page.goto(base_url + "/")
    assert "No imports yet" in await page.locator("#imports").inner_text()
    await page.fill("#folder_url", link)
    await page.click("#import-form button[type=submit]")
    await page.wait_for_url(re.compile(r"/ui/imports/\d+$"))

    # A marker on the window survives only if the page is never reloaded: progress comes from htmx swaps.
    await page.evaluate("() => { window.__fotoowlMarker = 1; }")
    await page.wait_for_selector('#progress[data-status="completed"]', timeout=IMPORT_WAIT_MS)
    assert await page.evaluate("() => window.__fotoowlMarker") == 1
    assert await page.locator("#count-imported").inner_text() == "20"
    assert await page.locator("#count-failed").inner_text() == "0"
    assert await page.locator("#progress[hx-trigger]").count() == 0  # polling stopped
    # Previews follow the import (the gallery shows a placeholder until each is made): wait for them.
    status_url = f"{base_url}/imports/{page.url.rsplit('/', 1)[1]}"
    for _ in range(IMPORT_WAIT_MS // 200):
        if (await (await page.request.get(status_url)).json())["previews"]["pending"] == 0:
            break
        await page.wait_for_timeout(200)
    else:
        raise AssertionError("the previews were not made in time")
    await page.screenshot(path=str(SCREENSHOTS / "import.png"), full_page=True)

    await page.click("#gallery-link")
    await page.wait_for_url(re.compile(r"/ui/gallery\?import_id=\d+$"))
    thumbnails = page.locator("#grid img")
    assert await thumbnails.count() == 20
    await page.wait_for_function(ALL_THUMBNAILS_LOADED, timeout=30_000)
    await page.screenshot(path=str(SCREENSHOTS / "gallery.png"), full_page=True)

    # Infinite scroll: small pages, appended by htmx as the "More" sentinel scrolls into view.
    await page.goto(page.url + "&limit=6")
    # Keeps scrolling to the bottom until the last page has come in and no sentinel is left.
    await page.wait_for_function(
        """() => {
        window.scrollTo(0, document.body.scrollHeight);
        return !document.querySelector('#grid .more');
    }""",
        polling=100,
        timeout=30_000,
    )
    assert await thumbnails.count() == 20
    for i in range(20):  # lazy images load only once they are near the viewport
        await thumbnails.nth(i).scroll_into_view_if_needed()
    await page.wait_for_function(ALL_THUMBNAILS_LOADED, timeout=30_000)
    sources = await thumbnails.evaluate_all("imgs => imgs.map(img => img.getAttribute('src'))")
    assert len(set(sources)) == 20

    await page.locator("#grid .tile").first.click()
    await page.wait_for_url(re.compile(r"/ui/images/\d+$"))
    await page.wait_for_function("""() => {
        const img = document.querySelector('.viewer img');
        return img && img.complete && img.naturalWidth > 0;
    }""")
    assert "Storage path" in await page.locator(".meta-table").inner_text()
    await page.screenshot(path=str(SCREENSHOTS / "image.png"), full_page=True)

    await page.goto(base_url + "/")
    await page.screenshot(path=str(SCREENSHOTS / "home.png"), full_page=True)
    assert errors == []


async def test_the_import_page_follows_server_sent_events(browser: Browser, base_url: str, drive: Any) -> None:
    """live.js: the stream's events bring the progress fragment that does not poll, to the end."""
    from fotoowl.testing.drive_emulator import Fault

    emu = drive.emu
    root = emu.add_folder(None, "Streamed live")
    for n in range(6):
        # Slow enough that the import is still running when the stream takes over.
        emu.inject(emu.add_image(root, f"slow {n}.jpg", size_bytes=200_000), Fault.slow(50_000), times=None)
    page = await browser.new_page()
    errors = _watch_for_errors(page)
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))

    await page.goto(base_url + "/")
    await page.fill("#folder_url", f"https://drive.google.com/drive/folders/{root}")
    await page.click("#import-form button[type=submit]")
    await page.wait_for_url(re.compile(r"/ui/imports/\d+$"))
    await page.evaluate("() => { window.__fotoowlMarker = 1; }")
    # Driven by the stream: the live fragment (no hx-trigger) is in place while the import runs.
    await page.wait_for_selector("#progress[data-live]:not([hx-trigger])", state="attached", timeout=30_000)
    await page.wait_for_selector('#progress[data-status="completed"]', timeout=IMPORT_WAIT_MS)
    assert await page.evaluate("() => window.__fotoowlMarker") == 1
    assert await page.locator("#count-imported").inner_text() == "6"
    assert await page.locator("#progress[hx-trigger]").count() == 0
    assert any(re.search(r"/imports/\d+/events$", url) for url in requested)
    assert any("live=1" in url for url in requested)
    assert errors == []
