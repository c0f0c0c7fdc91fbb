"""The Dropbox source (links, content hash, walk, downloads, errors) against the emulator over real HTTP."""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest

from fotoowl.pacer import LocalPacer
from fotoowl.sources.base import (
    Entry,
    FolderLink,
    FolderNotAccessible,
    InvalidLink,
    Skipped,
    SourceConfigError,
    SourceError,
)
from fotoowl.sources.dropbox.content_hash import BLOCK_SIZE_BYTES, DropboxContentHasher, content_hash
from fotoowl.sources.dropbox.errors import DEFAULT_RETRY_AFTER_S, error_from_response
from fotoowl.sources.dropbox.links import parse_dropbox_link
from fotoowl.sources.dropbox.source import DropboxSource
from fotoowl.testing.dropbox_emulator import DropboxEmulator, DropboxFault, running_emulator

APP_KEY = "fotoowl-test-app-key"
APP_SECRET = "s3cret-app-secret-never-log-me"
PASSWORD = "open sesame 42"


@pytest.fixture
def emu() -> DropboxEmulator:
    return DropboxEmulator(app_key=APP_KEY, app_secret=APP_SECRET, seed=5)


def fast_source(session: aiohttp.ClientSession, base_url: str, **overrides: Any) -> DropboxSource:
    """A source whose backoff is milliseconds, so retry tests stay fast."""
    options: dict[str, Any] = {
        "app_key": APP_KEY,
        "app_secret": APP_SECRET,
        "max_tries": 4,
        "backoff_base_s": 0.001,
        "backoff_cap_s": 0.005,
        "read_timeout_s": 5.0,
    }
    options.update(overrides)
    return DropboxSource(session, api_url=base_url, content_url=base_url, **options)


@asynccontextmanager
async def dropbox(
    emu: DropboxEmulator, session: aiohttp.ClientSession, **overrides: Any
) -> AsyncIterator[DropboxSource]:
    async with running_emulator(emu) as base_url:
        yield fast_source(session, base_url, **overrides)


@pytest.fixture
async def source(emu: DropboxEmulator, session: aiohttp.ClientSession) -> AsyncIterator[DropboxSource]:
    async with dropbox(emu, session) as source:
        yield source


async def walk_all(source: DropboxSource, link: FolderLink, *, recursive: bool = True) -> list[list[Entry | Skipped]]:
    return [list(batch) async for batch in source.walk(link, recursive=recursive)]


async def read(source: DropboxSource, link: FolderLink, entry: Entry, **kwargs: Any) -> bytes:
    options: dict[str, Any] = {"expected_size_bytes": entry.size_bytes, "chunk_size_bytes": 64 * 1024}
    options.update(kwargs)
    async with source.open(link, entry.source_id, locator=entry.locator, **options) as stream:
        return b"".join([chunk async for chunk in stream])


def independent_content_hash(data: bytes) -> str:
    blocks = [data[i : i + 4 * 1024 * 1024] for i in range(0, len(data), 4 * 1024 * 1024)]
    return hashlib.sha256(b"".join(hashlib.sha256(block).digest() for block in blocks)).hexdigest()


# --- links ------------------------------------------------------------------------------------------


def test_new_form_link_keeps_only_its_rlkey() -> None:
    link = parse_dropbox_link(" https://www.dropbox.com/scl/fo/x1y2z3abc/AKey_-9zz?rlkey=r4nd0m&st=abc12&dl=0 ")
    assert link == FolderLink(
        source="dropbox",
        folder_id="x1y2z3abc",
        url="https://www.dropbox.com/scl/fo/x1y2z3abc/AKey_-9zz?rlkey=r4nd0m",
        key="https://www.dropbox.com/scl/fo/x1y2z3abc/AKey_-9zz?rlkey=r4nd0m",
    )


