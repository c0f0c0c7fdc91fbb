"""The emulator's own Drive v3 protocol, checked with plain HTTP requests."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from PIL import Image

from fotoowl.sources.google_drive.client import DriveClient
from fotoowl.sources.google_drive.links import parse_folder_link
from fotoowl.testing.drive_emulator import (
    DEMO_API_KEY,
    DOCUMENT_MIME_TYPE,
    DriveEmulator,
    build_demo_tree,
    parse_fields,
    parse_query,
    parse_range,
    running_emulator,
    serve_demo,
)
from fotoowl.testing.images import Content

KEY = "test-key"


@pytest.fixture
def emu() -> DriveEmulator:
    return DriveEmulator(api_keys={KEY}, seed=7)


@pytest.fixture
async def api_url(emu: DriveEmulator) -> AsyncIterator[str]:
    async with running_emulator(emu) as url:
        yield url


async def get_json(session: aiohttp.ClientSession, url: str, **params: str) -> tuple[int, dict[str, Any]]:
    async with session.get(url, params=params) as response:
        return response.status, await response.json()


def list_params(folder_id: str, **extra: str) -> dict[str, str]:
    return {"key": KEY, "q": f"'{folder_id}' in parents and trashed = false", **extra}


def assert_google_error(body: dict[str, Any], status: int, reason: str) -> None:
    error = body["error"]
    assert error["code"] == status
    assert isinstance(error["message"], str) and error["message"]
    assert error["errors"][0]["reason"] == reason
    assert {"domain", "reason", "message"} <= set(error["errors"][0])
    assert isinstance(error["status"], str)


# --- keys -------------------------------------------------------------------------------------------


async def test_missing_key_is_403_forbidden(emu: DriveEmulator, api_url: str, session: aiohttp.ClientSession) -> None:
    root = emu.add_folder(None, "Root")
    status, body = await get_json(session, f"{api_url}/files/{root}")
    assert status == 403
    assert_google_error(body, 403, "forbidden")
    assert body["error"]["status"] == "PERMISSION_DENIED"


async def test_unknown_key_is_400_key_not_valid(
    emu: DriveEmulator, api_url: str, session: aiohttp.ClientSession
) -> None:
    root = emu.add_folder(None, "Root")
    status, body = await get_json(session, f"{api_url}/files/{root}", key="wrong")
    assert status == 400
    assert_google_error(body, 400, "badRequest")
    assert body["error"]["message"] == "API key not valid. Please pass a valid API key."
    assert body["error"]["details"][0]["reason"] == "API_KEY_INVALID"


# --- files.list -------------------------------------------------------------------------------------


async def test_list_without_fields_gives_the_default_projection(
    emu: DriveEmulator, api_url: str, session: aiohttp.ClientSession
) -> None:
    root = emu.add_folder(None, "Root")
    for index in range(150):
        emu.add_file(root, f"f{index}.jpg", "image/jpeg", b"x")
    status, body = await get_json(session, f"{api_url}/files", **list_params(root))
    assert status == 200
    assert body["kind"] == "drive#fileList"
    assert len(body["files"]) == 100  # the default pageSize
    assert "nextPageToken" in body
    assert set(body["files"][0]) == {"kind", "id", "name", "mimeType"}


async def test_fields_mask_filters_and_drops_unrequested_token(
    emu: DriveEmulator, api_url: str, session: aiohttp.ClientSession
) -> None:
    root = emu.add_folder(None, "Root")
    emu.add_image(root, "a.jpg", width=80, height=60, taken_time="2024:05:01 10:00:00", camera_make="Canon")
    emu.add_image(root, "b.jpg")
    params = list_params(root, pageSize="1", fields="files(id,size,imageMediaMetadata(width,time))")
    status, body = await get_json(session, f"{api_url}/files", **params)
    assert status == 200
    assert set(body) == {"files"}  # more pages exist, but nextPageToken was not asked for
    (file,) = body["files"]
    assert set(file) == {"id", "size", "imageMediaMetadata"}
    assert file["imageMediaMetadata"] == {"width": 80, "time": "2024:05:01 10:00:00"}
    assert isinstance(file["size"], str) and int(file["size"]) > 0


async def test_sizes_are_strings_and_only_blobs_have_them(
    emu: DriveEmulator, api_url: str, session: aiohttp.ClientSession
) -> None:
    root = emu.add_folder(None, "Root")
    image = emu.add_image(root, "a.png", fmt="png")
    sub = emu.add_folder(root, "Sub")
    emu.add_shortcut(root, "link", image)
    emu.add_native(root, "Doc", DOCUMENT_MIME_TYPE)
    fields = "nextPageToken,files(id,mimeType,size,md5Checksum,shortcutDetails)"
    status, body = await get_json(session, f"{api_url}/files", **list_params(root, fields=fields))
    assert status == 200
    by_id = {f["id"]: f for f in body["files"]}
    assert by_id[image]["size"] == str(len(emu.content_of(image)))
    assert by_id[image]["md5Checksum"] == hashlib.md5(emu.content_of(image)).hexdigest()
    assert "size" not in by_id[sub] and "md5Checksum" not in by_id[sub]
    shortcuts = [f for f in body["files"] if "shortcutDetails" in f]
    assert len(shortcuts) == 1 and "size" not in shortcuts[0]
    assert shortcuts[0]["shortcutDetails"] == {"targetId": image, "targetMimeType": "image/png"}
    docs = [f for f in body["files"] if f["mimeType"] == DOCUMENT_MIME_TYPE]
    assert len(docs) == 1 and "size" not in docs[0]


@pytest.mark.parametrize("page_size", ["0", "1001", "-5", "many"])
async def test_page_size_out_of_range_is_400(
    emu: DriveEmulator, api_url: str, session: aiohttp.ClientSession, page_size: str
) -> None:
    root = emu.add_folder(None, "Root")
    status, body = await get_json(session, f"{api_url}/files", **list_params(root, pageSize=page_size))
    assert status == 400
    assert_google_error(body, 400, "invalid")
    assert body["error"]["errors"][0]["location"] == "pageSize"


@pytest.mark.parametrize(
    ("params", "location"),
    [
        ({"q": "name contains 'x'"}, "q"),
        ({"q": "'a' in parents or 'b' in parents"}, "q"),
        ({"fields": "files(id,nonsense)"}, "fields"),
        ({"fields": "files(id"}, "fields"),
        ({"fields": "files(id(x))"}, "fields"),
        ({"pageToken": "1000"}, "pageToken"),
    ],
)
async def test_invalid_list_requests_are_400(
    emu: DriveEmulator, api_url: str, session: aiohttp.ClientSession, params: dict[str, str], location: str
) -> None:
    root = emu.add_folder(None, "Root")
    status, body = await get_json(session, f"{api_url}/files", **{**list_params(root), **params})
    assert status == 400
    assert body["error"]["errors"][0]["location"] == location


async def test_page_tokens_are_opaque_and_tied_to_their_query(
    emu: DriveEmulator, api_url: str, session: aiohttp.ClientSession
) -> None:
    root = emu.add_folder(None, "Root")
    other = emu.add_folder(None, "Other")
    for index in range(5):
        emu.add_file(root, f"{index}.jpg", "image/jpeg", b"x")
    _, first = await get_json(session, f"{api_url}/files", **list_params(root, pageSize="2"))
    token = first["nextPageToken"]
    assert not token.isdigit() and len(token) >= 16
    status, body = await get_json(session, f"{api_url}/files", **list_params(other, pageToken=token))
    assert status == 400
    ids = [f["id"] for f in first["files"]]
    while token:
        status, body = await get_json(session, f"{api_url}/files", **list_params(root, pageSize="2", pageToken=token))
        assert status == 200
        ids += [f["id"] for f in body["files"]]
        token = body.get("nextPageToken")
    assert len(ids) == len(set(ids)) == 5


async def test_scripted_empty_page_still_carries_a_token(
    emu: DriveEmulator, api_url: str, session: aiohttp.ClientSession
) -> None:
    root = emu.add_folder(None, "Root")
    emu.add_file(root, "a.jpg", "image/jpeg", b"x")
    emu.list_page_sizes.append(0)
    _, body = await get_json(session, f"{api_url}/files", **list_params(root))
    assert body["files"] == [] and body["nextPageToken"]


async def test_trashed_items_are_listed_unless_filtered(
    emu: DriveEmulator, api_url: str, session: aiohttp.ClientSession
) -> None:
    root = emu.add_folder(None, "Root")
    kept = emu.add_file(root, "kept.jpg", "image/jpeg", b"x")
    binned = emu.add_file(root, "binned.jpg", "image/jpeg", b"y")
    emu.trash(binned)
    q_all = {"key": KEY, "q": f"'{root}' in parents", "fields": "files(id,trashed)"}
    _, everything = await get_json(session, f"{api_url}/files", **q_all)
    assert {f["id"]: f["trashed"] for f in everything["files"]} == {kept: False, binned: True}
    _, live = await get_json(session, f"{api_url}/files", **list_params(root, fields="files(id)"))
    assert [f["id"] for f in live["files"]] == [kept]
    q_bin = {"key": KEY, "q": f"trashed=true and '{root}' in parents", "fields": "files(id)"}
    _, only_trash = await get_json(session, f"{api_url}/files", **q_bin)
    assert [f["id"] for f in only_trash["files"]] == [binned]


async def test_folder_needing_resource_key_lists_nothing_without_it(
    emu: DriveEmulator, api_url: str, session: aiohttp.ClientSession
) -> None:
    root = emu.add_folder(None, "Root", resource_key="0-secretkey")
    emu.add_file(root, "a.jpg", "image/jpeg", b"x")
    _, body = await get_json(session, f"{api_url}/files", **list_params(root))
    assert body["files"] == []
    headers = {"X-Goog-Drive-Resource-Keys": f"{root}/0-secretkey"}
    async with session.get(f"{api_url}/files", params=list_params(root), headers=headers) as response:
        assert len((await response.json())["files"]) == 1


# --- files.get --------------------------------------------------------------------------------------


async def test_get_metadata_with_fields_and_404_shape(
    emu: DriveEmulator, api_url: str, session: aiohttp.ClientSession
) -> None:
    root = emu.add_folder(None, "Root")
    image = emu.add_image(root, "a.jpg", width=100, height=50)
    status, body = await get_json(session, f"{api_url}/files/{image}", key=KEY, fields="id,name,parents,size")
    assert status == 200
    assert body == {"id": image, "name": "a.jpg", "parents": [root], "size": str(len(emu.content_of(image)))}
    status, body = await get_json(session, f"{api_url}/files/{image}", key=KEY)
    assert set(body) == {"kind", "id", "name", "mimeType"}
    status, body = await get_json(session, f"{api_url}/files/1doesNotExist00000000", key=KEY)
    assert status == 404
    assert_google_error(body, 404, "notFound")
    assert body["error"]["errors"][0]["location"] == "fileId"


async def test_get_needs_the_resource_key_header(
    emu: DriveEmulator, api_url: str, session: aiohttp.ClientSession
) -> None:
    image = emu.add_image(None, "old.jpg", resource_key=True)
    key = emu.items[image].resource_key
    status, _ = await get_json(session, f"{api_url}/files/{image}", key=KEY)
    assert status == 404
    headers = {"X-Goog-Drive-Resource-Keys": f"1other/0-x, {image}/{key}"}
    async with session.get(f"{api_url}/files/{image}", params={"key": KEY}, headers=headers) as response:
        assert response.status == 200


async def test_private_items_are_not_found(emu: DriveEmulator, api_url: str, session: aiohttp.ClientSession) -> None:
    private = emu.add_folder(None, "Private", shared=False)
    status, body = await get_json(session, f"{api_url}/files/{private}", key=KEY)
    assert status == 404
    assert_google_error(body, 404, "notFound")


# --- alt=media --------------------------------------------------------------------------------------


async def test_media_redirects_to_a_keyless_download_url(
    emu: DriveEmulator, api_url: str, session: aiohttp.ClientSession
) -> None:
    image = emu.add_image(None, "a.jpg")
    params = {"key": KEY, "alt": "media"}
    async with session.get(f"{api_url}/files/{image}", params=params, allow_redirects=False) as response:
        assert response.status == 302
        location = response.headers["Location"]
    assert KEY not in location
    async with session.get(location) as response:
        assert response.status == 200
        assert response.headers["Content-Length"] == str(len(emu.content_of(image)))
        assert await response.read() == emu.content_of(image)
    forged = location[:-4] + "0000"
    async with session.get(forged) as response:
        assert response.status == 404


async def test_media_ranges_and_416_on_an_empty_file(
    emu: DriveEmulator, api_url: str, session: aiohttp.ClientSession
) -> None:
    emu.redirect_downloads = False
    data = bytes(range(256)) * 4
    file_id = emu.add_file(None, "data.jpg", "image/jpeg", data)
    empty = emu.add_file(None, "empty.jpg", "image/jpeg", b"")
    params = {"key": KEY, "alt": "media"}
    async with session.get(f"{api_url}/files/{file_id}", params=params, headers={"Range": "bytes=1000-"}) as response:
        assert response.status == 206
        assert response.headers["Content-Range"] == f"bytes 1000-1023/{len(data)}"
        assert await response.read() == data[1000:]
    async with session.get(f"{api_url}/files/{file_id}", params=params, headers={"Range": "bytes=10-19"}) as response:
        assert response.status == 206 and await response.read() == data[10:20]
    async with session.get(f"{api_url}/files/{file_id}", params=params, headers={"Range": "bytes=5000-"}) as response:
        assert response.status == 416
    async with session.get(f"{api_url}/files/{empty}", params=params) as response:
        assert response.status == 200 and await response.read() == b""
    async with session.get(f"{api_url}/files/{empty}", params=params, headers={"Range": "bytes=0-"}) as response:
        assert response.status == 416
        assert response.headers["Content-Range"] == "bytes */0"
    assert emu.range_headers[-1] == (empty, "bytes=0-")


async def test_native_files_are_not_downloadable(
    emu: DriveEmulator, api_url: str, session: aiohttp.ClientSession
) -> None:
    doc = emu.add_native(None, "Doc")
    status, body = await get_json(session, f"{api_url}/files/{doc}", key=KEY, alt="media")
    assert status == 403
    assert_google_error(body, 403, "fileNotDownloadable")


# --- contents ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["jpeg", "png", "webp"])
async def test_padded_images_still_decode_and_match_their_checksum(
    emu: DriveEmulator, api_url: str, session: aiohttp.ClientSession, fmt: str
) -> None:
    size_bytes = 3 * 2**20 + 17
    image = emu.add_image(None, f"big.{fmt}", fmt=fmt, width=320, height=200, size_bytes=size_bytes)
    _, meta = await get_json(session, f"{api_url}/files/{image}", key=KEY, fields="size,md5Checksum")
    async with session.get(f"{api_url}/files/{image}", params={"key": KEY, "alt": "media"}) as response:
        data = await response.read()
    assert len(data) == size_bytes == int(meta["size"])
    assert hashlib.md5(data).hexdigest() == meta["md5Checksum"]
    with Image.open(io.BytesIO(data)) as decoded:
        decoded.load()
        assert decoded.size == (320, 200)
        assert decoded.format == fmt.upper()


def test_huge_content_is_generated_on_the_fly() -> None:
    size_bytes = 2 * 2**30
    content = Content(lambda: b"HEAD", min_size_bytes=size_bytes, pad_seed=3)
    assert content.size_bytes == size_bytes
    tail = b"".join(content.iter_bytes(size_bytes - 10, size_bytes + 50))
    assert len(tail) == 10
    assert b"".join(content.iter_bytes(0, 6)) == b"HEAD" + b"".join(content.iter_bytes(4, 6))
    assert not content.is_computed  # nothing above needed the checksum of the whole 2 GiB


def test_same_seed_builds_the_same_tree() -> None:
    first, second = DriveEmulator(seed=5), DriveEmulator(seed=5)
    tree_a, tree_b = build_demo_tree(first, 6, seed=5), build_demo_tree(second, 6, seed=5)
    assert tree_a.root_id == tree_b.root_id and tree_a.expected_image_ids == tree_b.expected_image_ids
    some = sorted(tree_a.expected_image_ids)[:3]
    assert [first.md5_of(i) for i in some] == [second.md5_of(i) for i in some]


def test_replace_content_changes_bytes_checksum_and_time() -> None:
    emu = DriveEmulator(seed=1)
    image = emu.add_image(None, "a.jpg")
    md5, modified = emu.md5_of(image), emu.items[image].modified_time
    emu.replace_content(image)
    assert emu.md5_of(image) != md5
    assert emu.items[image].modified_time > modified


async def test_serve_demo_prints_a_working_link(
    session: aiohttp.ClientSession, capsys: pytest.CaptureFixture[str]
) -> None:
    server = asyncio.create_task(serve_demo("127.0.0.1", 0, n_images=3, seed=9))
    try:
        output = ""
        while "Folder link" not in output:  # bounded by the test timeout
            await asyncio.sleep(0.01)
            output += capsys.readouterr().out
        api_url = re.search(r"API URL:\s+(\S+)", output)
        link = re.search(r"Folder link:\s+(\S+)", output)
        assert api_url and link
        client = DriveClient(session, api_url=api_url.group(1), api_key=DEMO_API_KEY)
        found = [entry async for batch in client.walk(parse_folder_link(link.group(1))) for entry in batch]
        expected = build_demo_tree(DriveEmulator(seed=9), 3, seed=9)
        assert {entry.id for entry in found} == expected.expected_image_ids | set(expected.expected_skipped)
    finally:
        server.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await server


# --- parsers ----------------------------------------------------------------------------------------


def test_parse_fields_nesting_and_paths() -> None:
    assert parse_fields("nextPageToken, files(id,imageMediaMetadata(width,height)),files/name") == {
        "nextPageToken": None,
        "files": {"id": None, "imageMediaMetadata": {"width": None, "height": None}, "name": None},
    }


def test_parse_query_handles_escapes_and_order() -> None:
    query = parse_query(r"trashed = false and 'it\'s' in parents")
    assert (query.parent_id, query.trashed) == ("it's", False)
    with pytest.raises(ValueError):
        parse_query("mimeType = 'image/jpeg'")


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [("bytes=0-", 10, (0, 10)), ("bytes=4-", 10, (4, 10)), ("bytes=2-3", 10, (2, 4)), ("bytes=-3", 10, (7, 10)),
     ("bytes=10-", 10, None), ("bytes=0-", 0, None), ("items=0-", 10, None), ("bytes=5-2", 10, None)],
)  # fmt: skip
def test_parse_range(header: str, size: int, expected: tuple[int, int] | None) -> None:
    assert parse_range(header, size) == expected
