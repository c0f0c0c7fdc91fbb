"""The demo of `fotoowl dev` (`make run`): with no credentials for a source, the app reads a sample
folder served by that source's emulator, in the app's own event loop, on this machine only."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web

from fotoowl.config import DEFAULT_DRIVE_API_URL, AppSettings, Secret
from fotoowl.web.keys import DEMO_FOLDERS, SETTINGS

DEMO_API_KEY = "fotoowl-demo-key"
DEMO_DROPBOX_APP_KEY = "fotoowl-demo-app"
DEMO_DROPBOX_APP_SECRET = "fotoowl-demo-secret"

CleanupCtx = Callable[[web.Application], AsyncIterator[None]]


def demo_sources(settings: AppSettings) -> list[str]:
    """The sources without credentials, so without the demo they could not be tried at all."""
    sources = []
    if not settings.google_api_key and settings.drive_api_url == DEFAULT_DRIVE_API_URL:
        sources.append("google_drive")
    if not settings.dropbox_app_key:
        sources.append("dropbox")
    return sources


def with_demo_credentials(settings: AppSettings, sources: list[str]) -> AppSettings:
    if "google_drive" in sources:
        settings = settings.replace(google_api_key=Secret(DEMO_API_KEY))
    if "dropbox" in sources:
        settings = settings.replace(
            dropbox_app_key=DEMO_DROPBOX_APP_KEY, dropbox_app_secret=Secret(DEMO_DROPBOX_APP_SECRET)
        )
    return settings


def _remember(app: web.Application, label: str, url: str) -> None:
    existing: dict[str, str] = app[DEMO_FOLDERS] if DEMO_FOLDERS in app else {}  # noqa: SIM401
    app[DEMO_FOLDERS] = {**existing, label: url}


def drive_demo(n_images: int) -> CleanupCtx:
    from fotoowl.testing.drive_emulator import DriveEmulator, build_demo_tree, start_emulator

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        emu = DriveEmulator(api_keys={DEMO_API_KEY}, seed=7)
        tree = build_demo_tree(emu, n_images, seed=7)
        runner, api_url = await start_emulator(emu)
        app[SETTINGS] = app[SETTINGS].replace(drive_api_url=api_url)
        _remember(app, "Google Drive", tree.link)
        yield
        await runner.cleanup()

    return ctx


def dropbox_demo(n_images: int) -> CleanupCtx:
    from fotoowl.testing.dropbox_emulator import DropboxEmulator, start_emulator

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        emu = DropboxEmulator(app_key=DEMO_DROPBOX_APP_KEY, app_secret=DEMO_DROPBOX_APP_SECRET, seed=11)
        root = build_dropbox_demo_tree(emu, n_images)
        runner, url = await start_emulator(emu)
        app[SETTINGS] = app[SETTINGS].replace(dropbox_api_url=url, dropbox_content_url=url)
        _remember(app, "Dropbox", emu.share(root).url)
        yield
        await runner.cleanup()

    return ctx


def build_dropbox_demo_tree(emu: Any, n_images: int) -> str:
    """A sample event: photos on top and in two subfolders, and one file that is not an image."""
    root: str = emu.add_folder(None, "Sample event (Dropbox)")
    folders = [root, emu.add_folder(root, "Ceremony"), emu.add_folder(root, "Reception")]
    for n in range(n_images):
        emu.add_image(folders[n % len(folders)], f"DSC_{n + 1:04d}.jpg", fmt="png" if n % 7 == 3 else "jpeg")
    emu.add_file(root, "shot-list.txt", b"Ceremony, reception, portraits\n")
    return root
