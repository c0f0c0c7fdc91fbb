"""The Dropbox emulator over plain HTTP: the routes, shapes, headers and errors a Dropbox client relies on."""

from __future__ import annotations

import base64
import hashlib
import io
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from PIL import Image

from fotoowl.testing.dropbox_emulator import DropboxEmulator, DropboxFault, error_body, running_emulator

KEY, SECRET = "emu-app-key", "emu-app-secret"
AUTH = {"Authorization": "Basic " + base64.b64encode(f"{KEY}:{SECRET}".encode()).decode()}


@pytest.fixture
def emu() -> DropboxEmulator:
    return DropboxEmulator(app_key=KEY, app_secret=SECRET, seed=3)


@pytest.fixture
async def base(emu: DropboxEmulator) -> AsyncIterator[str]:
    async with running_emulator(emu) as url:
        yield url


async def rpc(
    session: aiohttp.ClientSession, base: str, route: str, arg: Any, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    async with session.post(
        f"{base}/2/{route}",
        data=json.dumps(arg),
        headers=headers if headers is not None else {**AUTH, "Content-Type": "application/json"},
    ) as response:
        text = await response.text()
        is_json = response.content_type == "application/json"
        return response.status, json.loads(text) if is_json else text


async def fetch_file(
    session: aiohttp.ClientSession, base: str, arg: dict[str, Any], **headers: str
) -> tuple[int, dict[str, str], bytes]:
    sent = {**AUTH, "Dropbox-API-Arg": json.dumps(arg), **headers}
    async with session.post(f"{base}/2/sharing/get_shared_link_file", headers=sent) as response:
        return response.status, dict(response.headers), await response.read()


def content_hash(data: bytes) -> str:
    blocks = [data[i : i + 4 * 1024 * 1024] for i in range(0, len(data), 4 * 1024 * 1024)]
    return hashlib.sha256(b"".join(hashlib.sha256(block).digest() for block in blocks)).hexdigest()


def test_error_bodies_nest_their_unions() -> None:
    assert error_body("path", "not_found") == {
        "error_summary": "path/not_found/..",
        "error": {".tag": "path", "path": {".tag": "not_found"}},
    }


async def test_app_authentication_is_checked(emu: DropboxEmulator, base: str, session: aiohttp.ClientSession) -> None:
    url = emu.share(emu.add_folder(None, "Root")).url
    arg = {"path": "", "shared_link": {"url": url}}
    status, text = await rpc(session, base, "files/list_folder", arg, headers={})
    assert status == 400 and text.startswith('Error in call to API function "files/list_folder"')
    assert "Authorization" in text
    wrong = {"Authorization": "Basic " + base64.b64encode(f"{KEY}:nope".encode()).decode()}
    status, body = await rpc(session, base, "files/list_folder", arg, headers=wrong)
    assert status == 401 and body["error"][".tag"] == "invalid_access_token"
    assert body["error_summary"].startswith("invalid_access_token/")
    assert (await rpc(session, base, "files/list_folder", arg))[0] == 200


async def test_listing_pages_a_folder_without_owner_paths(
    emu: DropboxEmulator, base: str, session: aiohttp.ClientSession
) -> None:
    root = emu.add_folder(None, "Root")
    ids = [emu.add_image(root, f"{index}.jpg", width=20, height=20) for index in range(5)]
    emu.add_folder(root, "Sub")
    url = emu.share(root).url
    status, page = await rpc(session, base, "files/list_folder", {"path": "", "shared_link": {"url": url}, "limit": 2})
    assert status == 200 and page["has_more"] is True and len(page["entries"]) == 2
    entries = list(page["entries"])
    while page["has_more"]:
        status, page = await rpc(session, base, "files/list_folder/continue", {"cursor": page["cursor"]})
        assert status == 200 and len(page["entries"]) <= 2
        entries += page["entries"]
    assert isinstance(page["cursor"], str)  # a cursor even on the last page
    files = [e for e in entries if e[".tag"] == "file"]
    assert [e["id"] for e in files] == ids and [e["name"] for e in entries if e[".tag"] == "folder"] == ["Sub"]
    first = files[0]
    assert set(first) == {
        ".tag",
        "name",
        "id",
        "client_modified",
        "server_modified",
        "rev",
        "size",
        "is_downloadable",
        "content_hash",
    }
    assert first["id"].startswith("id:") and first["server_modified"].endswith("Z")
    data = emu.content_of(ids[0])
    assert (first["size"], first["content_hash"]) == (len(data), content_hash(data))
    assert Image.open(io.BytesIO(data)).format == "JPEG"


async def test_listing_refuses_what_dropbox_refuses(
    emu: DropboxEmulator, base: str, session: aiohttp.ClientSession
) -> None:
    root = emu.add_folder(None, "Root")
    emu.add_file(root, "a.txt", b"x")
    shared = emu.share(root)
    link = {"url": shared.url}
    status, text = await rpc(session, base, "files/list_folder", {"path": "", "shared_link": link, "recursive": True})
    assert status == 400
    assert text == (
        'Error in call to API function "files/list_folder": Recursive list folder is not supported for shared link.'
    )
    no_rlkey = {"url": shared.url.replace(f"rlkey={shared.rlkey}", "")}
    status, body = await rpc(session, base, "files/list_folder", {"path": "", "shared_link": no_rlkey})
    assert (status, body["error"][".tag"]) == (409, "shared_link_not_found")
    status, body = await rpc(session, base, "files/list_folder", {"path": "/nope", "shared_link": link})
    assert (status, body["error_summary"]) == (409, "path/not_found/..")
    status, body = await rpc(session, base, "files/list_folder", {"path": "/a.txt", "shared_link": link})
    assert (status, body["error"]["path"][".tag"]) == (409, "not_folder")
    assert (await rpc(session, base, "files/list_folder", {"path": "", "shared_link": link, "limit": 0}))[0] == 400
    assert (await rpc(session, base, "files/list_folder/continue", {"cursor": "bogus"}))[0] == 400
    status, page = await rpc(session, base, "files/list_folder", {"path": "", "shared_link": link, "limit": 1})
    emu.invalidate_cursors()
    status, body = await rpc(session, base, "files/list_folder/continue", {"cursor": page["cursor"]})
    assert (status, body["error"][".tag"]) == (409, "reset")


async def test_old_links_and_case_insensitive_paths(
    emu: DropboxEmulator, base: str, session: aiohttp.ClientSession
) -> None:
    root = emu.add_folder(None, "Root")
    sub = emu.add_folder(root, "Día 1")
    emu.add_image(sub, "x.png", fmt="png")
    url = emu.share(root, form="sh").url
    assert "/sh/" in url and "rlkey" not in url
    status, page = await rpc(session, base, "files/list_folder", {"path": "/DÍA 1", "shared_link": {"url": url}})
    assert status == 200 and [e["name"] for e in page["entries"]] == ["x.png"]
    assert emu.count("list", "/día 1") == 1


async def test_link_metadata_and_passwords(emu: DropboxEmulator, base: str, session: aiohttp.ClientSession) -> None:
    root = emu.add_folder(None, "Shoot")
    image = emu.add_image(root, "a.jpg")
    url = emu.share(root, password="pw").url
    status, body = await rpc(session, base, "sharing/get_shared_link_metadata", {"url": url})
    assert (status, body["error"][".tag"]) == (409, "shared_link_access_denied")
    status, body = await rpc(session, base, "sharing/get_shared_link_metadata", {"url": url, "link_password": "x"})
    assert status == 409
    status, body = await rpc(session, base, "sharing/get_shared_link_metadata", {"url": url, "link_password": "pw"})
    assert status == 200 and (body[".tag"], body["name"], body["url"]) == ("folder", "Shoot", url)
    assert body["link_permissions"]["resolved_visibility"][".tag"] == "password" and "path_lower" not in body
    file_url = emu.share(image).url
    assert "/scl/fi/" in file_url
    status, body = await rpc(session, base, "sharing/get_shared_link_metadata", {"url": file_url})
    assert status == 200 and (body[".tag"], body["size"]) == ("file", len(emu.content_of(image)))


async def test_file_download_with_result_header_and_ranges(
    emu: DropboxEmulator, base: str, session: aiohttp.ClientSession
) -> None:
    root = emu.add_folder(None, "Root")
    image = emu.add_image(root, "Été.png", fmt="png", size_bytes=50_000)
    emu.add_folder(root, "Sub")
    url = emu.share(root).url
    data = emu.content_of(image)
    status, headers, body = await fetch_file(session, base, {"url": url, "path": "/Été.png"})
    assert status == 200 and body == data and Image.open(io.BytesIO(body)).format == "PNG"
    result = json.loads(headers["Dropbox-API-Result"])
    assert headers["Dropbox-API-Result"].isascii() and (result["name"], result["size"]) == ("Été.png", 50_000)
    status, headers, body = await fetch_file(session, base, {"url": url, "path": "/Été.png"}, Range="bytes=49000-")
    assert (status, headers["Content-Range"], body) == (206, "bytes 49000-49999/50000", data[49_000:])
    status, headers, _ = await fetch_file(session, base, {"url": url, "path": "/Été.png"}, Range="bytes=60000-")
    assert (status, headers["Content-Range"]) == (416, "bytes */50000")
    assert emu.bytes_served["/Été.png"] == 51_000
    assert emu.range_headers == [("/Été.png", None), ("/Été.png", "bytes=49000-"), ("/Été.png", "bytes=60000-")]
    for arg, tag in (
        ({"url": url}, "shared_link_is_directory"),
        ({"url": url, "path": "/Sub"}, "shared_link_is_directory"),
        ({"url": url, "path": "/gone.jpg"}, "path"),
    ):
        status, _, body = await fetch_file(session, base, arg)
        assert (status, json.loads(body)["error"][".tag"]) == (409, tag)
    raw = '{"url": "' + url + '", "path": "/Été.png"}'
    async with session.post(
        f"{base}/2/sharing/get_shared_link_file", headers={**AUTH, "Dropbox-API-Arg": raw.encode().decode("latin-1")}
    ) as response:
        assert response.status == 400 and "Dropbox-API-Arg" in await response.text()


async def test_faults_rate_limits_and_drops(emu: DropboxEmulator, base: str, session: aiohttp.ClientSession) -> None:
    root = emu.add_folder(None, "Root")
    emu.add_image(root, "a.jpg", size_bytes=20_000)
    url = emu.share(root).url
    arg = {"path": "", "shared_link": {"url": url}}
    emu.inject("", DropboxFault.rate_limited(retry_after_s=3), route="list")
    async with session.post(f"{base}/2/files/list_folder", json=arg, headers=AUTH) as response:
        body = await response.json()
        assert (response.status, response.headers["Retry-After"]) == (429, "3")
    assert body == {
        "error_summary": "too_many_requests/..",
        "error": {"reason": {".tag": "too_many_requests"}, "retry_after": 3},
    }
    emu.inject(None, DropboxFault.http(503), route="any")
    assert (await rpc(session, base, "files/list_folder", arg))[0] == 503
    emu.inject("/a.jpg", DropboxFault.drop())
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await fetch_file(session, base, {"url": url, "path": "/a.jpg"})
    emu.inject("/a.jpg", DropboxFault.reset(after_bytes=5_000))
    with pytest.raises(aiohttp.ClientPayloadError):
        await fetch_file(session, base, {"url": url, "path": "/a.jpg"})
    assert emu.count("download", "/a.jpg") == 2 and emu.count("list", "") == 2


async def test_a_quota_answers_429(session: aiohttp.ClientSession) -> None:
    emu = DropboxEmulator(app_key=KEY, app_secret=SECRET, quota_per_s=2)
    url = emu.share(emu.add_folder(None, "Root")).url
    async with running_emulator(emu) as base:
        statuses = [(await rpc(session, base, "sharing/get_shared_link_metadata", {"url": url}))[0] for _ in range(4)]
    assert statuses[:2] == [200, 200] and 429 in statuses and emu.rate_limited >= 1
