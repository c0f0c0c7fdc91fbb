"""Webhooks end to end: a real receiver on a loopback port, real imports against the Drive emulator,
the outbox in PostgreSQL, and deliveries by the embedded worker (or by `deliver_due` directly)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from conftest import RunningEmulator, wait_for_import
from fotoowl.callbacks import GuardedResolver, RefusedAddress, UnresolvableHost, check_callback_url
from fotoowl.config import AppSettings, ConfigError, Secret
from fotoowl.db import create_pool
from fotoowl.models_webhooks import ImagesAddedEvent, ImportFinishedEvent
from fotoowl.pipeline import outbox, webhooks
from fotoowl.web.app import create_app
from fotoowl.web.openapi import build_document
from fotoowl.web.openapi_webhooks import WEBHOOKS
from test_openapi import Contract

SECRET = "whsec-test-0123456789"


@dataclass
class Hit:
    event: dict[str, Any]
    headers: dict[str, str]
    signed: bool
    answered: int


@dataclass
class Receiver:
    """Answers 500 to the first `fail_first` deliveries (of each event, or overall), then `ok_status`."""

    fail_first: int = 0
    per_event: bool = True
    ok_status: int = 204
    redirect: bool = False
    url: str = ""
    hits: list[Hit] = field(default_factory=list)
    _seen: Counter[str] = field(default_factory=Counter)

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        expected = "sha256=" + hmac.new(SECRET.encode(), raw, hashlib.sha256).hexdigest()
        signed = hmac.compare_digest(request.headers.get("X-Fotoowl-Signature", "").encode(), expected.encode())
        event = json.loads(raw)
        key = event["id"] if self.per_event else "all"
        self._seen[key] += 1
        status = 500 if self._seen[key] <= self.fail_first else self.ok_status
        if self.redirect:
            status = 302
        self.hits.append(Hit(event, dict(request.headers), signed, status))
        if status == 302:
            raise web.HTTPFound("http://127.0.0.1:9/elsewhere")
        return web.Response(status=status, text="receiver says no" if status >= 300 else "")

    def delivered(self) -> dict[str, list[dict[str, Any]]]:
        """Events answered 2xx, by event id (each list holds every 2xx copy of that event)."""
        by_id: dict[str, list[dict[str, Any]]] = {}
        for hit in self.hits:
            if 200 <= hit.answered < 300:
                by_id.setdefault(hit.event["id"], []).append(hit.event)
        return by_id


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/hook", rec.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    rec.url = f"http://127.0.0.1:{port}/hook"
    yield rec
    await runner.cleanup()


@pytest.fixture
async def pool(settings: AppSettings) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(settings)
    yield pool
    await pool.close()


async def wait_until(check: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 60.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


def hooked(settings: AppSettings, receiver: Receiver, **changes: Any) -> AppSettings:
    return settings.replace(webhook_url=receiver.url, webhook_secret=Secret(SECRET), **changes)


async def outbox_state(settings: AppSettings) -> tuple[int, int]:
    """(deliveries, deliveries not yet delivered)."""
    conn = await asyncpg.connect(settings.database_url)
    try:
        row = await conn.fetchrow(
            "SELECT count(*) AS n, count(*) FILTER (WHERE delivered_at IS NULL) AS open FROM webhook_deliveries"
        )
    finally:
        await conn.close()
    assert row is not None
    return row["n"], row["open"]


async def start_import(client: Any, folder_id: str) -> int:
    resp = await client.post("/imports", json={"folder_url": f"https://drive.google.com/drive/folders/{folder_id}"})
    assert resp.status == 202, await resp.text()
    return int((await resp.json())["import_id"])


async def all_delivered(client: Any, settings: AppSettings, import_id: int) -> None:
    """Wait until the import has finished and every event it wrote has been delivered."""

    async def done() -> bool:
        status = (await (await client.get(f"/imports/{import_id}")).json())["status"]
        total, open_ = await outbox_state(settings)
        return status not in ("queued", "listing", "running") and total > 0 and open_ == 0

    await wait_until(done, "every webhook to be delivered", timeout_s=90)


async def check_events(client: Any, receiver: Receiver, import_id: int) -> dict[str, list[dict[str, Any]]]:
    """Every hit signed and labelled; every image in exactly one images.added; one import.finished
    with the import's final counts. Returns the delivered events by id."""
    assert receiver.hits
    for hit in receiver.hits:
        assert hit.signed, "a signature did not verify"
        assert hit.headers["X-Fotoowl-Event"] == hit.event["type"]
        assert hit.headers["X-Fotoowl-Delivery"] == hit.event["id"]
        assert hit.headers["Content-Type"] == "application/json"
    delivered = receiver.delivered()
    events = [copies[0] for copies in delivered.values()]
    for copies in delivered.values():
        assert all(copy == copies[0] for copy in copies), "a retry changed the body"
    # Every event that was attempted was in the end delivered.
    assert {hit.event["id"] for hit in receiver.hits} == set(delivered)

    images_page = await (await client.get(f"/images?import_id={import_id}&limit=500")).json()
    stored = {image["id"]: image for image in images_page["images"]}
    announced: list[int] = []
    for event in events:
        if event["type"] == "images.added":
            ImagesAddedEvent.model_validate(event)
            assert event["data"]["import_id"] == import_id
            for image in event["data"]["images"]:
                announced.append(image["id"])
                # The image as recorded: its preview is made afterwards (`preview_status` tells).
                assert _settled(image) == _settled(stored[image["id"]]), "the event's image differs from the API's"
    assert sorted(announced) == sorted(stored), "an image was announced twice, or never"

    finished = [event for event in events if event["type"] == "import.finished"]
    assert len(finished) == 1
    ImportFinishedEvent.model_validate(finished[0])
    final = await (await client.get(f"/imports/{import_id}")).json()
    assert finished[0]["data"]["id"] == import_id
    assert finished[0]["data"]["status"] == final["status"] == "completed"
    assert finished[0]["data"]["counts"] == final["counts"]
    assert final["counts"]["imported"] == len(stored)
    return delivered


