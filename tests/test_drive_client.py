"""The Drive client against the emulator over real HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator

import aiohttp
import pytest
from prometheus_client import REGISTRY

from drive_helpers import API_KEY, drive, fast_client, read_all, walk_all
from fotoowl.pacer import LocalPacer, Pacer
from fotoowl.sources.base import FolderNotAccessible
from fotoowl.sources.google_drive.client import DriveClient
from fotoowl.sources.google_drive.errors import DriveConfigError, DriveError
from fotoowl.sources.google_drive.links import FolderRef
from fotoowl.testing.drive_emulator import (
    SPREADSHEET_MIME_TYPE,
    DriveEmulator,
    Fault,
    FaultOn,
    build_demo_tree,
    running_emulator,
)


@pytest.fixture
def emu() -> DriveEmulator:
    return DriveEmulator(api_keys={API_KEY}, seed=11)


@pytest.fixture
async def client(emu: DriveEmulator, session: aiohttp.ClientSession) -> AsyncIterator[DriveClient]:
    async with drive(emu, session) as client:
        yield client


# --- listing ----------------------------------------------------------------------------------------


async def test_large_folder_is_listed_in_pages_of_1000(emu: DriveEmulator, client: DriveClient) -> None:
    root = emu.add_folder(None, "Big")
    ids = {emu.add_file(root, f"IMG_{index:05d}.jpg", "image/jpeg", b"\xff\xd8\xff") for index in range(2500)}
    walked = await walk_all(client, FolderRef(root))
    assert emu.list_calls == 3
    assert walked.batch_sizes == [1000, 1000, 500]
    assert len(walked.file_ids) == len(ids) and set(walked.file_ids) == ids


async def test_short_and_empty_pages_do_not_end_the_listing(emu: DriveEmulator, client: DriveClient) -> None:
    root = emu.add_folder(None, "Root")
    ids = {emu.add_file(root, f"{index}.jpg", "image/jpeg", b"x") for index in range(10)}
    emu.list_page_sizes.extend([0, 3, 0, 0, 1])
    walked = await walk_all(client, FolderRef(root))
    assert set(walked.file_ids) == ids and len(walked.file_ids) == 10
    assert emu.list_calls == 6


async def test_random_short_pages_still_list_everything(session: aiohttp.ClientSession) -> None:
    emu = DriveEmulator(api_keys={API_KEY}, seed=3, short_page_rate=0.7)
    root = emu.add_folder(None, "Root")
    ids = {emu.add_file(root, f"{index}.jpg", "image/jpeg", b"x") for index in range(40)}
    async with drive(emu, session, page_size=10) as client:
        walked = await walk_all(client, FolderRef(root))
    assert sorted(walked.file_ids) == sorted(ids)


async def test_demo_tree_walk_finds_every_image_once(emu: DriveEmulator, client: DriveClient) -> None:
    tree = build_demo_tree(emu, 12, seed=11)
    walked = await walk_all(client, FolderRef(tree.root_id))

    assert len(walked.file_ids) == len(set(walked.file_ids))
    assert set(walked.file_ids) == tree.expected_image_ids
    assert {s.id: s.reason for s in walked.skipped} == dict(tree.expected_skipped)
    paths = {f.id: f.folder_path for f in walked.files}
    assert paths[tree.special["duplicate_name"]] == ""
    assert paths[tree.special["outside_image"]] == "Day 2/Shared elsewhere (shortcut)"
    outside_target = emu.items[tree.special["file_shortcut_outside"]].shortcut_target_id or ""
    inside_target = emu.items[tree.special["file_shortcut_inside"]].shortcut_target_id or ""
    assert paths[outside_target] == ".._escape"  # where the shortcut sits
    assert paths[inside_target] == "Day 1 (Ceremony)"  # listed there before the shortcut was met
    assert {"", "Day 1 (Ceremony)", "Day 1 (Ceremony)/Portraits", "Day 2", ".._escape"} <= set(paths.values())
    # The folder shortcut looping back to the root was not followed: root files appear once, at "".
    root_listings = emu.count("list", tree.root_id)
    assert root_listings == 1


async def test_demo_tree_models_and_skip_reasons(emu: DriveEmulator, client: DriveClient) -> None:
    tree = build_demo_tree(emu, 3, seed=2)
    walked = await walk_all(client, FolderRef(tree.root_id))
    by_id = {f.id: f for f in walked.files}

    raw = by_id[tree.special["raw_by_extension"]]
    assert raw.mime_type == "application/octet-stream" and raw.name == "IMG_0002.CR2"
    assert by_id[tree.special["raw_by_type"]].mime_type == "image/x-nikon-nef"
    assert by_id[tree.special["heic"]].mime_type == "image/heic"
    assert by_id[tree.special["zero_byte"]].size_bytes == 0

    unicode_image = by_id[tree.special["unicode_name"]]
    assert unicode_image.name == "Café ☕ été.jpg"
    assert unicode_image.md5 == emu.md5_of(unicode_image.id)
    assert unicode_image.size_bytes == len(emu.content_of(unicode_image.id))
    assert unicode_image.width and unicode_image.height
    assert unicode_image.created_time is not None and unicode_image.created_time.tzinfo is not None

    keyed = by_id[tree.special["keyed_image"]]
    assert keyed.resource_key == emu.items[keyed.id].resource_key

    messages = {s.reason: s.message for s in walked.skipped}
    assert set(messages) == {"google_native", "not_image", "dangling_shortcut"}
    assert all(messages.values())
    assert tree.special["trashed_image"] not in by_id


async def test_subfolder_resource_key_is_sent(emu: DriveEmulator, client: DriveClient) -> None:
    root = emu.add_folder(None, "Root")
    keyed = emu.add_folder(root, "Old share", resource_key=True)
    inside = emu.add_image(keyed, "inside.jpg")
    walked = await walk_all(client, FolderRef(root))
    assert walked.file_ids == [inside]
    assert f"{keyed}/{emu.items[keyed].resource_key}" in emu.resource_key_headers


async def test_root_with_resource_key_from_the_link(emu: DriveEmulator, client: DriveClient) -> None:
    root = emu.add_folder(None, "Old root", resource_key="0-rootkey")
    image = emu.add_image(root, "a.jpg")
    walked = await walk_all(client, FolderRef(root, "0-rootkey"))
    assert walked.file_ids == [image]
    with pytest.raises(FolderNotAccessible):
        await walk_all(client, FolderRef(root))


async def test_shortcuts_to_files_and_folders(emu: DriveEmulator, client: DriveClient) -> None:
    root = emu.add_folder(None, "Root")
    elsewhere = emu.add_folder(None, "Elsewhere", resource_key=True)
    far_image = emu.add_image(elsewhere, "far.jpg")
    loose = emu.add_image(None, "loose.jpg", resource_key=True)
    emu.add_shortcut(root, "to elsewhere", elsewhere)
    emu.add_shortcut(root, "to loose", loose)
    emu.add_shortcut(root, "to loose again", loose)
    # A shortcut whose recorded type is stale: the target is really a folder.
    emu.add_shortcut(root, "stale", elsewhere, target_mime_type="image/jpeg")
    sheet = emu.add_native(root, "Sheet", SPREADSHEET_MIME_TYPE)
    emu.add_shortcut(root, "to sheet", sheet)
    walked = await walk_all(client, FolderRef(root))
    assert sorted(walked.file_ids) == sorted([far_image, loose])
    paths = {f.id: f.folder_path for f in walked.files}
    assert paths == {loose: "", far_image: "to elsewhere"}
    assert [s.reason for s in walked.skipped] == ["google_native"]  # the sheet, once
    assert emu.count("list", elsewhere) == 1


async def test_folder_cycle_is_walked_once(emu: DriveEmulator, client: DriveClient) -> None:
    root = emu.add_folder(None, "Root")
    child = emu.add_folder(root, "Child")
    grandchild = emu.add_folder(child, "Grandchild")
    emu.add_shortcut(grandchild, "up", root)
    emu.add_shortcut(root, "down", grandchild)
    images = [emu.add_image(folder, f"{n}.jpg") for n, folder in enumerate((root, child, grandchild))]
    walked = await walk_all(client, FolderRef(root))
    assert sorted(walked.file_ids) == sorted(images)
    assert {f.id: f.folder_path for f in walked.files}[images[2]] in ("down", "Child/Grandchild")
    assert all(emu.count("list", folder) == 1 for folder in (root, child, grandchild))


async def test_non_recursive_walk_stays_in_the_root(emu: DriveEmulator, client: DriveClient) -> None:
    root = emu.add_folder(None, "Root")
    top = emu.add_image(root, "top.jpg")
    sub = emu.add_folder(root, "Sub")
    emu.add_image(sub, "deep.jpg")
    emu.add_shortcut(root, "to sub", sub)
    walked = await walk_all(client, FolderRef(root), recursive=False)
    assert walked.file_ids == [top]
    assert emu.list_calls == 1


async def test_dangling_shortcut_is_skipped(emu: DriveEmulator, client: DriveClient) -> None:
    root = emu.add_folder(None, "Root")
    shortcut = emu.add_shortcut(root, "gone.jpg", "1nonexistentTargetId000000000000")
    walked = await walk_all(client, FolderRef(root))
    assert walked.files == []
    (skipped,) = walked.skipped
    assert (skipped.id, skipped.reason, skipped.folder_path) == (shortcut, "dangling_shortcut", "")


# --- the root folder --------------------------------------------------------------------------------


async def test_missing_folder_says_to_share_with_anyone(emu: DriveEmulator, client: DriveClient) -> None:
    with pytest.raises(FolderNotAccessible) as caught:
        await client.get_folder(FolderRef("1nonexistentFolderId00000000000"))
    assert "Anyone with the link" in caught.value.message
    assert (caught.value.status, caught.value.reason, caught.value.transient) == (404, "notFound", False)
    assert emu.count("get", "1nonexistentFolderId00000000000") == 1


async def test_private_folder_and_file_links_are_not_accessible(emu: DriveEmulator, client: DriveClient) -> None:
    private = emu.add_folder(None, "Private", shared=False)
    with pytest.raises(FolderNotAccessible, match="Anyone with the link"):
        await client.get_folder(FolderRef(private))
    image = emu.add_image(None, "a.jpg")
    with pytest.raises(FolderNotAccessible, match="not a folder") as caught:
        await client.get_folder(FolderRef(image))
    assert caught.value.reason == "notAFolder"
    binned = emu.add_folder(None, "Binned")
    emu.trash(binned)
    with pytest.raises(FolderNotAccessible, match="trash"):
        await client.get_folder(FolderRef(binned))


async def test_get_folder_returns_metadata(emu: DriveEmulator, client: DriveClient) -> None:
    root = emu.add_folder(None, "Wedding 2024")
    folder = await client.get_folder(FolderRef(root))
    assert (folder["id"], folder["name"]) == (root, "Wedding 2024")


@pytest.mark.parametrize("api_key", [None, "not-a-real-key", "disabled-key"])
async def test_key_problems_are_config_errors(
    emu: DriveEmulator, session: aiohttp.ClientSession, api_key: str | None
) -> None:
    emu.disabled_keys = frozenset({"disabled-key"})
    root = emu.add_folder(None, "Root")
    async with drive(emu, session, api_key=api_key) as client:
        with pytest.raises(DriveConfigError) as caught:
            await client.get_folder(FolderRef(root))
    assert caught.value.transient is False
    assert "key" in caught.value.message.lower() or "enable" in caught.value.message.lower()
    assert emu.count("get", root) == 1


# --- retries ----------------------------------------------------------------------------------------

TRANSIENT_FAULTS = {
    "429+retry-after": Fault.rate_limited(429, "rateLimitExceeded", retry_after_s=0),
    "403 rateLimitExceeded": Fault.http(403, "rateLimitExceeded"),
    "403 userRateLimitExceeded": Fault.http(403, "userRateLimitExceeded"),
    "500": Fault.http(500),
    "502 html": Fault.http(502),
    "503": Fault.http(503),
    "504": Fault.http(504),
    "connection dropped": Fault.drop(),
}


@pytest.mark.parametrize("fault", TRANSIENT_FAULTS.values(), ids=TRANSIENT_FAULTS.keys())
@pytest.mark.parametrize("on", ["list", "get", "media"])
async def test_transient_errors_are_retried(emu: DriveEmulator, client: DriveClient, fault: Fault, on: FaultOn) -> None:
    root = emu.add_folder(None, "Root")
    image = emu.add_image(root, "a.jpg")
    emu.inject(root if on in ("list", "get") else image, fault, times=2, on=on)
    walked = await walk_all(client, FolderRef(root))
    assert walked.file_ids == [image]
    data, md5 = await read_all(client, image)
    assert md5 == emu.md5_of(image) and data == emu.content_of(image)
    assert emu.count(on, root if on != "media" else image) == 3


@pytest.mark.parametrize("fault", TRANSIENT_FAULTS.values(), ids=TRANSIENT_FAULTS.keys())
async def test_transient_errors_give_up_after_max_tries(emu: DriveEmulator, client: DriveClient, fault: Fault) -> None:
    image = emu.add_image(None, "a.jpg")
    emu.inject(image, fault, times=None, on="media")
    with pytest.raises(DriveError) as caught:
        await read_all(client, image)
    assert caught.value.transient is True
    if fault.kind == "drop":
        # aiohttp itself resends an idempotent request once when a reused connection drops.
        assert client.max_tries <= emu.count("media", image) <= 2 * client.max_tries
    else:
        assert emu.count("media", image) == client.max_tries == 4


async def test_retry_after_sets_a_floor_on_the_backoff(session: aiohttp.ClientSession) -> None:
    client = DriveClient(
        session, api_url="http://127.0.0.1:9/drive/v3", api_key=None, backoff_base_s=1.0, backoff_cap_s=32.0
    )
    assert all(client.backoff_s(1, retry_after_s=5.0) >= 5.0 for _ in range(50))
    assert all(0.0 <= client.backoff_s(3, None) <= 4.0 for _ in range(50))
    assert all(client.backoff_s(30, None) <= 32.0 for _ in range(50))


PERMANENT_FAULTS = {
    "downloadQuotaExceeded": Fault.download_quota(),
    "cannotDownloadFile": Fault.http(403, "cannotDownloadFile"),
    "cannotDownloadAbusiveFile": Fault.http(403, "cannotDownloadAbusiveFile"),
    "dailyLimitExceeded": Fault.http(403, "dailyLimitExceeded"),
    "badRequest": Fault.http(400, "badRequest"),
}


@pytest.mark.parametrize("fault", PERMANENT_FAULTS.values(), ids=PERMANENT_FAULTS.keys())
async def test_permanent_errors_are_not_retried(emu: DriveEmulator, client: DriveClient, fault: Fault) -> None:
    image = emu.add_image(None, "a.jpg")
    emu.inject(image, fault, times=None, on="media")
    with pytest.raises(DriveError) as caught:
        await read_all(client, image)
    assert (caught.value.transient, caught.value.reason, caught.value.status) == (False, fault.reason, fault.status)
    assert emu.count("media", image) == 1


async def test_missing_and_native_files_are_permanent(emu: DriveEmulator, client: DriveClient) -> None:
    doc = emu.add_native(None, "Doc")
    with pytest.raises(DriveError) as caught:
        await read_all(client, doc)
    assert (caught.value.reason, caught.value.transient) == ("fileNotDownloadable", False)
    with pytest.raises(DriveError) as caught:
        await read_all(client, "1fileThatIsNotThere0000000000")
    assert (caught.value.status, caught.value.reason, caught.value.transient) == (404, "notFound", False)
    assert emu.count("media", doc) == emu.count("media", "1fileThatIsNotThere0000000000") == 1


async def test_transport_failure_is_transient_with_status_0(session: aiohttp.ClientSession) -> None:
    emu = DriveEmulator(api_keys={API_KEY})
    async with running_emulator(emu) as api_url:
        pass  # the port is closed again: nothing listens there any more
    client = fast_client(session, api_url, max_tries=2)
    with pytest.raises(DriveError) as caught:
        await client.get_folder(FolderRef("1someFolderId00000000000000"))
    assert (caught.value.status, caught.value.reason, caught.value.transient) == (0, "transport", True)


async def test_read_timeout_is_retried(session: aiohttp.ClientSession) -> None:
    emu = DriveEmulator(api_keys={API_KEY})
    image = emu.add_image(None, "a.jpg")
    emu.inject(image, Fault.latency(0.3), times=1, on="media")
    async with drive(emu, session, read_timeout_s=0.05) as client:
        _, md5 = await read_all(client, image)
    assert md5 == emu.md5_of(image)
    assert emu.count("media", image) == 2


# --- downloads --------------------------------------------------------------------------------------


@pytest.mark.parametrize("redirect", [True, False])
async def test_resume_after_reset_fetches_only_the_rest(
    emu: DriveEmulator, client: DriveClient, redirect: bool
) -> None:
    emu.redirect_downloads = redirect
    image = emu.add_image(None, "big.jpg", size_bytes=300_000)
    emu.inject(image, Fault.reset(after_bytes=100_000))
    data, md5 = await read_all(client, image, chunk_size_bytes=8192)
    assert len(data) == 300_000 and md5 == emu.md5_of(image)
    assert emu.bytes_served[image] == 300_000  # nothing was sent twice
    assert emu.range_headers == [(image, None), (image, "bytes=100000-")]


async def test_resume_after_a_short_chunked_body(emu: DriveEmulator, client: DriveClient) -> None:
    image = emu.add_image(None, "big.jpg", size_bytes=50_000)
    emu.inject(image, Fault.truncate(after_bytes=20_000))
    data, md5 = await read_all(client, image, expected_size_bytes=50_000)
    assert md5 == emu.md5_of(image) and len(data) == 50_000
    assert emu.range_headers == [(image, None), (image, "bytes=20000-")]
    assert emu.bytes_served[image] == 50_000


async def test_resume_when_the_server_ignores_range(emu: DriveEmulator, client: DriveClient) -> None:
    image = emu.add_image(None, "big.jpg", size_bytes=40_000)
    emu.inject(image, Fault.reset(after_bytes=15_000))
    emu.inject(image, Fault.ignore_range())
    async with client.download(image, chunk_size_bytes=4096) as download:
        chunks = [chunk async for chunk in download]
    assert all(len(chunk) <= 4096 for chunk in chunks)
    assert b"".join(chunks) == emu.content_of(image)
    assert (download.bytes_read, download.md5_hex) == (40_000, emu.md5_of(image))


async def test_resumes_count_as_tries(emu: DriveEmulator, client: DriveClient) -> None:
    image = emu.add_image(None, "big.jpg", size_bytes=40_000)
    emu.inject(image, Fault.reset(after_bytes=1_000), times=None)
    with pytest.raises(DriveError) as caught:
        await read_all(client, image)
    assert caught.value.transient is True
    assert emu.count("media", image) == client.max_tries


async def test_zero_byte_file_never_gets_a_range(emu: DriveEmulator, client: DriveClient) -> None:
    empty = emu.add_file(None, "empty.jpg", "image/jpeg", b"")
    data, md5 = await read_all(client, empty, expected_size_bytes=0)
    assert data == b"" and md5 == hashlib.md5(b"").hexdigest()
    assert emu.range_headers == [(empty, None)]


async def test_download_sends_the_resource_key(emu: DriveEmulator, client: DriveClient) -> None:
    image = emu.add_image(None, "old.jpg", resource_key=True)
    key = emu.items[image].resource_key
    with pytest.raises(DriveError) as caught:
        await read_all(client, image)
    assert caught.value.status == 404
    data, _ = await read_all(client, image, resource_key=key)
    assert data == emu.content_of(image)


async def test_redirect_to_a_foreign_host_is_refused(session: aiohttp.ClientSession) -> None:
    emu = DriveEmulator(api_keys={API_KEY}, download_base_url="https://drive.google.com.evil.example")
    image = emu.add_image(None, "a.jpg")
    async with drive(emu, session) as client:
        with pytest.raises(DriveError) as caught:
            await read_all(client, image)
    assert (caught.value.reason, caught.value.transient) == ("unexpectedRedirect", False)
    assert emu.count("media", image) == 1


async def test_stopping_early_releases_the_connection(emu: DriveEmulator, client: DriveClient) -> None:
    image = emu.add_image(None, "big.jpg", size_bytes=2_000_000)
    download = client.download(image, chunk_size_bytes=1024)
    async for chunk in download:
        assert chunk
        break
    await download.aclose()
    assert 0 < download.bytes_read < 2_000_000
    _, md5 = await read_all(client, image)
    assert md5 == emu.md5_of(image)


async def test_md5_mismatch_is_visible_to_the_caller(emu: DriveEmulator, client: DriveClient) -> None:
    root = emu.add_folder(None, "Root")
    image = emu.add_image(root, "a.jpg", md5_override="0" * 32)
    (listed,) = (await walk_all(client, FolderRef(root))).files
    _, md5 = await read_all(client, image)
    assert listed.md5 == "0" * 32 != md5


async def test_pacer_is_consulted_for_every_request(emu: DriveEmulator, session: aiohttp.ClientSession) -> None:
    class CountingPacer:
        calls = 0

        async def acquire(self) -> None:
            self.calls += 1

        async def charge(self) -> None:
            raise AssertionError("nothing charges this pacer without waiting")

        async def slow_down(self) -> float:
            raise AssertionError("no rate limit was answered")

    pacer = CountingPacer()
    root = emu.add_folder(None, "Root")
    image = emu.add_image(root, "a.jpg")
    emu.inject(image, Fault.http(503), times=1)
    async with drive(emu, session, pacer=pacer) as client:
        await walk_all(client, FolderRef(root))
        await read_all(client, image)
    assert pacer.calls == emu.count("get", root) + emu.list_calls + emu.count("media", image) == 4


async def test_requests_and_retries_are_counted_in_metrics(emu: DriveEmulator, client: DriveClient) -> None:
    def sample(name: str, labels: dict[str, str]) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    image = emu.add_image(None, "a.jpg")
    emu.inject(image, Fault.http(503), times=1)
    retries_before = sample("fotoowl_drive_retries_total", {"reason": "backendError"})
    unavailable_before = sample("fotoowl_drive_requests_total", {"kind": "media", "status": "503"})
    await read_all(client, image)
    assert sample("fotoowl_drive_retries_total", {"reason": "backendError"}) == retries_before + 1
    assert sample("fotoowl_drive_requests_total", {"kind": "media", "status": "503"}) == unavailable_before + 1


# --- the API key stays secret -----------------------------------------------------------------------


async def test_key_never_appears_in_logs_or_errors(
    session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "AIzaSySECRET-never-log-me-1234567890"
    emu = DriveEmulator(api_keys={secret}, seed=4)
    tree = build_demo_tree(emu, 4, seed=4)
    image = sorted(tree.expected_image_ids)[0]
    emu.inject(image, Fault.reset(after_bytes=10))
    emu.inject(None, Fault.http(503), times=2, on="list")
    emu.inject(tree.special["zero_byte"], Fault.download_quota(), times=None)
    errors: list[BaseException] = []
    caplog.set_level(logging.DEBUG)
    async with running_emulator(emu) as api_url:
        client = fast_client(session, api_url, api_key=secret)
        walked = await walk_all(client, FolderRef(tree.root_id))
        for file in walked.files:
            try:
                await read_all(client, file.id, resource_key=file.resource_key)
            except DriveError as error:
                errors.append(error)
        for bad_key in (None, "wrong"):
            try:
                await fast_client(session, api_url, api_key=bad_key).get_folder(FolderRef(tree.root_id))
            except DriveError as error:
                errors.append(error)
    closed = fast_client(session, api_url, api_key=secret, max_tries=1)
    try:
        await closed.get_folder(FolderRef(tree.root_id))
    except DriveError as error:
        errors.append(error)
    # aiohttp's connect timeout quotes the full URL: the client must scrub it.
    leaky = aiohttp.ConnectionTimeoutError(f"Connection timeout to host {api_url}/files?key={secret}&alt=media")
    errors.append(closed._transport_error(leaky))

    assert len(errors) == 5
    assert {type(e).__name__ for e in errors} == {"DriveError", "DriveConfigError"}
    assert "DEBUG" in {record.levelname for record in caplog.records}
    for record in caplog.records:
        assert secret not in record.getMessage()
        assert secret not in repr(record.__dict__)
    for raised in errors:
        assert secret not in str(raised) and secret not in repr(raised)
        # A chained aiohttp exception would print its URL in tracebacks.
        assert raised.__cause__ is None and (raised.__suppress_context__ or raised.__context__ is None)
    assert secret not in repr(client)


async def test_rate_limit_answers_slow_the_pacer_down(emu: DriveEmulator, session: aiohttp.ClientSession) -> None:
    class RecordingPacer:
        acquired = 0
        slowdowns = 0

        async def acquire(self) -> None:
            self.acquired += 1

        async def charge(self) -> None:
            raise AssertionError("nothing charges this pacer without waiting")

        async def slow_down(self) -> float:
            self.slowdowns += 1
            return 1.0

    pacer = RecordingPacer()
    root = emu.add_folder(None, "Root")
    image = emu.add_image(root, "a.jpg")
    emu.inject(image, Fault.http(503), times=1)
    emu.inject(image, Fault.rate_limited(429), times=1)
    emu.inject(image, Fault.rate_limited(403, "userRateLimitExceeded"), times=1)
    emu.inject(image, Fault.download_quota(), times=1)
    async with drive(emu, session, pacer=pacer, max_tries=5) as client:
        with pytest.raises(DriveError) as raised:
            await read_all(client, image)
    # The two rate limits slowed the pace; a server error and a per-file quota say nothing of it.
    assert raised.value.reason == "downloadQuotaExceeded"
    assert (pacer.acquired, pacer.slowdowns) == (4, 2)


async def test_adaptive_pacing_finds_a_quota_lower_than_its_ceiling(session: aiohttp.ClientSession) -> None:
    """Against a 20 requests/s quota, a fixed pace of 2,000/s is refused over and over; the adaptive
    pacer settles under the quota after a few refusals. The quota is low enough that any machine
    asks faster than it: at 100 requests/s a slow machine could stay under it for a whole run."""

    async def download_all(pacer: Pacer) -> int:
        emu = DriveEmulator(api_keys={API_KEY}, seed=5, quota_per_s=20)
        root = emu.add_folder(None, "Root")
        images = [emu.add_image(root, f"{n}.jpg", width=16, height=16) for n in range(60)]
        limit = asyncio.Semaphore(16)

        async def one(client: DriveClient, image: str) -> None:
            async with limit:
                data, md5 = await read_all(client, image)
            assert md5 == emu.md5_of(image) and data

        async with drive(emu, session, pacer=pacer, max_tries=1000) as client:
            await asyncio.gather(*(one(client, image) for image in images))
        assert sum(emu.count("media", image) for image in images) == len(images) + emu.rate_limited
        return emu.rate_limited

    class FixedPacer(LocalPacer):
        async def slow_down(self) -> float:
            return self.rate_per_s

    adaptive = LocalPacer(2000, 100, cut_interval_s=0.05)
    refused_adaptive = await download_all(adaptive)
    # Read at once: the pace climbs back toward the ceiling with time, as long as the next run takes.
    settled_per_s = adaptive.rate_per_s
    refused_fixed = await download_all(FixedPacer(2000, 100))
    assert settled_per_s <= 150  # settled near the quota, far under its ceiling
    assert refused_adaptive * 3 < refused_fixed