@pytest.mark.parametrize(
    "text",
    [
        "https://www.dropbox.com/sh/s6fvw6ol7rmqo1x/AAAgWRSbjmYDvPpDB30Sykjfa?dl=0",
        "dropbox.com/sh/s6fvw6ol7rmqo1x/AAAgWRSbjmYDvPpDB30Sykjfa",
        "http://DROPBOX.com/sh/s6fvw6ol7rmqo1x/AAAgWRSbjmYDvPpDB30Sykjfa/?dl=1&utm_source=x",
    ],
)
def test_old_form_links_normalise_to_www(text: str) -> None:
    link = parse_dropbox_link(text, password="pw")
    assert link.url == "https://www.dropbox.com/sh/s6fvw6ol7rmqo1x/AAAgWRSbjmYDvPpDB30Sykjfa"
    assert (link.source, link.folder_id, link.password) == ("dropbox", "s6fvw6ol7rmqo1x", "pw")


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "Paste the link of a Dropbox folder"),
        ("https://www.dropbox.com/scl/fi/abc123/photo.jpg?rlkey=x&dl=0", "single file"),
        ("https://www.dropbox.com/s/abc123/photo.jpg?dl=0", "single file"),
        ("https://www.dropbox.com/scl/fo/abc123/AKey?dl=0", "rlkey"),
        ("https://www.dropbox.com/scl/fo/abc123/AKey?rlkey=a%20b", "rlkey"),
        ("https://drive.google.com/drive/folders/1abcdefghijk", "Only www.dropbox.com"),
        ("https://www.dropbox.com.evil.example/sh/abc/key", "Only www.dropbox.com"),
        ("https://www.dropbox.com:8443/sh/abc/key", "Only www.dropbox.com"),
        ("https://evil.example@www.dropbox.com/sh/abc/key", "'@'"),
        ("ftp://www.dropbox.com/sh/abc/key", "Only http(s)"),
        ("https://www.dropbox.com/home/Photos", "own Dropbox"),
        ("https://www.dropbox.com/sh/abc123", "cut short"),
        ("https://www.dropbox.com/sh/abc123/AAAkey/AAAsub?dl=0", "inside a shared folder"),
        ("https://www.dropbox.com/request/abc123", "does not point to a shared folder"),
        ("https://www.dropbox.com/sh/abc$123/key", "malformed"),
        ("https://www.dropbox.com/sh/abc 123/key", "spaces"),
    ],
)
def test_bad_links_say_why(text: str, says: str) -> None:
    with pytest.raises(InvalidLink) as caught:
        parse_dropbox_link(text)
    assert says in str(caught.value)


def test_refusals_show_what_a_folder_link_looks_like() -> None:
    for text in ("https://www.dropbox.com/s/abc/photo.jpg", "https://example.com/x", ""):
        with pytest.raises(InvalidLink, match=r"https://www\.dropbox\.com/scl/fo/<id>/<key>\?rlkey="):
            parse_dropbox_link(text)


# --- content hash -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("length", "expected"),
    [
        # Reference values of another implementation (rclone's dbhash tests), for runs of b"A".
        (0, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
        (1, "1cd6ef71e6e0ff46ad2609d403dc3fee244417089aa4461245a4e4fe23a55e42"),
        (4_194_304, "d4d63bac5b866c71620185392a8a6218ac1092454a2d16f820363b69852befa3"),
        (4_194_305, "8f553da8d00d0bf509d8470e242888be33019c20c0544811f5b2b89e98360b92"),
    ],
)
def test_content_hash_matches_reference_values(length: int, expected: str) -> None:
    data = b"A" * length
    assert content_hash(data) == expected
    hasher = DropboxContentHasher()
    for start in range(0, length, 1_000_003):  # chunks that straddle the 4 MiB block boundary
        hasher.update(data[start : start + 1_000_003])
    assert hasher.hexdigest() == expected and hasher.bytes_hashed == length


def test_content_hash_equals_an_independent_computation() -> None:
    data = os.urandom(2 * BLOCK_SIZE_BYTES + 12_345)
    hasher = DropboxContentHasher()
    position, sizes = 0, [1, 65_536, BLOCK_SIZE_BYTES, 7, 3_000_000]
    while position < len(data):
        size = sizes[position % len(sizes)]
        hasher.update(memoryview(data)[position : position + size])
        position += size
        hasher.hexdigest()  # reading it mid-stream must not disturb what follows
    assert hasher.hexdigest() == independent_content_hash(data) == content_hash(data)
    assert content_hash(b"hello rdrop2") == "1aa2b7623dfff520c4abdc1227d10bc4e229b74005b66b3458345830e556f4de"


# --- walking ----------------------------------------------------------------------------------------


