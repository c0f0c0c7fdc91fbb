"""The keyless Drive reader (sources/google_drive_public) against the keyless-pages emulator over real
HTTP on 127.0.0.1, and its HTML reading on pages written the way Google writes them."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp import web
from yarl import URL

from fotoowl.pacer import LocalPacer
from fotoowl.sources.base import Entry, FolderLink, FolderNotAccessible, InvalidLink, Skipped, Source, SourceError
from fotoowl.sources.google_drive_public.download import PublicDownload
from fotoowl.sources.google_drive_public.listing import to_entry
from fotoowl.sources.google_drive_public.pages import ListedItem, parse_folder_page, read_download_page
from fotoowl.sources.google_drive_public.source import DrivePublicSource, public_pacer
from fotoowl.testing.drive_public_emulator import PublicDriveEmulator, PublicEmulatorServer, PublicFault, start_emulator

SCAN_THRESHOLD_BYTES = 200_000


@pytest.fixture
def emu() -> PublicDriveEmulator:
    return PublicDriveEmulator(seed=7, scan_threshold_bytes=SCAN_THRESHOLD_BYTES)


@pytest.fixture
async def server(emu: PublicDriveEmulator) -> AsyncIterator[PublicEmulatorServer]:
    # Pages and downloads on two addresses, as drive.google.com and drive.usercontent.google.com are.
    server = await start_emulator(emu, separate_download=True)
    yield server
    await server.cleanup()


def make_source(session: aiohttp.ClientSession, server: PublicEmulatorServer, **overrides: Any) -> DrivePublicSource:
    """Backoff in milliseconds, so retry tests stay fast."""
    options: dict[str, Any] = {
        "pacer": None,
        "max_tries": 4,
        "backoff_base_s": 0.001,
        "backoff_cap_s": 0.005,
        "read_timeout_s": 5.0,
    }
    options.update(overrides)
    return DrivePublicSource(session, page_url=server.page_url, download_url=server.download_url, **options)


@pytest.fixture
def source(session: aiohttp.ClientSession, server: PublicEmulatorServer) -> DrivePublicSource:
    return make_source(session, server)


def link_to(source: DrivePublicSource, folder_id: str) -> FolderLink:
    return source.parse_link(f"https://drive.google.com/drive/folders/{folder_id}?usp=sharing")


@dataclass
class Walked:
    entries: dict[str, Entry] = field(default_factory=dict)
    skipped: dict[str, Skipped] = field(default_factory=dict)
    batches: list[list[str]] = field(default_factory=list)


async def walk_all(source: DrivePublicSource, link: FolderLink, *, recursive: bool = True) -> Walked:
    walked = Walked()
    async for batch in source.walk(link, recursive=recursive):
        walked.batches.append([item.source_id for item in batch])
        for item in batch:
            if isinstance(item, Entry):
                walked.entries[item.source_id] = item
            else:
                walked.skipped[item.source_id] = item
    return walked


async def read_all(
    source: DrivePublicSource, link: FolderLink, entry: Entry | str, chunk_size_bytes: int = 1 << 16
) -> tuple[bytes, PublicDownload]:
    entry_id, locator = (entry, None) if isinstance(entry, str) else (entry.source_id, entry.locator)
    stream = source.open(link, entry_id, locator=locator, expected_size_bytes=None, chunk_size_bytes=chunk_size_bytes)
    try:
        data = b"".join([chunk async for chunk in stream])
    finally:
        await stream.aclose()
    return data, stream


# --- a whole folder -----------------------------------------------------------------------------------


async def test_nested_public_folder_is_walked_and_downloaded(
    emu: PublicDriveEmulator, source: DrivePublicSource
) -> None:
    root = emu.add_folder(None, "Smith & Jones <wedding> 'été'")
    small = emu.add_image(root, "IMG_0001.jpg")
    png = emu.add_image(root, "Café ☕.png", fmt="png")
    large = emu.add_image(root, "panorama.jpg", size_bytes=3 * SCAN_THRESHOLD_BYTES)
    over_quota = emu.add_image(root, "popular.jpg")
    emu.set_quota_exceeded(over_quota)
    dropped = emu.add_image(root, "dropped.jpg", size_bytes=150_000)
    emu.inject(dropped, PublicFault.reset(after_bytes=40_000))
    hostile = emu.add_image(root, '<div class="flip-entry-title">x</div>.jpg')
    doc = emu.add_native(root, "Shot list", "document")
    sheet = emu.add_native(root, "Invoices", "spreadsheets")
    pdf = emu.add_file(root, "contract.pdf", "application/pdf", b"%PDF-1.7\n")
    day1 = emu.add_folder(root, "Day 1")
    ceremony = emu.add_image(day1, "ceremony.webp", fmt="webp")
    portraits = emu.add_folder(day1, "Portraits")
    portrait = emu.add_image(portraits, "portrait.jpg")
    keyed = emu.add_folder(root, "Old link", resource_key=True)
    keyed_image = emu.add_image(keyed, "old.jpg", resource_key=True)

    link = link_to(source, root)
    assert await source.folder_name(link) == "Smith & Jones <wedding> 'été'"
    walked = await walk_all(source, link)

    # One page per folder: the root first, then (several folders read at once) its two subfolders
    # and the one below Day 1 in the order their pages come back.
    assert set(walked.batches[0]) == {small, png, large, over_quota, dropped, hostile, doc, sheet, pdf}
    assert sorted(sorted(batch) for batch in walked.batches[1:]) == sorted([[ceremony], [keyed_image], [portrait]])
    assert set(walked.entries) == {small, png, large, over_quota, dropped, hostile, ceremony, keyed_image, portrait}
    assert {k: (s.reason, s.mime_type) for k, s in walked.skipped.items()} == {
        doc: ("google_native", "application/vnd.google-apps.document"),
        sheet: ("google_native", "application/vnd.google-apps.spreadsheet"),
        pdf: ("not_image", "application/pdf"),
    }
    assert "document" in walked.skipped[doc].message
    assert walked.entries[png].name == "Café ☕.png" and walked.entries[png].mime_type == "image/png"
    assert walked.entries[hostile].name == '<div class="flip-entry-title">x</div>.jpg'
    assert walked.entries[ceremony].folder_path == "Day 1" and walked.entries[ceremony].mime_type == "image/webp"
    assert walked.entries[portrait].folder_path == "Day 1/Portraits"
    assert walked.entries[keyed_image].folder_path == "Old link"
    assert walked.entries[keyed_image].locator == emu.items[keyed_image].resource_key
    for entry in walked.entries.values():
        assert (entry.size_bytes, entry.checksum, entry.checksum_kind) == (None, None, None)
        assert entry.source_id in emu.items
    assert walked.entries[small].folder_path == "" and walked.entries[small].locator is None

    for entry in walked.entries.values():
        if entry.source_id == over_quota:
            continue
        data, stream = await read_all(source, link, entry)
        assert data == emu.content_of(entry.source_id), entry.name
        assert stream.content_type == emu.items[entry.source_id].mime_type

    # The large file came through the virus-scan form: one plain request, one with the confirmation.
    assert (emu.count("download", large), emu.count("confirmed", large)) == (1, 1)
    assert emu.bytes_served[large] == 3 * SCAN_THRESHOLD_BYTES
    # The dropped body was resumed where it broke, not fetched again.
    assert [r for f, r in emu.range_headers if f == dropped] == [None, "bytes=40000-"]
    assert emu.bytes_served[dropped] == 150_000

    with pytest.raises(SourceError) as caught:
        await read_all(source, link, walked.entries[over_quota])
    assert caught.value.reason == "downloadQuotaExceeded" and not caught.value.transient
    assert "Too many users have viewed or downloaded this file recently" in str(caught.value)
    assert emu.count("download", over_quota) == 1


async def test_it_is_a_source_named_like_the_api_reader(source: DrivePublicSource) -> None:
    reader: Source = source
    link = reader.parse_link("https://drive.google.com/drive/folders/1AbCdEfGhIjKlMnOpQrStUv?resourcekey=0-xyz")
    assert (reader.name, link.source, link.folder_id, link.key) == (
        "google_drive",
        "google_drive",
        "1AbCdEfGhIjKlMnOpQrStUv",
        "0-xyz",
    )
    with pytest.raises(InvalidLink):
        reader.parse_link("https://drive.google.com/file/d/1AbCdEfGhIjKlMnOpQrStUv/view")


async def test_a_large_file_dropped_midway_resumes_past_the_form(
    emu: PublicDriveEmulator, source: DrivePublicSource
) -> None:
    root = emu.add_folder(None, "Big")
    large = emu.add_image(root, "big.jpg", size_bytes=2 * SCAN_THRESHOLD_BYTES)
    emu.inject(large, PublicFault.reset(after_bytes=100_000))
    data, _ = await read_all(source, link_to(source, root), large)
    assert data == emu.content_of(large)
    assert (emu.count("download", large), emu.count("confirmed", large)) == (2, 2)
    assert [r for f, r in emu.range_headers if f == large] == [None, "bytes=100000-"]


async def test_a_large_file_needing_its_resource_key(emu: PublicDriveEmulator, source: DrivePublicSource) -> None:
    root = emu.add_folder(None, "Root", resource_key=True)
    large = emu.add_image(root, "big.jpg", size_bytes=2 * SCAN_THRESHOLD_BYTES, resource_key=True)
    link = source.parse_link(
        f"https://drive.google.com/drive/folders/{root}?resourcekey={emu.items[root].resource_key}"
    )
    walked = await walk_all(source, link)
    assert walked.entries[large].locator == emu.items[large].resource_key
    assert (await read_all(source, link, walked.entries[large]))[0] == emu.content_of(large)
    with pytest.raises(SourceError) as caught:  # without its key the file asks to sign in
        await read_all(source, link, large)
    assert caught.value.reason == "notShared"


async def test_thousands_of_entries_and_an_empty_folder(emu: PublicDriveEmulator, source: DrivePublicSource) -> None:
    root = emu.add_folder(None, "Big")
    ids = {emu.add_file(root, f"IMG_{index:05d}.jpg", "image/jpeg", b"\xff\xd8\xff") for index in range(3000)}
    emu.add_folder(root, "Empty")
    walked = await walk_all(source, link_to(source, root))
    assert set(walked.entries) == ids and len(walked.batches) == 1
    assert emu.total_requests == 2


async def test_a_server_ignoring_range_is_not_repeated(emu: PublicDriveEmulator, source: DrivePublicSource) -> None:
    root = emu.add_folder(None, "Root")
    image = emu.add_image(root, "a.jpg", size_bytes=120_000)
    emu.inject(image, PublicFault.reset(after_bytes=50_000))
    emu.inject(image, PublicFault.ignore_range())
    data, stream = await read_all(source, link_to(source, root), image, chunk_size_bytes=7_000)
    assert data == emu.content_of(image) and stream.bytes_read == 120_000


async def test_non_recursive_walk_stays_in_the_root(emu: PublicDriveEmulator, source: DrivePublicSource) -> None:
    root = emu.add_folder(None, "Root")
    top = emu.add_image(root, "top.jpg")
    sub = emu.add_folder(root, "Sub")
    emu.add_image(sub, "deep.jpg")
    walked = await walk_all(source, link_to(source, root), recursive=False)
    assert set(walked.entries) == {top} and emu.count("page", sub) == 0


# --- sharing ------------------------------------------------------------------------------------------


async def test_a_folder_that_is_not_shared_fails_at_once_with_how_to_share_it(
    emu: PublicDriveEmulator, source: DrivePublicSource
) -> None:
    root = emu.add_folder(None, "Private", shared=False)
    emu.add_image(root, "secret.jpg")
    link = link_to(source, root)
    with pytest.raises(FolderNotAccessible) as caught:
        await source.folder_name(link)
    message = str(caught.value)
    assert "not shared publicly" in message and "Anyone with the link" in message and "Share" in message
    assert not caught.value.transient
    with pytest.raises(FolderNotAccessible):
        await walk_all(source, link)
    assert emu.count("page", root) == 2  # one request each: nothing retried


async def test_a_missing_folder_or_a_missing_resource_key_is_not_accessible(
    emu: PublicDriveEmulator, source: DrivePublicSource
) -> None:
    with pytest.raises(FolderNotAccessible) as caught:
        await source.folder_name(link_to(source, "1NoSuchFolderAnywhere00000"))
    assert "Anyone with the link" in str(caught.value)
    keyed = emu.add_folder(None, "Keyed", resource_key=True)
    with pytest.raises(FolderNotAccessible):
        await source.folder_name(link_to(source, keyed))
    key = emu.items[keyed].resource_key
    link = source.parse_link(f"https://drive.google.com/drive/folders/{keyed}?resourcekey={key}")
    assert await source.folder_name(link) == "Keyed"


async def test_a_subfolder_behind_sign_in_is_skipped_with_the_reason(
    emu: PublicDriveEmulator, source: DrivePublicSource
) -> None:
    root = emu.add_folder(None, "Root")
    shut = emu.add_folder(root, "Shut")
    emu.add_image(shut, "hidden.jpg")
    other = emu.add_folder(root, "Open")
    visible = emu.add_image(other, "visible.jpg")
    emu.inject(shut, PublicFault.sign_in(), on="page")
    walked = await walk_all(source, link_to(source, root))
    assert set(walked.entries) == {visible}
    assert walked.skipped[shut].reason == "folder_not_accessible" and walked.skipped[shut].name == "Shut"


async def test_a_file_asking_to_sign_in_fails_for_good(emu: PublicDriveEmulator, source: DrivePublicSource) -> None:
    root = emu.add_folder(None, "Root")
    image = emu.add_image(root, "a.jpg")
    emu.inject(image, PublicFault.sign_in())
    with pytest.raises(SourceError) as caught:
        await read_all(source, link_to(source, root), image)
    assert caught.value.reason == "notShared" and not caught.value.transient


# --- hosts --------------------------------------------------------------------------------------------


@pytest.fixture
async def elsewhere() -> AsyncIterator[tuple[str, Counter[str]]]:
    """A server that is not Google's, counting what reaches it."""
    hits: Counter[str] = Counter()

    async def handle(request: web.Request) -> web.Response:
        hits[request.path] += 1
        return web.Response(body=b"not the file", headers={"Content-Disposition": "attachment"})

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}", hits
    await runner.cleanup()