def _settled(image: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in image.items() if k not in ("thumbnail_url", "preview_status", "preview_reason")}


def shoot(drive: RunningEmulator, name: str, count: int) -> str:
    root = drive.emu.add_folder(None, name)
    sub = drive.emu.add_folder(root, "Party")
    for i in range(count):
        drive.emu.add_image(root if i % 2 else sub, f"IMG_{i:04d}.jpg")
    return str(root)


# --- end to end ---------------------------------------------------------------------------------


async def test_every_event_arrives_once_signed_despite_three_failures_each(
    app_settings: AppSettings, drive: RunningEmulator, receiver: Receiver, aiohttp_client: Any
) -> None:
    receiver.fail_first = 3
    settings = hooked(app_settings, receiver, webhook_backoff_s=0.05)
    client = await aiohttp_client(create_app(settings))
    import_id = await start_import(client, shoot(drive, "Hooks", 30))
    assert (await wait_for_import(client, import_id))["status"] == "completed"
    await all_delivered(client, settings, import_id)

    delivered = await check_events(client, receiver, import_id)
    # No restart: nothing was sent twice successfully, and each event took exactly 3 failures first.
    assert all(len(copies) == 1 for copies in delivered.values())
    assert Counter(hit.event["id"] for hit in receiver.hits) == {event_id: 4 for event_id in delivered}

    # The deliveries as the API shows them, checked against the OpenAPI document.
    contract = Contract(build_document(auth_required=False))
    path = "/imports/{id}/webhooks"
    status, page = await contract.call(client, "GET", path, f"/imports/{import_id}/webhooks?limit=500")
    assert status == 200 and page["next_cursor"] is None
    assert {d["event_id"] for d in page["deliveries"]} == set(delivered)
    for d in page["deliveries"]:
        assert (d["status"], d["attempts"], d["last_status"], d["last_error"]) == ("delivered", 4, 204, None)
        assert (d["destination"], d["url"], d["next_attempt_at"]) == ("webhook_url", receiver.url[:-5], None)
    status, first = await contract.call(client, "GET", path, f"/imports/{import_id}/webhooks?limit=1")
    assert status == 200 and len(first["deliveries"]) == 1 and first["next_cursor"]
    status, rest = await contract.call(
        client, "GET", path, f"/imports/{import_id}/webhooks?limit=500&cursor={first['next_cursor']}"
    )
    assert [d["event_id"] for d in first["deliveries"] + rest["deliveries"]] == [
        d["event_id"] for d in page["deliveries"]
    ]
    status, none_pending = await contract.call(client, "GET", path, f"/imports/{import_id}/webhooks?status=pending")
    assert none_pending == {"deliveries": [], "next_cursor": None}
    for url, code in (
        (f"/imports/{import_id}/webhooks?status=lost", "invalid_parameter"),
        (f"/imports/{import_id}/webhooks?cursor=nope", "invalid_cursor"),
        ("/imports/999999/webhooks", "not_found"),
    ):
        status, body = await contract.call(client, "GET", path, url)
        assert body["error"]["code"] == code