def nested_tree(emu: DropboxEmulator) -> tuple[str, dict[str, str]]:
    """A shared folder: 5 images and a text file at the top, Sub with 3 and Sub/Deeper with 2, an empty folder."""
    root = emu.add_folder(None, "Wedding 2024")
    ids: dict[str, str] = {}
    for index in range(5):
        ids[f"/IMG_{index}.jpg"] = emu.add_image(root, f"IMG_{index}.jpg")
    ids["/notes.txt"] = emu.add_file(root, "notes.txt", b"Bring spare batteries.\n")
    sub = emu.add_folder(root, "Sub")
    for index in range(3):
        ids[f"/Sub/s{index}.png"] = emu.add_image(sub, f"s{index}.png", fmt="png")
    deeper = emu.add_folder(sub, "Deeper")
    ids["/Sub/Deeper/d0.jpg"] = emu.add_image(deeper, "d0.jpg")
    ids["/Sub/Deeper/d1.webp"] = emu.add_image(deeper, "d1.webp", fmt="webp")
    emu.add_folder(root, "Empty")
    return root, ids


async def test_walk_of_a_nested_folder_over_short_pages(emu: DropboxEmulator, session: aiohttp.ClientSession) -> None:
    root, ids = nested_tree(emu)
    link = parse_dropbox_link(emu.share(root).url)
    emu.list_page_sizes.extend([0, 1, 0])  # empty and one-item pages that still have more
    async with dropbox(emu, session, page_limit=2) as source:
        assert await source.folder_name(link) == "Wedding 2024"
        batches = await walk_all(source, link)
    assert all(1 <= len(batch) <= 2 for batch in batches)
    entries = {e.locator: e for batch in batches for e in batch if isinstance(e, Entry)}
    skipped = [e for batch in batches for e in batch if isinstance(e, Skipped)]
    assert set(entries) == set(ids) - {"/notes.txt"}
    assert [(s.name, s.reason, s.source_id) for s in skipped] == [("notes.txt", "not_image", ids["/notes.txt"])]
    assert {e.folder_path for e in entries.values()} == {"", "Sub", "Sub/Deeper"}
    deep = entries["/Sub/Deeper/d1.webp"]
    assert (deep.source_id, deep.name, deep.folder_path, deep.mime_type) == (
        ids["/Sub/Deeper/d1.webp"],
        "d1.webp",
        "Sub/Deeper",
        "image/webp",
    )
    for locator, entry in entries.items():
        data = emu.content_of(ids[locator])
        assert entry.size_bytes == len(data)
        assert entry.checksum == independent_content_hash(data) and entry.checksum_kind == "dropbox_content_hash"
        assert entry.modified_at is not None and entry.modified_at.tzinfo is not None
    # One listing per folder, breadth first, limit sent as configured, pages followed through continue.
    assert [emu.count("list", p) for p in ("", "/Sub", "/Empty", "/Sub/Deeper")] == [1, 1, 1, 1]
    assert emu.list_limits == [2, 2, 2, 2] and emu.count("continue") >= 6


async def test_walk_without_recursion_lists_the_top_only(emu: DropboxEmulator, source: DropboxSource) -> None:
    root, _ = nested_tree(emu)
    batches = await walk_all(source, parse_dropbox_link(emu.share(root, form="sh").url), recursive=False)
    assert {e.locator for batch in batches for e in batch if isinstance(e, Entry)} == {
        f"/IMG_{i}.jpg" for i in range(5)
    }
    assert emu.count("list") == 1


async def test_non_images_and_undownloadable_files_are_skipped(emu: DropboxEmulator, source: DropboxSource) -> None:
    root = emu.add_folder(None, "Mixed")
    for name in ("clip.mp4", "notes.txt", "README", "archive.zip"):
        emu.add_file(root, name, b"not an image")
    emu.add_file(root, "locked.jpg", b"\xff\xd8\xff", is_downloadable=False)
    emu.add_file(root, "DSC_0001.NEF", b"raw bytes")
    emu.add_image(root, "Upper.JPG")
    batches = await walk_all(source, parse_dropbox_link(emu.share(root).url))
    items = {e.name: e for batch in batches for e in batch}
    reasons = {name: e.reason for name, e in items.items() if isinstance(e, Skipped)}
    assert reasons == {
        "clip.mp4": "not_image",
        "notes.txt": "not_image",
        "README": "not_image",
        "archive.zip": "not_image",
        "locked.jpg": "not_downloadable",
    }
    assert (items["clip.mp4"].mime_type, items["DSC_0001.NEF"].mime_type) == ("video/mp4", "image/x-nikon-nef")
    assert isinstance(items["Upper.JPG"], Entry) and items["Upper.JPG"].mime_type == "image/jpeg"