async def test_only_google_hosts_are_followed(
    emu: PublicDriveEmulator, source: DrivePublicSource, elsewhere: tuple[str, Counter[str]]
) -> None:
    other_url, hits = elsewhere
    root = emu.add_folder(None, "Root")
    link = link_to(source, root)
    redirected = emu.add_image(root, "a.jpg")
    for location in (
        f"{other_url}/steal",
        "https://drive.google.com.evil.example/download",
        "http://drive.google.com/x",
    ):
        emu.set_redirect(redirected, location)
        with pytest.raises(SourceError) as caught:
            await read_all(source, link, redirected)
        assert caught.value.reason == "unexpectedRedirect" and not caught.value.transient
    # The virus-scan form's action is a redirect too.
    large = emu.add_image(root, "big.jpg", size_bytes=2 * SCAN_THRESHOLD_BYTES)
    emu.download_base_url = other_url
    with pytest.raises(SourceError) as caught:
        await read_all(source, link, large)
    assert caught.value.reason == "unexpectedRedirect"
    assert not hits


def test_the_allowed_hosts(source: DrivePublicSource) -> None:
    allowed = source.fetcher.allowed
    assert allowed(URL("https://drive.google.com/embeddedfolderview?id=x"))
    assert allowed(URL("https://drive.usercontent.google.com/download?id=x"))
    assert allowed(URL("https://doc-0k-9s-docs.googleusercontent.com/docs/securesc/x"))
    assert allowed(URL(source.fetcher.download_url / "download"))
    for url in (
        "http://drive.google.com/x",
        "https://drive.google.com.evil.example/",
        "https://googleusercontent.com.x/",
        "https://accounts.google.com/ServiceLogin",
        "https://www.google.com/sorry/index",
        "/relative",
    ):
        assert not allowed(URL(url)), url