@pytest.mark.slow
async def test_the_first_three_deliveries_overall_fail_and_nothing_is_lost(
    app_settings: AppSettings, drive: RunningEmulator, receiver: Receiver, aiohttp_client: Any
) -> None:
    receiver.fail_first, receiver.per_event = 3, False
    settings = hooked(app_settings, receiver, webhook_backoff_s=0.05)
    client = await aiohttp_client(create_app(settings))
    import_id = await start_import(client, shoot(drive, "Overall", 12))
    await wait_for_import(client, import_id)
    await all_delivered(client, settings, import_id)
    delivered = await check_events(client, receiver, import_id)
    assert all(len(copies) == 1 for copies in delivered.values())
    assert sum(1 for hit in receiver.hits if hit.answered == 500) == 3


@pytest.mark.slow
async def test_a_restart_while_deliveries_fail_loses_no_event(
    app_settings: AppSettings, drive: RunningEmulator, receiver: Receiver, aiohttp_client: Any
) -> None:
    receiver.fail_first = 3
    # Backoff long enough that every event is still failing when the server stops.
    settings = hooked(app_settings, receiver, webhook_backoff_s=1.0)
    first = await aiohttp_client(create_app(settings))
    import_id = await start_import(first, shoot(drive, "Restart", 24))

    async def failing() -> bool:
        return any(hit.answered == 500 for hit in receiver.hits)

    await wait_until(failing, "a first failed delivery")
    await first.close()
    total, undelivered = await outbox_state(settings)
    assert total > 0 and undelivered > 0, "the restart came too late to test anything"

    # A new server (app and embedded worker) on the same database and Redis.
    second = await aiohttp_client(create_app(settings))
    assert (await wait_for_import(second, import_id))["status"] == "completed"
    await all_delivered(second, settings, import_id)
    # At least once: a POST cut by the shutdown may have arrived; deduplicated by id, each is there once.
    await check_events(second, receiver, import_id)


async def test_an_imports_own_callback_url_gets_its_events(
    app_settings: AppSettings, drive: RunningEmulator, receiver: Receiver, aiohttp_client: Any
) -> None:
    folder_url = f"https://drive.google.com/drive/folders/{shoot(drive, 'Callback', 3)}"
    refused = await aiohttp_client(create_app(app_settings.replace(webhook_secret=Secret(SECRET)), run_worker=False))
    resp = await refused.post("/imports", json={"folder_url": folder_url, "callback_url": receiver.url})
    assert resp.status == 422
    assert (await resp.json())["error"]["code"] == "invalid_callback_url"

    # No server-wide URL: the callback alone gets the events, private hosts allowed for this receiver.
    settings = app_settings.replace(webhook_secret=Secret(SECRET), webhook_allow_private_hosts=True)
    client = await aiohttp_client(create_app(settings))
    callback = receiver.url + "?shoot=callback"
    resp = await client.post("/imports", json={"folder_url": folder_url, "callback_url": callback})
    assert resp.status == 202, await resp.text()
    import_id = (await resp.json())["import_id"]
    await all_delivered(client, settings, import_id)
    await check_events(client, receiver, import_id)
    page = await (await client.get(f"/imports/{import_id}/webhooks")).json()
    assert {(d["destination"], d["url"], d["status"]) for d in page["deliveries"]} == {
        ("callback_url", callback, "delivered")
    }