async def test_an_invalidated_cursor_restarts_the_folder_without_repeats(
    emu: DropboxEmulator, session: aiohttp.ClientSession
) -> None:
    root = emu.add_folder(None, "Root")
    ids = {emu.add_image(root, f"{index}.jpg", width=16, height=16) for index in range(7)}
    emu.add_folder(root, "Sub")
    link = parse_dropbox_link(emu.share(root).url)
    seen: list[str] = []
    async with dropbox(emu, session, page_limit=3) as source:
        async for batch in source.walk(link, recursive=True):
            seen += [e.source_id for e in batch]
            emu.invalidate_cursors()
    assert sorted(seen) == sorted(ids)
    assert emu.count("list", "") == 3 and emu.count("list", "/Sub") == 1


async def test_a_folder_deleted_during_the_walk_is_passed_over(emu: DropboxEmulator, source: DropboxSource) -> None:
    root = emu.add_folder(None, "Root")
    top = emu.add_image(root, "top.jpg", width=16, height=16)
    doomed = emu.add_folder(root, "Doomed")
    emu.add_image(doomed, "lost.jpg", width=16, height=16)
    kept = emu.add_image(emu.add_folder(root, "Kept"), "kept.jpg", width=16, height=16)
    seen: list[str] = []
    async for batch in source.walk(parse_dropbox_link(emu.share(root).url), recursive=True):
        seen += [e.source_id for e in batch]
        if doomed in emu.nodes:
            emu.remove(doomed)
    assert seen == [top, kept] and emu.count("list", "/Doomed") == 1


# --- downloads --------------------------------------------------------------------------------------


async def test_download_matches_the_listed_content_hash(emu: DropboxEmulator, session: aiohttp.ClientSession) -> None:
    root = emu.add_folder(None, "Big")
    big = emu.add_image(root, "Café ☕ été.jpg", size_bytes=BLOCK_SIZE_BYTES + 300_000)
    link = parse_dropbox_link(emu.share(root).url)
    async with dropbox(emu, session, compute_content_hash=True) as source:
        (entry,) = [e for batch in await walk_all(source, link) for e in batch if isinstance(e, Entry)]
        async with source.open(
            link,
            entry.source_id,
            locator=entry.locator,
            expected_size_bytes=entry.size_bytes,
            chunk_size_bytes=256 * 1024,
        ) as stream:
            data = b"".join([chunk async for chunk in stream])
    assert data == emu.content_of(big) and data[:3] == b"\xff\xd8\xff"
    assert entry.checksum == independent_content_hash(data) == stream.content_hash
    # The path went out in Dropbox-API-Arg as ASCII, non-ASCII escaped.
    assert emu.api_args[-1].isascii() and "\\u2615" in emu.api_args[-1]


async def test_a_dropped_body_resumes_with_range(emu: DropboxEmulator, source: DropboxSource) -> None:
    root = emu.add_folder(None, "Root")
    image = emu.add_image(root, "big.jpg", size_bytes=300_000)
    link = parse_dropbox_link(emu.share(root).url)
    (entry,) = [e for batch in await walk_all(source, link) for e in batch if isinstance(e, Entry)]
    emu.inject("/big.jpg", DropboxFault.reset(after_bytes=100_000))
    assert await read(source, link, entry, chunk_size_bytes=8192) == emu.content_of(image)
    assert emu.range_headers == [("/big.jpg", None), ("/big.jpg", "bytes=100000-")]
    assert emu.bytes_served["/big.jpg"] == 300_000  # nothing was sent twice


