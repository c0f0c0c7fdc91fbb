"""A Dropbox shared folder imported end to end: API and `fotoowl import`, through the same pipeline as
Drive, against the Dropbox emulator, real PostgreSQL, Redis and S3."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import asyncpg

from conftest import RunningDropbox, counts, wait_for_import
from fotoowl.config import AppSettings
from fotoowl.sources.dropbox.content_hash import content_hash
from fotoowl.storage import Storage
from fotoowl.testing.dropbox_emulator import DropboxFault
from test_cli import run_cli
from test_cli_client import api_env, base_url


def event_folder(dropbox: RunningDropbox) -> tuple[str, dict[str, str], str]:
    """Nested folders, a text file, a body that drops once, a 429 burst and a file that vanishes after
    it was listed. Returns (link, {file id: path}, id of the vanished file)."""
    emu = dropbox.emu
    root = emu.add_folder(None, "Gala 2026")
    ceremony = emu.add_folder(root, "Ceremony")
    party = emu.add_folder(ceremony, "Party")
    paths: dict[str, str] = {}
    for parent, folder, count in ((root, "", 5), (ceremony, "/Ceremony", 4), (party, "/Ceremony/Party", 3)):
        for i in range(count):
            paths[emu.add_image(parent, f"IMG_{i:03d}.jpg")] = f"{folder}/IMG_{i:03d}.jpg"
    big = emu.add_image(ceremony, "panorama.jpg", size_bytes=9 * 1024 * 1024)
    paths[big] = "/Ceremony/panorama.jpg"
    emu.add_file(root, "notes.txt", b"not an image")
    # More than one page: short pages, an empty one that still has more.
    emu.list_page_sizes.extend([2, 0, 3, 1])
    emu.inject("/Ceremony/panorama.jpg", DropboxFault.reset(after_bytes=3 * 1024 * 1024), times=1)
    emu.inject(None, DropboxFault.rate_limited(0.2), times=3)
    gone = next(file_id for file_id, path in paths.items() if path == "/Ceremony/Party/IMG_001.jpg")
    emu.inject("/Ceremony/Party/IMG_001.jpg", DropboxFault.route_error("path", "not_found"), times=None)
    return emu.share(root).url, paths, gone


async def check_landed(
    settings: AppSettings, storage: Storage, dropbox: RunningDropbox, paths: dict[str, str], gone: str
) -> None:
    conn = await asyncpg.connect(settings.database_url)
    try:
        rows = await conn.fetch("SELECT * FROM images")
        failures = await conn.fetch(
            "SELECT file_id, error_code, error_message FROM import_items WHERE status = 'failed'"
        )
    finally:
        await conn.close()
    by_id = {r["source_id"]: r for r in rows}
    assert len(by_id) == len(rows), "an image was recorded twice"
    assert set(by_id) == set(paths) - {gone}
    for file_id, row in by_id.items():
        data = dropbox.emu.content_of(file_id)
        assert (row["source"], row["google_drive_id"]) == ("dropbox", None)
        assert row["checksum_kind"] == "dropbox_content_hash"
        assert row["checksum"] == content_hash(data) == dropbox.emu.content_hash_of(file_id)
        stored = b"".join([chunk async for chunk in storage.stream(row["storage_key"])])
        assert hashlib.md5(stored).hexdigest() == hashlib.md5(data).hexdigest() == row["md5"]
        assert row["folder_path"] == paths[file_id].rpartition("/")[0].lstrip("/")
    assert [(f["file_id"], f["error_code"]) for f in failures] == [(gone, "not_found")]
    assert "no longer" in failures[0]["error_message"] or "not found" in failures[0]["error_message"].lower()
    assert await storage.open_uploads(settings.s3_prefix_normalised) == []


async def test_a_dropbox_folder_imports_through_the_api(
    client: Any, dropbox: RunningDropbox, app_settings: AppSettings, storage: Storage
) -> None:
    url, paths, gone = event_folder(dropbox)
    resp = await client.post("/imports", json={"folder_url": url})
    assert resp.status == 202, await resp.text()
    body = await wait_for_import(client, (await resp.json())["import_id"], timeout_s=90)
    assert body["source"] == "dropbox"
    assert body["status"] == "completed_with_errors", body
    assert body["folder_name"] == "Gala 2026"
    assert body["counts"] == counts(found=len(paths) + 1, imported=len(paths) - 1, skipped=1, failed=1)
    await check_landed(app_settings, storage, dropbox, paths, gone)
    # The dropped body was resumed with Range, not downloaded again from the start.
    assert any(
        path == "/Ceremony/panorama.jpg" and header and header.startswith("bytes=")
        for path, header in dropbox.emu.range_headers
    )
    images = await (await client.get("/images", params={"source": "dropbox", "limit": "100"})).json()
    assert len(images["images"]) == len(paths) - 1


async def test_a_dropbox_folder_imports_through_fotoowl_import(
    client: Any, dropbox: RunningDropbox, app_settings: AppSettings, storage: Storage
) -> None:
    url, paths, gone = event_folder(dropbox)
    code, out, err = await run_cli(api_env(base_url(client)), "import", url, "--wait", "--json")
    assert code == 1, (out, err)  # some files failed: the vanished one
    summary = json.loads(out)
    assert (summary["source"], summary["status"]) == ("dropbox", "completed_with_errors")
    await check_landed(app_settings, storage, dropbox, paths, gone)


async def test_post_import_dropbox_refuses_a_drive_link(client: Any) -> None:
    resp = await client.post("/import/dropbox", json={"folder_url": "https://drive.google.com/drive/folders/1AbC"})
    assert resp.status == 422
    assert (await resp.json())["error"]["code"] == "invalid_folder_url"


async def test_a_password_protected_link_imports_with_its_password(client: Any, dropbox: RunningDropbox) -> None:
    emu = dropbox.emu
    root = emu.add_folder(None, "Private")
    for i in range(3):
        emu.add_image(root, f"p{i}.jpg")
    url = emu.share(root, password="open sesame").url
    resp = await client.post("/import/dropbox", json={"folder_url": url})
    without = await wait_for_import(client, (await resp.json())["import_id"])
    assert without["status"] == "failed" and without["error"]["code"] == "folder_not_accessible"
    assert "password" in without["error"]["message"]
    resp = await client.post("/import/dropbox", json={"folder_url": url, "password": "open sesame"})
    body = await wait_for_import(client, (await resp.json())["import_id"])
    assert (body["status"], body["counts"]["imported"]) == ("completed", 3)
    assert "open sesame" not in json.dumps(body)