# --- the outbox -----------------------------------------------------------------------------------


async def new_import(pool: asyncpg.Pool, *, callback_url: str | None = None, finished: bool = False) -> int:
    import_id: int = await pool.fetchval(
        """INSERT INTO imports (source, folder_id, folder_url, callback_url, status, finished_at)
           VALUES ('google_drive', 'f1', 'https://drive.google.com/drive/folders/f1', $1, $2,
                   CASE WHEN $3 THEN now() END)
           RETURNING id""",
        callback_url,
        "completed" if finished else "running",
        finished,
    )
    return import_id


async def new_images(pool: asyncpg.Pool, import_id: int, count: int) -> list[int]:
    rows = await pool.fetch(
        """INSERT INTO images (source, source_id, google_drive_id, name, size, mime_type, storage_path,
                               storage_key, import_id)
           SELECT 'google_drive', s, s, s || '.jpg', 100, 'image/jpeg', 's3://b/' || s, s, $1::bigint
           FROM (SELECT 'file-' || $1::bigint || '-' || g AS s FROM generate_series(1, $2::int) g) f
           RETURNING id""",
        import_id,
        count,
    )
    return [r["id"] for r in rows]


async def outbox_rows(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    return list(await pool.fetch("SELECT * FROM webhook_deliveries ORDER BY id"))


async def announce_finished(pool: asyncpg.Pool, settings: AppSettings, import_id: int) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await outbox.announce_finished(conn, settings, import_id)


async def test_nothing_is_written_without_a_destination(settings: AppSettings, pool: asyncpg.Pool) -> None:
    import_id = await new_import(pool, finished=True)
    image_ids = await new_images(pool, import_id, 3)
    async with pool.acquire() as conn, conn.transaction():
        await outbox.announce_images(conn, settings, import_id, image_ids)
        await outbox.announce_finished(conn, settings, import_id)
    assert await outbox_rows(pool) == []
    assert await webhooks.deliver_due(pool, settings) == 0


async def test_a_courier_keeps_its_sessions_from_run_to_run_and_closes_them_with_the_worker(
    settings: AppSettings, pool: asyncpg.Pool, receiver: Receiver
) -> None:
    """Runs come every second: each used to open and close its own sessions, and a shutdown that
    cancelled a run halfway left them open."""
    settings = hooked(settings, receiver)
    courier = webhooks.Courier()
    opened: list[aiohttp.ClientSession] = []
    real = aiohttp.ClientSession

    def counting(*args: Any, **kwargs: Any) -> aiohttp.ClientSession:
        opened.append(real(*args, **kwargs))
        return opened[-1]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(webhooks.aiohttp, "ClientSession", counting)
        for _ in range(3):
            await announce_finished(pool, settings, await new_import(pool, finished=True))
            assert await courier.run(pool, settings) == 1
        assert len(receiver.hits) == 3
        assert len(opened) == 2 and not any(s.closed for s in opened)  # trusted + callbacks, once
        await courier.close()
    assert all(s.closed for s in opened)
    await courier.close()  # twice is harmless


async def test_a_rolled_back_change_announces_nothing(
    settings: AppSettings, pool: asyncpg.Pool, receiver: Receiver
) -> None:
    settings = hooked(settings, receiver)
    import_id = await new_import(pool, finished=True)

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        async with pool.acquire() as conn, conn.transaction():
            await outbox.announce_images(conn, settings, import_id, await new_images(pool, import_id, 2))
            await outbox.announce_finished(conn, settings, import_id)
            raise Boom
    assert await outbox_rows(pool) == []
    await announce_finished(pool, settings, import_id)
    assert [r["event_type"] for r in await outbox_rows(pool)] == ["import.finished"]


async def test_one_event_for_two_destinations_keeps_its_id_and_body(
    settings: AppSettings, pool: asyncpg.Pool, receiver: Receiver
) -> None:
    settings = hooked(settings, receiver, webhook_allow_private_hosts=True)
    callback = receiver.url + "?import=mine"
    import_id = await new_import(pool, callback_url=callback, finished=True)
    await announce_finished(pool, settings, import_id)
    rows = await outbox_rows(pool)
    assert [(r["destination"], r["url"]) for r in rows] == [("webhook_url", receiver.url), ("callback_url", callback)]
    assert rows[0]["event_id"] == rows[1]["event_id"] and rows[0]["body"] == rows[1]["body"]
    assert await webhooks.deliver_due(pool, settings) == 2
    assert [hit.event["id"] for hit in receiver.hits] == [str(rows[0]["event_id"])] * 2

    # A callback that is the server's own URL gets each event once, not twice.
    same = await new_import(pool, callback_url=receiver.url, finished=True)
    await announce_finished(pool, settings, same)
    assert [r["destination"] for r in await outbox_rows(pool) if r["import_id"] == same] == ["webhook_url"]


async def test_images_are_announced_in_batches_each_once(
    settings: AppSettings, pool: asyncpg.Pool, receiver: Receiver
) -> None:
    settings = hooked(settings, receiver)
    import_id = await new_import(pool)
    image_ids = await new_images(pool, import_id, 250)
    async with pool.acquire() as conn, conn.transaction():
        await outbox.announce_images(conn, settings, import_id, image_ids)
    events = [json.loads(r["body"]) for r in await outbox_rows(pool)]
    assert [len(e["data"]["images"]) for e in events] == [100, 100, 50]
    assert [i["id"] for e in events for i in e["data"]["images"]] == sorted(image_ids)
    assert len({e["id"] for e in events}) == 3
    for event in events:
        assert ImagesAddedEvent.model_validate(event).body() == event


async def test_a_deleted_import_keeps_its_undelivered_events(
    settings: AppSettings, pool: asyncpg.Pool, receiver: Receiver
) -> None:
    settings = hooked(settings, receiver)
    import_id = await new_import(pool, finished=True)
    await announce_finished(pool, settings, import_id)
    await pool.execute("DELETE FROM imports WHERE id = $1", import_id)
    assert await webhooks.deliver_due(pool, settings) == 1
    assert receiver.hits[0].event["data"]["id"] == import_id


# --- delivery -------------------------------------------------------------------------------------


async def delivery(pool: asyncpg.Pool) -> asyncpg.Record:
    (row,) = await outbox_rows(pool)
    return row


async def test_a_failure_is_retried_after_an_exponential_backoff(
    settings: AppSettings, pool: asyncpg.Pool, receiver: Receiver
) -> None:
    receiver.fail_first = 10
    settings = hooked(settings, receiver, webhook_backoff_s=100.0)
    await announce_finished(pool, settings, await new_import(pool, finished=True))
    assert await webhooks.deliver_due(pool, settings) == 0
    row = await delivery(pool)
    assert (row["attempts"], row["last_status"], row["delivered_at"], row["gave_up_at"]) == (1, 500, None, None)
    assert row["last_error"] == "HTTP 500: receiver says no"
    wait_s = (row["next_attempt_at"] - row["last_attempt_at"]).total_seconds()
    assert 75 <= wait_s <= 125
    # Not due yet: a second run sends nothing.
    assert await webhooks.deliver_due(pool, settings) == 0
    assert len(receiver.hits) == 1


def test_backoff_doubles_with_jitter_up_to_an_hour() -> None:
    for attempts in range(1, 8):
        wait_s = webhooks.backoff_s(attempts, 10.0)
        assert 0.75 * 10 * 2 ** (attempts - 1) <= wait_s <= 1.25 * 10 * 2 ** (attempts - 1)
    assert webhooks.backoff_s(100, 10.0) <= 1.25 * webhooks.MAX_BACKOFF_S


async def test_a_delivery_is_given_up_once_the_event_is_old_enough(
    settings: AppSettings, pool: asyncpg.Pool, receiver: Receiver, aiohttp_client: Any
) -> None:
    receiver.fail_first = 1000
    settings = hooked(settings, receiver, webhook_backoff_s=60.0, webhook_give_up_s=0.3)
    import_id = await new_import(pool, finished=True)
    await announce_finished(pool, settings, import_id)

    async def given_up() -> bool:
        await webhooks.deliver_due(pool, settings)
        return (await delivery(pool))["gave_up_at"] is not None

    await wait_until(given_up, "the delivery to be given up")
    client = await aiohttp_client(create_app(settings, run_worker=False))
    page = await (await client.get(f"/imports/{import_id}/webhooks?status=failed")).json()
    (failed,) = page["deliveries"]
    assert (failed["status"], failed["last_status"], failed["next_attempt_at"]) == ("failed", 500, None)
    assert failed["last_error"].startswith("HTTP 500") and failed["gave_up_at"]
    # The last try was made at the give-up time, not a minute of backoff later.
    assert failed["attempts"] == len(receiver.hits) >= 1
    assert await webhooks.deliver_due(pool, settings) == 0


async def test_redirects_are_not_followed(settings: AppSettings, pool: asyncpg.Pool, receiver: Receiver) -> None:
    receiver.redirect = True
    settings = hooked(settings, receiver)
    await announce_finished(pool, settings, await new_import(pool, finished=True))
    await webhooks.deliver_due(pool, settings)
    row = await delivery(pool)
    assert row["last_status"] == 302 and row["delivered_at"] is None
    assert "redirects are not followed" in row["last_error"]
    assert len(receiver.hits) == 1


async def test_workers_delivering_at_once_send_each_event_once(
    settings: AppSettings, pool: asyncpg.Pool, receiver: Receiver
) -> None:
    settings = hooked(settings, receiver)
    for _ in range(60):
        await announce_finished(pool, settings, await new_import(pool, finished=True))
    delivered = await asyncio.gather(*(webhooks.deliver_due(pool, settings) for _ in range(3)))
    assert sum(delivered) == 60
    assert sorted(Counter(hit.event["id"] for hit in receiver.hits).values()) == [1] * 60


async def test_a_private_callback_is_refused_at_delivery(
    settings: AppSettings, pool: asyncpg.Pool, receiver: Receiver
) -> None:
    # Written directly, as if its host had resolved to a public address when the import was made.
    settings = settings.replace(webhook_secret=Secret(SECRET))
    for url in (receiver.url, receiver.url.replace("127.0.0.1", "localhost")):
        await pool.execute("DELETE FROM webhook_deliveries")
        await announce_finished(pool, settings, await new_import(pool, callback_url=url, finished=True))
        assert await webhooks.deliver_due(pool, settings) == 0
        row = await delivery(pool)
        assert row["gave_up_at"] is not None and row["last_status"] is None
        assert row["last_error"].startswith("refused: ") and "loopback" in row["last_error"]
    assert receiver.hits == []


async def test_without_a_secret_nothing_is_sent_unsigned(
    settings: AppSettings, pool: asyncpg.Pool, receiver: Receiver
) -> None:
    # A callback recorded while the server had a secret, delivered after it lost it.
    settings = settings.replace(webhook_allow_private_hosts=True)
    await announce_finished(pool, settings, await new_import(pool, callback_url=receiver.url, finished=True))
    assert await webhooks.deliver_due(pool, settings) == 0
    row = await delivery(pool)
    assert (row["last_error"], row["gave_up_at"], row["delivered_at"]) == (webhooks.NO_SECRET, None, None)
    assert receiver.hits == []


async def test_the_guarded_resolver_refuses_private_names() -> None:
    resolver = GuardedResolver()
    try:
        with pytest.raises(RefusedAddress, match="loopback"):
            await resolver.resolve("localhost", 80)
    finally:
        await resolver.close()


# --- callback URLs and settings -------------------------------------------------------------------

SIGNING = AppSettings(webhook_secret=Secret(SECRET))


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("", "empty"),
        ("ftp://93.184.216.34/hook", "http:// or https://"),
        ("javascript:alert(1)", "http:// or https://"),
        ("https://user:pw@93.184.216.34/hook", "user name or password"),
        ("https://93.184.216.34/" + "a" * 2000, "longer than"),
        ("https://93.184.216.34/a b", "space"),
        ("https://93.184.216.34:99999/", "not a URL"),
        ("https:///hook", "no host"),
        ("http://127.0.0.1:8000/hook", "loopback"),
        ("http://localhost/hook", "loopback"),
        ("http://[::1]/hook", "loopback"),
        ("http://[::ffff:127.0.0.1]/hook", "loopback"),
        ("http://10.1.2.3/hook", "private"),
        ("http://192.168.0.10/hook", "private"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://[fe80::1]/hook", "link-local"),
        ("http://0.0.0.0/hook", "unspecified"),
        ("http://224.0.0.1/hook", "multicast"),
        ("http://100.64.0.1/hook", "not a public address"),
        ("http://nonexistent.invalid/hook", "could not be resolved"),
    ],
)
def test_unusable_callback_urls_are_refused(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        check_callback_url(url, SIGNING)


def test_usable_callback_urls_pass() -> None:
    assert (
        check_callback_url(" https://93.184.216.34/hook?token=abc ", SIGNING) == "https://93.184.216.34/hook?token=abc"
    )
    assert check_callback_url("http://[2606:2800:220:1::]:8080/h", SIGNING) == "http://[2606:2800:220:1::]:8080/h"
    private = SIGNING.replace(webhook_allow_private_hosts=True)
    assert check_callback_url("http://127.0.0.1:8000/hook", private) == "http://127.0.0.1:8000/hook"
    with pytest.raises(UnresolvableHost):
        check_callback_url("http://nonexistent.invalid/hook", SIGNING)
    with pytest.raises(ValueError, match="FOTOOWL_WEBHOOK_SECRET"):
        check_callback_url("https://93.184.216.34/hook", AppSettings())


def test_webhook_settings_are_read_and_checked() -> None:
    env = {
        "FOTOOWL_WEBHOOK_URL": "https://hooks.example.com/fotoowl",
        "FOTOOWL_WEBHOOK_SECRET": SECRET,
        "FOTOOWL_WEBHOOK_BACKOFF_S": "2.5",
        "FOTOOWL_WEBHOOK_GIVE_UP_S": "3600",
        "FOTOOWL_WEBHOOK_ALLOW_PRIVATE_HOSTS": "true",
    }
    settings = AppSettings.from_env(env)
    assert (settings.webhook_url, settings.webhook_secret.get()) == ("https://hooks.example.com/fotoowl", SECRET)
    assert (settings.webhook_backoff_s, settings.webhook_give_up_s, settings.webhook_allow_private_hosts) == (
        2.5,
        3600.0,
        True,
    )
    assert SECRET not in repr(settings)
    with pytest.raises(ConfigError, match="FOTOOWL_WEBHOOK_SECRET"):
        AppSettings.from_env({"FOTOOWL_WEBHOOK_URL": "https://hooks.example.com/fotoowl"})
    with pytest.raises(ConfigError, match="FOTOOWL_WEBHOOK_URL"):
        AppSettings.from_env({"FOTOOWL_WEBHOOK_URL": "hooks.example.com", "FOTOOWL_WEBHOOK_SECRET": SECRET})
    with pytest.raises(ConfigError, match="FOTOOWL_WEBHOOK_GIVE_UP_S"):
        AppSettings.from_env({"FOTOOWL_WEBHOOK_GIVE_UP_S": "0"})


def test_signature_is_the_hmac_of_the_exact_body() -> None:
    body = b'{"id":"x","type":"import.finished"}'
    expected = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert webhooks.signature(SECRET, body) == "sha256=" + expected


def test_documented_event_examples_fit_their_schemas() -> None:
    contract = Contract(build_document(auth_required=False))
    for name, item in WEBHOOKS.items():
        media = item["post"]["requestBody"]["content"]["application/json"]
        contract.validate(media["example"], "#/webhooks/" + name + "/post/requestBody/content/application~1json/schema")
        assert media["example"]["type"] == name
        uuid.UUID(media["example"]["id"])