# --- pacing and retries -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault",
    [
        PublicFault.captcha(),
        PublicFault.captcha(status=200),
        PublicFault.sorry_redirect(),
        PublicFault.http(429, retry_after_s=0),
        PublicFault.html_instead(),
    ],
    ids=lambda f: f"{f.kind}-{f.status}",
)
async def test_google_pushing_back_slows_the_pacer(
    emu: PublicDriveEmulator, session: aiohttp.ClientSession, server: PublicEmulatorServer, fault: PublicFault
) -> None:
    root = emu.add_folder(None, "Root")
    image = emu.add_image(root, "a.jpg")
    # Every cut counts here (no interval), and the pace barely recovers during the test.
    pacer = LocalPacer(40.0, 40, recovery_s=600, cut_interval_s=0)
    source = make_source(session, server, pacer=pacer)
    link = link_to(source, root)
    emu.inject(root, fault, on="page")
    assert await source.folder_name(link) == "Root"
    assert pacer.rate_per_s == pytest.approx(20.0, rel=0.01)
    emu.inject(image, fault)
    data, _ = await read_all(source, link, image)
    assert data == emu.content_of(image)
    assert pacer.rate_per_s == pytest.approx(10.0, rel=0.02)


async def test_dropped_connections_are_retried_without_slowing_the_pace(
    emu: PublicDriveEmulator, session: aiohttp.ClientSession, server: PublicEmulatorServer
) -> None:
    root = emu.add_folder(None, "Root")
    image = emu.add_image(root, "a.jpg")
    pacer = LocalPacer(40.0, 40, recovery_s=600, cut_interval_s=0)
    source = make_source(session, server, pacer=pacer)
    emu.inject(root, PublicFault.drop(), on="page")
    emu.inject(image, PublicFault.drop())
    emu.inject(image, PublicFault.http(503))
    link = link_to(source, root)
    walked = await walk_all(source, link)
    assert set(walked.entries) == {image}
    assert (await read_all(source, link, image))[0] == emu.content_of(image)
    assert emu.count("page", root) == 2 and emu.count("download", image) == 3
    assert pacer.rate_per_s == pytest.approx(20.0, rel=0.01)  # the 503 alone