async def test_a_short_clean_body_and_an_ignored_range_still_give_every_byte(
    emu: DropboxEmulator, source: DropboxSource
) -> None:
    root = emu.add_folder(None, "Root")
    image = emu.add_image(root, "a.png", fmt="png", size_bytes=60_000)
    link = parse_dropbox_link(emu.share(root).url)
    (entry,) = [e for batch in await walk_all(source, link) for e in batch if isinstance(e, Entry)]
    emu.inject("/a.png", DropboxFault.truncate(after_bytes=20_000))
    emu.inject("/a.png", DropboxFault.ignore_range())
    assert await read(source, link, entry, chunk_size_bytes=4096) == emu.content_of(image)
    assert [r for _, r in emu.range_headers] == [None, "bytes=20000-"]


async def test_a_changed_size_is_refused_before_any_byte(emu: DropboxEmulator, source: DropboxSource) -> None:
    root = emu.add_folder(None, "Root")
    emu.add_image(root, "a.jpg")
    link = parse_dropbox_link(emu.share(root).url)
    (entry,) = [e for batch in await walk_all(source, link) for e in batch if isinstance(e, Entry)]
    with pytest.raises(SourceError) as caught:
        await read(source, link, entry, expected_size_bytes=(entry.size_bytes or 0) + 1)
    assert (caught.value.reason, caught.value.transient) == ("size_mismatch", False)
    assert emu.count("download") == 1


async def test_a_file_changed_between_two_attempts_is_not_stitched_together(
    emu: DropboxEmulator, source: DropboxSource
) -> None:
    root = emu.add_folder(None, "Root")
    image = emu.add_file(root, "a.jpg", b"\xff\xd8" + bytes(30_000))
    link = parse_dropbox_link(emu.share(root).url)
    (entry,) = [e for batch in await walk_all(source, link) for e in batch if isinstance(e, Entry)]
    emu.inject("/a.jpg", DropboxFault.reset(after_bytes=10_000))
    received = 0
    with pytest.raises(SourceError) as caught:
        async with source.open(
            link, entry.source_id, locator=entry.locator, expected_size_bytes=entry.size_bytes, chunk_size_bytes=1024
        ) as stream:
            async for chunk in stream:
                received += len(chunk)
                if received == 1024:
                    emu.replace_content(image, b"\xff\xd8" + bytes(range(256)) * 117 + bytes(48))
    assert caught.value.reason == "changed_during_download" and caught.value.transient
    assert emu.count("download", "/a.jpg") == 2


async def test_an_empty_file_and_a_missing_locator(emu: DropboxEmulator, source: DropboxSource) -> None:
    root = emu.add_folder(None, "Root")
    emu.add_file(root, "empty.jpg", b"")
    link = parse_dropbox_link(emu.share(root).url)
    (entry,) = [e for batch in await walk_all(source, link) for e in batch if isinstance(e, Entry)]
    assert (entry.size_bytes, entry.checksum) == (0, hashlib.sha256(b"").hexdigest())
    assert await read(source, link, entry) == b""
    assert emu.range_headers == [("/empty.jpg", None)]
    stream = source.open(link, entry.source_id, locator=None, expected_size_bytes=0, chunk_size_bytes=1024)
    with pytest.raises(SourceError, match="no path inside its shared folder"):
        _ = [chunk async for chunk in stream]


@pytest.mark.parametrize("missing_error", [("path", "not_found"), ("shared_link_not_found",)])
async def test_a_file_vanished_after_listing_fails_alone(
    emu: DropboxEmulator, source: DropboxSource, missing_error: tuple[str, ...]
) -> None:
    emu.missing_file_error = missing_error
    root = emu.add_folder(None, "Root")
    ids = [emu.add_image(root, f"{index}.jpg", width=16, height=16) for index in range(3)]
    link = parse_dropbox_link(emu.share(root).url)
    entries = [e for batch in await walk_all(source, link) for e in batch if isinstance(e, Entry)]
    emu.remove(ids[1])
    outcomes: dict[str, object] = {}
    for entry in entries:
        try:
            outcomes[entry.name] = await read(source, link, entry)
        except SourceError as error:
            outcomes[entry.name] = error
    failure = outcomes.pop("1.jpg")
    assert isinstance(failure, SourceError) and not isinstance(failure, FolderNotAccessible)
    assert (failure.reason, failure.transient, failure.status) == ("not_found", False, 409)
    assert "1.jpg" in str(failure)
    assert outcomes == {"0.jpg": emu.content_of(ids[0]), "2.jpg": emu.content_of(ids[2])}
    assert emu.count("download", "/1.jpg") == 1  # a permanent error is not retried


