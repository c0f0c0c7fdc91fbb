"""A public Drive folder imported with no Google API key: the keyless reader through the whole pipeline
(API and `fotoowl import`), against the emulator of Google's public pages and real PostgreSQL, Redis, S3."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from conftest import counts, wait_for_import
from fotoowl.config import AppSettings, Secret
from fotoowl.storage import Storage
from fotoowl.testing.drive_public_emulator import PublicDriveEmulator, PublicEmulatorServer, PublicFault, start_emulator
from fotoowl.web.app import create_app
from test_cli import run_cli
from test_cli_client import api_env, base_url

SCAN_THRESHOLD_BYTES = 200_000


@pytest.fixture
async def public_drive() -> AsyncIterator[tuple[PublicDriveEmulator, PublicEmulatorServer]]:
    emu = PublicDriveEmulator(seed=9, scan_threshold_bytes=SCAN_THRESHOLD_BYTES)
    server = await start_emulator(emu, separate_download=True)
    yield emu, server
    await server.cleanup()


@pytest.fixture
async def keyless(
    settings: AppSettings, public_drive: tuple[PublicDriveEmulator, PublicEmulatorServer], aiohttp_client: Any
) -> Any:
    """The app with no Google API key: Drive folders are read from the public pages."""
    _, server = public_drive
    keyless_settings = settings.replace(
        google_api_key=Secret(""),
        drive_reader="auto",
        drive_public_page_url=server.page_url,
        drive_public_download_url=server.download_url,
        drive_public_rate_per_s=200.0,
    )
    assert keyless_settings.drive_reader_in_use() == "public_page"
    return await aiohttp_client(create_app(keyless_settings))


def nested_folder(emu: PublicDriveEmulator) -> tuple[str, set[str], str]:
    """Returns (folder id, the ids of the images that import, the id of the one over its quota)."""
    root = emu.add_folder(None, "Open house")
    images = {emu.add_image(root, "IMG_0001.jpg"), emu.add_image(root, "floorplan.png", fmt="png")}
    large = emu.add_image(root, "panorama.jpg", size_bytes=3 * SCAN_THRESHOLD_BYTES)  # behind the virus-scan form
    dropped = emu.add_image(root, "garden.jpg", size_bytes=150_000)
    emu.inject(dropped, PublicFault.reset(after_bytes=40_000))
    images |= {large, dropped}
    over_quota = emu.add_image(root, "popular.jpg")
    emu.set_quota_exceeded(over_quota)
    emu.add_native(root, "Listing notes", "document")
    emu.add_file(root, "contract.pdf", "application/pdf", b"%PDF-1.7\n")
    upstairs = emu.add_folder(root, "Upstairs")
    images.add(emu.add_image(upstairs, "bedroom.webp", fmt="webp"))
    attic = emu.add_folder(upstairs, "Attic")
    images.add(emu.add_image(attic, "attic.jpg"))
    return root, images, over_quota


async def check_landed(
    settings: AppSettings, storage: Storage, emu: PublicDriveEmulator, images: set[str], over_quota: str
) -> None:
    conn = await asyncpg.connect(settings.database_url)
    try:
        rows = await conn.fetch("SELECT * FROM images")
        items = await conn.fetch("SELECT file_id, name, status, error_code, error_message FROM import_items")
    finally:
        await conn.close()
    by_id = {r["source_id"]: r for r in rows}
    assert len(by_id) == len(rows) and set(by_id) == images
    for file_id, row in by_id.items():
        data = emu.content_of(file_id)
        # Sizes and MD5s come from the bytes themselves; Drive listed neither.
        assert (row["size"], row["md5"], row["checksum"], row["checksum_kind"]) == (
            len(data),
            hashlib.md5(data).hexdigest(),
            hashlib.md5(data).hexdigest(),
            "md5",
        )
        stored = b"".join([chunk async for chunk in storage.stream(row["storage_key"])])
        assert stored == data
    by_name = {i["name"]: i for i in items}
    assert (by_name["Listing notes"]["status"], by_name["Listing notes"]["error_code"]) == ("skipped", "google_native")
    assert (by_name["contract.pdf"]["status"], by_name["contract.pdf"]["error_code"]) == ("skipped", "not_image")
    quota = by_name["popular.jpg"]
    assert (quota["file_id"], quota["status"], quota["error_code"]) == (over_quota, "failed", "downloadQuotaExceeded")
    assert "Too many users" in quota["error_message"]


async def test_a_public_folder_imports_without_a_key_through_the_api(
    keyless: Any,
    public_drive: tuple[PublicDriveEmulator, PublicEmulatorServer],
    settings: AppSettings,
    storage: Storage,
) -> None:
    emu, _ = public_drive
    root, images, over_quota = nested_folder(emu)
    resp = await keyless.post("/imports", json={"folder_url": f"https://drive.google.com/drive/folders/{root}"})
    assert resp.status == 202, await resp.text()
    body = await wait_for_import(keyless, (await resp.json())["import_id"], timeout_s=90)
    assert (body["status"], body["reader"]) == ("completed_with_errors", "public_page")
    assert body["counts"] == counts(found=len(images) + 3, imported=len(images), skipped=2, failed=1)
    await check_landed(settings, storage, emu, images, over_quota)
    # The quota file was asked for once per attempt, never in a loop.
    page = await (await keyless.get(f"/ui/imports/{body['id']}")).text()
    assert "not checked against Drive" in page


async def test_a_public_folder_imports_without_a_key_through_fotoowl_import(
    keyless: Any,
    public_drive: tuple[PublicDriveEmulator, PublicEmulatorServer],
    settings: AppSettings,
    storage: Storage,
) -> None:
    emu, _ = public_drive
    root, images, over_quota = nested_folder(emu)
    code, out, err = await run_cli(
        api_env(base_url(keyless)), "import", f"https://drive.google.com/drive/folders/{root}", "--wait", "--json"
    )
    assert code == 1, (out, err)  # the file over its quota failed
    summary = json.loads(out)
    assert (summary["status"], summary["reader"]) == ("completed_with_errors", "public_page")
    await check_landed(settings, storage, emu, images, over_quota)


async def test_a_folder_not_shared_publicly_fails_at_once_saying_how_to_share_it(
    keyless: Any, public_drive: tuple[PublicDriveEmulator, PublicEmulatorServer]
) -> None:
    emu, _ = public_drive
    root = emu.add_folder(None, "Private")
    emu.add_image(root, "a.jpg")
    emu.set_shared(root, False)
    resp = await keyless.post("/imports", json={"folder_url": f"https://drive.google.com/drive/folders/{root}"})
    body = await wait_for_import(keyless, (await resp.json())["import_id"], timeout_s=30)
    assert (body["status"], body["error"]["code"]) == ("failed", "folder_not_accessible")
    assert "Anyone with the link" in body["error"]["message"]


async def test_a_sync_does_not_prune_a_subfolder_it_could_not_read(
    keyless: Any, public_drive: tuple[PublicDriveEmulator, PublicEmulatorServer], settings: AppSettings
) -> None:
    """A subfolder behind sign-in for one listing still holds its files: not removed, not pruned."""
    emu, _ = public_drive
    root = emu.add_folder(None, "Event")
    emu.add_image(root, "top.jpg")
    shut = emu.add_folder(root, "Day 1")
    inner = emu.add_folder(shut, "Ceremony")
    kept = {emu.add_image(shut, "a.jpg"), emu.add_image(inner, "b.jpg")}
    url = f"https://drive.google.com/drive/folders/{root}"
    first = await wait_for_import(
        keyless, (await (await keyless.post("/imports", json={"folder_url": url})).json())["import_id"]
    )
    assert first["counts"]["imported"] == 3

    emu.inject(shut, PublicFault.sign_in(), on="page", times=None)
    resp = await keyless.post("/imports", json={"folder_url": url, "prune": True})
    second = await wait_for_import(keyless, (await resp.json())["import_id"])
    assert (second["counts"]["removed"], second["counts"]["pruned"], second["counts"]["unchanged"]) == (0, 0, 1)
    conn = await asyncpg.connect(settings.database_url)
    try:
        stored = {r["source_id"] for r in await conn.fetch("SELECT source_id FROM images")}
    finally:
        await conn.close()
    assert kept <= stored