async def test_transient_failures_give_up_after_the_tries(emu: PublicDriveEmulator, source: DrivePublicSource) -> None:
    root = emu.add_folder(None, "Root")
    emu.inject(root, PublicFault.captcha(), on="page", times=None)
    with pytest.raises(SourceError) as caught:
        await source.folder_name(link_to(source, root))
    assert caught.value.transient and caught.value.reason == "captcha"
    assert emu.count("page", root) == 4 and emu.captchas == 4


async def test_the_emulators_own_rate_limit_meets_the_pacer(session: aiohttp.ClientSession) -> None:
    emu = PublicDriveEmulator(seed=3, captcha_over_per_s=30)
    root = emu.add_folder(None, "Root")
    images = [emu.add_image(root, f"{index}.jpg", width=16, height=16) for index in range(40)]
    async with asyncio.timeout(20):
        server = await start_emulator(emu)
        try:
            source = make_source(session, server, pacer=LocalPacer(20.0, 5), max_tries=6)
            link = link_to(source, root)
            await asyncio.gather(*(read_all(source, link, image) for image in images))
        finally:
            await server.cleanup()
    assert emu.captchas == 0


async def test_the_shared_pacer_has_its_own_low_pace() -> None:
    redis = aioredis.Redis()
    try:
        pacer = public_pacer(redis)
        assert pacer.rule.max_rate_per_s <= 2.0 and pacer.key == "fotoowl:pacer:drive-public"
        assert public_pacer(redis, rate_per_s=0.5, burst=1).rule.max_rate_per_s == 0.5
    finally:
        await redis.aclose()