async def test_a_folder_path_is_not_a_file(emu: DropboxEmulator, source: DropboxSource) -> None:
    root = emu.add_folder(None, "Root")
    emu.add_folder(root, "Sub")
    link = parse_dropbox_link(emu.share(root).url)
    with pytest.raises(SourceError) as caught:
        async with source.open(link, "id:x", locator="/Sub", expected_size_bytes=None, chunk_size_bytes=1024) as s:
            _ = [chunk async for chunk in s]
    assert caught.value.reason == "is_directory" and not caught.value.transient


# --- rate limits and transient failures -------------------------------------------------------------


class RecordingPacer(LocalPacer):
    def __init__(self) -> None:
        super().__init__(rate_per_s=1000.0, burst=100)
        self.acquired = 0
        self.slowed = 0

    async def acquire(self) -> None:
        self.acquired += 1
        await super().acquire()

    async def slow_down(self) -> float:
        self.slowed += 1
        return await super().slow_down()


async def test_a_429_burst_is_retried_after_retry_after_and_slows_the_pacer(
    emu: DropboxEmulator, session: aiohttp.ClientSession
) -> None:
    root = emu.add_folder(None, "Root")
    image = emu.add_image(root, "a.jpg")
    link = parse_dropbox_link(emu.share(root).url)
    emu.inject("", DropboxFault.rate_limited(retry_after_s=0.05), times=3, route="list")
    emu.inject("/a.jpg", DropboxFault.rate_limited(retry_after_s=0.05, json_body=False), times=1)
    pacer = RecordingPacer()
    async with dropbox(emu, session, pacer=pacer) as source:
        started = time.monotonic()
        (entry,) = [e for batch in await walk_all(source, link) for e in batch if isinstance(e, Entry)]
        assert await read(source, link, entry) == emu.content_of(image)
        elapsed_s = time.monotonic() - started
    assert emu.count("list", "") == 4 and emu.count("download", "/a.jpg") == 2
    assert pacer.slowed == 4 and pacer.acquired == 6
    assert elapsed_s >= 4 * 0.05  # each retry waited at least retry_after


def test_a_429_without_any_delay_waits_five_seconds() -> None:
    error = error_from_response(429, b"Too Many Requests", {}, route="files/list_folder", redact=str)
    assert (error.transient, error.retry_after_s, error.reason) == (True, DEFAULT_RETRY_AFTER_S, "too_many_requests")
    body = (
        b'{"error_summary": "too_many_requests/..", "error": {"reason": {".tag": "too_many_requests"}, '
        b'"retry_after": 300}}'
    )
    error = error_from_response(429, body, {"Retry-After": "7"}, route="files/list_folder", redact=str)
    assert error.retry_after_s == 300.0


async def test_server_errors_are_retried_then_given_up(emu: DropboxEmulator, source: DropboxSource) -> None:
    root = emu.add_folder(None, "Root")
    image = emu.add_image(root, "a.jpg")
    link = parse_dropbox_link(emu.share(root).url)
    emu.inject("", DropboxFault.http(503), times=2, route="list")
    emu.inject("/a.jpg", DropboxFault.drop(), times=1)
    (entry,) = [e for batch in await walk_all(source, link) for e in batch if isinstance(e, Entry)]
    assert await read(source, link, entry) == emu.content_of(image)
    emu.inject("/a.jpg", DropboxFault.http(500), times=None)
    with pytest.raises(SourceError) as caught:
        await read(source, link, entry)
    assert (caught.value.transient, caught.value.status) == (True, 500)
    assert emu.count("download", "/a.jpg") == 2 + source.client.max_tries


# --- links refused, passwords, credentials ----------------------------------------------------------


async def test_a_password_protected_link(emu: DropboxEmulator, source: DropboxSource) -> None:
    root = emu.add_folder(None, "Private")
    image = emu.add_image(root, "a.jpg")
    url = emu.share(root, password=PASSWORD).url
    for password, says in ((None, "a password is needed"), ("wrong", "check the password")):
        link = source.parse_link(url, password=password)
        with pytest.raises(FolderNotAccessible, match=says) as caught:
            await source.folder_name(link)
        assert caught.value.reason == "shared_link_access_denied"
        with pytest.raises(FolderNotAccessible):
            await walk_all(source, link)
    link = source.parse_link(url, password=PASSWORD)
    assert await source.folder_name(link) == "Private"
    (entry,) = [e for batch in await walk_all(source, link) for e in batch if isinstance(e, Entry)]
    assert await read(source, link, entry) == emu.content_of(image)
    assert PASSWORD not in repr(link.url) and PASSWORD not in repr(source)