# --- reading the HTML ---------------------------------------------------------------------------------

HAND_WRITTEN_PAGE = """<!DOCTYPE html><html><head>
<TITLE>Trip &amp; Friends &#8211; caf&eacute; - Google Drive</TITLE></head>
<body><a href='https://accounts.google.com/ServiceLogin'>Sign in</a>
<a href="https://www.google.com/intl/en/policies/">Privacy</a>
<div class='flip-entries'>
 <div role=link id='entry-1aaaaaaaaaaaaaaaaaaaaaaaa' class='flip-entry'>
  <div class=flip-entry-info><a target=_blank
     href='https://drive.google.com/file/d/1aaaaaaaaaaaaaaaaaaaaaaaa/view?usp=drive_web&amp;resourcekey=0-abc'>
   <div class="flip-entry-visual"><div class="flip-entry-thumb">
    <img alt="" src="https://lh3.googleusercontent.com/fife/x=s190"></div></div>
   <div class="flip-entry-list-icon">
    <img src="https://drive-thirdparty.googleusercontent.com/16/type/image/x-canon-cr2" alt=""></div>
   <div class="flip-entry-title"> <span>Sunset</span> &lt;1&gt; &amp; <b>more</b>.CR2 </div></a></div></div>
 <div class="flip-entry" id="entry-1bbbbbbbbbbbbbbbbbbbbbbbb"><div class="flip-entry-info">
  <a href="https://drive.google.com/drive/u/0/folders/1bbbbbbbbbbbbbbbbbbbbbbbb">
   <div class="flip-entry-title">unusual traffic</div></a></div></div>
 <div class="flip-entry" id="entry-1cccccccccccccccccccccccc"><div class="flip-entry-info">
  <a href="https://docs.google.com/presentation/d/1cccccccccccccccccccccccc/edit?usp=drive_web">
   <div class="flip-entry-title">Deck</div></a></div></div>
</div>
<a href="https://drive.google.com/drive/folders/1parentparentparentparent">Up</a>
</body></html>"""

# gdown's test sample has anchors and no flip-entry blocks: an older or trimmed page.
BARE_ANCHORS_PAGE = """<html><head><title>files</title></head><body><div>
<a href="https://drive.google.com/file/d/1dddddddddddddddddddddddd/view?usp=drive_web">
<img src="https://drive-thirdparty.googleusercontent.com/16/type/text/plain" alt=""> notes.txt </a>
<a href="https://drive.google.com/file/d/1dddddddddddddddddddddddd/view">again</a>
<a href="https://drive.google.com/drive/folders/1eeeeeeeeeeeeeeeeeeeeeeee">
<img src="https://drive-thirdparty.googleusercontent.com/16/type/application/vnd.google-apps.folder" alt="">
sub </a></div></body></html>"""


def test_a_folder_page_is_read_by_its_structure() -> None:
    page = parse_folder_page(HAND_WRITTEN_PAGE)
    assert page is not None
    assert page.title == "Trip & Friends \u2013 café"
    assert [(i.kind, i.id[:2], i.title, i.icon_type, i.resource_key) for i in page.items] == [
        ("file", "1a", "Sunset <1> & more.CR2", "image/x-canon-cr2", "0-abc"),
        ("folder", "1b", "unusual traffic", None, None),
        ("native", "1c", "Deck", None, None),
    ]
    assert page.items[2].native_type == "application/vnd.google-apps.presentation"
    bare = parse_folder_page(BARE_ANCHORS_PAGE)
    assert bare is not None and [(i.kind, i.title, i.icon_type) for i in bare.items] == [
        ("file", "notes.txt", "text/plain"),
        ("folder", "sub", "application/vnd.google-apps.folder"),
    ]
    assert parse_folder_page("<html><body><p>no title</p></body></html>") is None


@pytest.mark.parametrize(
    ("title", "icon", "expected"),
    [
        ("a.jpg", "image/jpeg", ("entry", "image/jpeg")),
        ("IMG_1.CR2", "application/octet-stream", ("entry", "application/octet-stream")),
        ("IMG_1.HEIC", None, ("entry", "image/heic")),
        ("photo", None, ("entry", "application/octet-stream")),
        ("data.bin", "application/octet-stream", ("not_image", "application/octet-stream")),
        ("clip.jpg", "video/mp4", ("not_image", "video/mp4")),
        ("notes.txt", None, ("not_image", "text/plain")),
        ("Shortcut", "application/vnd.google-apps.shortcut", ("google_native", "application/vnd.google-apps.shortcut")),
    ],
)
def test_the_type_comes_from_the_icon_then_the_extension(
    title: str, icon: str | None, expected: tuple[str, str]
) -> None:
    item = to_entry(ListedItem(kind="file", id="1" * 25, title=title, icon_type=icon), "p")
    kind = "entry" if isinstance(item, Entry) else item.reason
    assert (kind, item.mime_type) == expected


def test_download_pages_are_told_apart() -> None:
    form = read_download_page(
        "<html><head><title>Google Drive - Virus scan warning</title></head><body>"
        "<form method='get' action='https://drive.usercontent.google.com/download' id='download-form'>"
        "<input type='submit' id='uc-download-link' value='Download anyway'/>"
        "<input type='hidden' name='id' value='1abc'><input name='export' value='download' type='hidden'>"
        "<input type='hidden' name='confirm' value='t'><input type='hidden' name='uuid' value='u-1'></form>",
        "https://drive.usercontent.google.com/download?id=1abc&export=download",
    )
    assert form.kind == "confirm" and form.confirm_url is not None
    confirm = URL(form.confirm_url)
    assert (confirm.host, confirm.path) == ("drive.usercontent.google.com", "/download")
    assert dict(confirm.query) == {"id": "1abc", "export": "download", "confirm": "t", "uuid": "u-1"}
    quota = read_download_page(
        '<p class="uc-error-caption">Sorry, you can&#39;t view or download this file at '
        'this time.</p><p class="uc-error-subcaption">Too many users have viewed or '
        "downloaded this file recently.</p>",
        "https://x/",
    )
    assert quota.kind == "quota" and quota.message.startswith("Too many users")
    missing = read_download_page(
        '<p class="uc-error-caption">Sorry, the file you have requested does not exist.</p>'
        '<p class="uc-error-subcaption">Make sure that you have the correct URL and that '
        "the file exists.</p>",
        "https://x/",
    )
    assert missing.kind == "missing"
    captcha = read_download_page(
        '<html><body><form id="captcha-form" action="index"></form></body></html>', "https://x/"
    )
    assert captcha.kind == "captcha"
    assert read_download_page("<html><title>Hm</title></html>", "https://x/").kind == "unknown"