async def test_a_revoked_or_mistyped_link_is_not_accessible(emu: DropboxEmulator, source: DropboxSource) -> None:
    root = emu.add_folder(None, "Gone")
    shared = emu.share(root)
    mistyped = parse_dropbox_link(shared.url.replace(f"rlkey={shared.rlkey}", "rlkey=wrongkey"))
    emu.revoke(shared)
    for link in (parse_dropbox_link(shared.url), mistyped):
        with pytest.raises(FolderNotAccessible, match="cannot find this shared folder") as caught:
            await source.folder_name(link)
        assert caught.value.reason == "shared_link_not_found"
        with pytest.raises(FolderNotAccessible):
            await walk_all(source, link)


async def test_a_wrong_app_secret_is_a_config_error(emu: DropboxEmulator, session: aiohttp.ClientSession) -> None:
    root = emu.add_folder(None, "Root")
    link = parse_dropbox_link(emu.share(root).url)
    async with dropbox(emu, session, app_secret="not-the-secret") as source:
        with pytest.raises(SourceConfigError, match="app key and secret") as caught:
            await source.folder_name(link)
        assert caught.value.status == 401 and "not-the-secret" not in str(caught.value)
        with pytest.raises(SourceConfigError):
            await walk_all(source, link)
    assert emu.count("metadata") == 1 and emu.count("list") == 1  # not retried
    async with dropbox(emu, session, app_key=None) as source:
        with pytest.raises(SourceConfigError) as caught:
            await source.folder_name(link)
    assert caught.value.reason == "missing_app_credentials" and emu.count("metadata") == 1


async def test_secrets_stay_out_of_logs_reprs_and_messages(
    emu: DropboxEmulator, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    root = emu.add_folder(None, "Root")
    for index in range(3):
        emu.add_image(root, f"{index}.jpg", width=16, height=16)
    url = emu.share(root, password=PASSWORD).url
    emu.inject(None, DropboxFault.rate_limited(retry_after_s=0.01), times=2, route="list")
    emu.inject("/0.jpg", DropboxFault.reset(after_bytes=10))
    emu.inject("/1.jpg", DropboxFault.http(500), times=None)
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    async with dropbox(emu, session) as source:
        link = source.parse_link(url, password=PASSWORD)
        texts += [repr(source), repr(source.client), repr(link.url)]
        for entry in [e for batch in await walk_all(source, link) for e in batch if isinstance(e, Entry)]:
            stream = source.open(
                link,
                entry.source_id,
                locator=entry.locator,
                expected_size_bytes=entry.size_bytes,
                chunk_size_bytes=4096,
            )
            texts.append(repr(stream))
            try:
                async with stream:
                    _ = [chunk async for chunk in stream]
            except SourceError as error:
                texts.append(str(error))
    async with dropbox(emu, session, app_secret="wrong-" + APP_SECRET) as source:
        with pytest.raises(SourceConfigError) as caught:
            await source.folder_name(link)
        texts += [str(caught.value), repr(caught.value), repr(source)]
    texts.append(caplog.text)
    assert "retrying" in caplog.text  # the retries were logged
    token = base64.b64encode(f"{APP_KEY}:{APP_SECRET}".encode()).decode()
    for text in texts:
        for secret in (APP_KEY, APP_SECRET, token, PASSWORD):
            assert secret not in text


async def test_redaction_covers_a_quoted_authorization_header(session: aiohttp.ClientSession) -> None:
    source = DropboxSource(session, app_key=APP_KEY, app_secret=APP_SECRET)
    token = base64.b64encode(f"{APP_KEY}:{APP_SECRET}".encode()).decode()
    body = f'Invalid authorization value in HTTP header "Authorization": "Basic {token}"'.encode()
    error = error_from_response(400, body, {}, route="files/list_folder", redact=source.client.redact)
    assert isinstance(error, SourceConfigError) and token not in str(error) and "REDACTED" in str(error)
