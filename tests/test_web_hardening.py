"""Hostile requests against the running app: redirects, cross-site writes, malformed input, error
headers and clients that go away. Every answer to bad input is a 4xx with the usual error shape."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import stat
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from conftest import RunningEmulator, wait_for_import
from fotoowl.config import AppSettings, Secret
from fotoowl.web.app import create_app
from fotoowl.web.security import CSRF_COOKIE
from test_pages import Elements, folder_link

JSON = "application/json"
API_TOKEN = "s3cret-token"
MiB = 1024 * 1024


def cursor(raw: str) -> str:
    """A cursor as the API encodes them, around any JSON text."""
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def form_token(html: str) -> str:
    return Elements(html).find("input", name="csrf_token")[0]["value"]


def csrf_cookie(client: Any) -> str:
    value: str = client.session.cookie_jar.filter_cookies(client.make_url("/"))[CSRF_COOKIE].value
    return value


def own_origin(client: Any) -> str:
    return str(client.make_url("/")).rstrip("/")


async def assert_error(resp: Any, status: int | None = None, code: str | None = None) -> dict[str, Any]:
    """A 4xx (this one, when given) with {"error": {"code", "message"}}."""
    text = await resp.text()
    assert 400 <= resp.status < 500, (resp.status, text[:300])
    if status is not None:
        assert resp.status == status, (resp.status, text[:300])
    assert resp.content_type == JSON, (resp.status, resp.content_type, text[:300])
    body: dict[str, Any] = json.loads(text)
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert isinstance(body["error"]["code"], str) and isinstance(body["error"]["message"], str)
    if code is not None:
        assert body["error"]["code"] == code, body
    return body


@pytest.fixture
async def idle_client(app_settings: AppSettings, aiohttp_client: Any) -> Any:
    return await aiohttp_client(create_app(app_settings, run_worker=False))


@pytest.fixture
async def locked_client(app_settings: AppSettings, aiohttp_client: Any) -> AsyncIterator[Any]:
    yield await aiohttp_client(create_app(app_settings.replace(api_token=Secret(API_TOKEN)), run_worker=False))


async def start_import(client: Any, folder_id: str = "1AbCdEfGhIjKlMnOpQrStUvWxYz012345") -> int:
    resp = await client.post("/import/google-drive", json={"folder_url": folder_link(folder_id)})
    assert resp.status == 202, await resp.text()
    return int((await resp.json())["import_id"])


# --- 1. no open redirect through ?next= ---------------------------------------------------------------

HOSTILE_NEXT = [
    "//evil.example",
    "///evil.example",
    "////evil.example/x",
    "/\\evil.example",
    "\\\\evil.example",
    "\\/evil.example",
    "/\t/evil.example",
    "/\n/evil.example",
    "/\r/evil.example",
    "/\r\n/evil.example",
    "\t//evil.example",
    "\n//evil.example",
    " //evil.example",
    "/ /evil.example",
    "/\x00/evil.example",
    "/\x0b/evil.example",
    "/\x7f/evil.example",
    "/\x85/evil.example",
    "/\u2028/evil.example",
    "http://evil.example",
    "https://evil.example/",
    "HTTPS://evil.example",
    "https:evil.example",
    "https:/evil.example",
    "//evil.example@own.example",
    "javascript:alert(1)",
    "JaVaScRiPt:alert(1)",
    " javascript:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "evil.example",
    "/%09/evil.example",
    "/%0A/evil.example",
    "/%2F/evil.example",
    "/%5Cevil.example",
    "%2F%2Fevil.example",
    "/%252F%252Fevil.example",
    "/\uff0f/evil.example",
    "",
]


def assert_local(location: str) -> None:
    assert location.startswith("/"), location
    assert location[1:2] not in ("/", "\\"), location
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in location), repr(location)
    # What a browser does with it: relative to our own origin, still our own origin.
    from urllib.parse import urljoin, urlsplit

    assert urlsplit(urljoin("https://own.example/ui/unlock", location)).netloc == "own.example", location


async def unlock(client: Any) -> None:
    token = form_token(await (await client.get("/ui/unlock")).text())
    resp = await client.post(
        "/ui/unlock", data={"csrf_token": token, "token": API_TOKEN, "next": "/"}, allow_redirects=False
    )
    assert resp.status == 303


@pytest.mark.parametrize("with_token", [True, False])
async def test_next_never_redirects_off_site(app_settings: AppSettings, aiohttp_client: Any, with_token: bool) -> None:
    settings = app_settings.replace(api_token=Secret(API_TOKEN)) if with_token else app_settings
    client = await aiohttp_client(create_app(settings, run_worker=False))
    if with_token:
        # Locked: the unlock page carries ?next= into its form.
        for hostile in HOSTILE_NEXT:
            resp = await client.get("/ui/unlock", params={"next": hostile})
            assert resp.status == 200
            (field,) = Elements(await resp.text()).find("input", name="next")
            assert_local(field["value"])
        token = form_token(await (await client.get("/ui/unlock")).text())
        for hostile in HOSTILE_NEXT:
            resp = await client.post(
                "/ui/unlock", data={"csrf_token": token, "token": API_TOKEN, "next": hostile}, allow_redirects=False
            )
            assert resp.status == 303, hostile
            assert_local(resp.headers["Location"])
    for hostile in HOSTILE_NEXT:
        resp = await client.get("/ui/unlock", params={"next": hostile}, allow_redirects=False)
        assert resp.status == 303, (hostile, resp.status)
        assert_local(resp.headers["Location"])
    # The percent-encoded tab reaches the app as a real tab: the reported case.
    resp = await client.get("/ui/unlock?next=/%09/evil.com", allow_redirects=False)
    assert resp.status == 303
    assert_local(resp.headers["Location"])


async def test_next_keeps_same_site_paths(locked_client: Any) -> None:
    await unlock(locked_client)
    for path in ("/", "/ui/gallery?q=beach&import_id=2", "/ui/imports/7", "/ui/images/3#top", "/a%2Fb"):
        resp = await locked_client.get("/ui/unlock", params={"next": path}, allow_redirects=False)
        assert resp.status == 303
        assert resp.headers["Location"] == path


# --- 2. cross-site writes --------------------------------------------------------------------------------


async def test_json_writes_need_a_json_content_type(idle_client: Any) -> None:
    client = idle_client
    body = json.dumps({"folder_url": folder_link("1AbCdEfGhIjKlMnOpQrStUvWxYz012345")})
    import_id = await start_import(client)
    for url in ("/import/google-drive", f"/imports/{import_id}/retry", f"/imports/{import_id}/cancel"):
        for kwargs in (
            {"data": body, "headers": {"Content-Type": "text/plain"}},
            {"data": body, "headers": {"Content-Type": "application/x-www-form-urlencoded"}},
            {"data": body, "headers": {"Content-Type": "multipart/form-data; boundary=x"}},
            {"data": body.encode(), "skip_auto_headers": ["Content-Type"]},
            {"skip_auto_headers": ["Content-Type"]},
            {"data": b"", "headers": {"Content-Type": "text/plain"}},
        ):
            resp = await client.post(url, **kwargs)
            await assert_error(resp, 415, "unsupported_media_type")
    imports = (await (await client.get("/imports")).json())["imports"]
    assert [(i["id"], i["status"]) for i in imports] == [(import_id, "queued")]

    # JSON with an empty body is what retry and cancel expect.
    resp = await client.post(f"/imports/{import_id}/retry", headers={"Content-Type": JSON})
    assert resp.status == 202, await resp.text()
    resp = await client.post(
        f"/imports/{import_id}/cancel", headers={"Content-Type": "Application/JSON; charset=utf-8"}
    )
    assert resp.status == 202, await resp.text()


@pytest.mark.parametrize(
    "headers",
    [
        {"Sec-Fetch-Site": "cross-site"},
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Origin": "http://127.0.0.1"},
        {"Origin": "http://127.0.0.1.evil.example"},
    ],
)
async def test_cross_site_writes_are_refused(idle_client: Any, headers: dict[str, str]) -> None:
    client = idle_client
    import_id = await start_import(client)
    link = folder_link("1AbCdEfGhIjKlMnOpQrStUvWxYz012345")
    resp = await client.post("/import/google-drive", json={"folder_url": link}, headers=headers)
    await assert_error(resp, 403, "csrf_failed")
    for action in ("retry", "cancel"):
        resp = await client.post(f"/imports/{import_id}/{action}", json={}, headers=headers)
        await assert_error(resp, 403, "csrf_failed")

    token = form_token(await (await client.get("/")).text())
    for url, data in (
        ("/ui/imports", {"folder_url": link, "csrf_token": token}),
        (f"/ui/imports/{import_id}/retry", {"csrf_token": token}),
        (f"/ui/imports/{import_id}/cancel", {"csrf_token": token}),
        ("/ui/lock", {"csrf_token": token}),
    ):
        resp = await client.post(url, data=data, headers=headers, allow_redirects=False)
        assert resp.status == 403, url
        assert resp.content_type == "text/html"
    imports = (await (await client.get("/imports")).json())["imports"]
    assert [(i["id"], i["status"]) for i in imports] == [(import_id, "queued")]


async def test_same_origin_writes_pass(idle_client: Any) -> None:
    client = idle_client
    origin = own_origin(client)
    link = folder_link("1AbCdEfGhIjKlMnOpQrStUvWxYz012345")
    for headers in (
        {"Origin": origin, "Sec-Fetch-Site": "same-origin"},
        {"Sec-Fetch-Site": "none"},
        {"Origin": origin.upper()},
    ):
        resp = await client.post("/import/google-drive", json={"folder_url": link}, headers=headers)
        assert resp.status == 202, (headers, await resp.text())
        token = form_token(await (await client.get("/")).text())
        resp = await client.post(
            "/ui/imports", data={"folder_url": link, "csrf_token": token}, headers=headers, allow_redirects=False
        )
        assert resp.status == 303, (headers, await resp.text())


async def test_a_forged_cookie_and_field_pair_is_refused(idle_client: Any) -> None:
    """A sibling origin that can set our cookie still cannot make a token the server signed."""
    client = idle_client
    link = folder_link("1AbCdEfGhIjKlMnOpQrStUvWxYz012345")
    await client.get("/")
    for forged in ("A" * 43, "x" * 64, csrf_cookie(client)):
        client.session.cookie_jar.update_cookies({CSRF_COOKIE: forged}, response_url=client.make_url("/"))
        resp = await client.post("/ui/imports", data={"folder_url": link, "csrf_token": forged}, allow_redirects=False)
        assert resp.status == 403, forged
    # A token signed for another cookie is no better.
    client.session.cookie_jar.clear()
    first = form_token(await (await client.get("/")).text())
    client.session.cookie_jar.clear()
    await client.get("/")
    resp = await client.post("/ui/imports", data={"folder_url": link, "csrf_token": first}, allow_redirects=False)
    assert resp.status == 403
    assert (await (await client.get("/imports")).json())["imports"] == []


async def test_the_form_token_is_the_signed_cookie(app_settings: AppSettings, idle_client: Any) -> None:
    token = form_token(await (await idle_client.get("/")).text())
    cookie = csrf_cookie(idle_client)
    assert token != cookie
    from fotoowl.web.security import load_secret_key

    key = load_secret_key(app_settings)
    assert hmac.compare_digest(token, hmac.new(key, b"fotoowl-csrf-v1:" + cookie.encode(), hashlib.sha256).hexdigest())


async def test_the_secret_key_is_kept_private_and_survives_a_restart(
    app_settings: AppSettings, aiohttp_client: Any
) -> None:
    first = await aiohttp_client(create_app(app_settings, run_worker=False))
    token = form_token(await (await first.get("/")).text())
    cookie = csrf_cookie(first)
    key_file = app_settings.data_dir / "secret-key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(key_file.read_bytes().strip()) >= 32
    await first.close()

    second = await aiohttp_client(create_app(app_settings, run_worker=False))
    second.session.cookie_jar.update_cookies({CSRF_COOKIE: cookie}, response_url=second.make_url("/"))
    # An empty link: the form comes back with its error (422), so the token itself was accepted.
    resp = await second.post("/ui/imports", data={"folder_url": "", "csrf_token": token}, allow_redirects=False)
    assert resp.status == 422, await resp.text()


async def test_replicas_sharing_the_secret_key_accept_each_others_forms(
    app_settings: AppSettings, aiohttp_client: Any, tmp_path: Any
) -> None:
    shared = app_settings.replace(secret_key=Secret("shared-secret-of-the-replicas"))
    one = await aiohttp_client(create_app(shared.replace(data_dir=tmp_path / "one"), run_worker=False))
    other = await aiohttp_client(create_app(shared.replace(data_dir=tmp_path / "other"), run_worker=False))
    stranger = await aiohttp_client(create_app(app_settings.replace(data_dir=tmp_path / "stranger"), run_worker=False))
    token = form_token(await (await one.get("/")).text())
    cookie = csrf_cookie(one)
    assert not (tmp_path / "one" / "secret-key").exists()  # a configured key is never written down
    for client, status in ((other, 422), (stranger, 403)):
        client.session.cookie_jar.update_cookies({CSRF_COOKIE: cookie}, response_url=client.make_url("/"))
        resp = await client.post("/ui/imports", data={"folder_url": "", "csrf_token": token}, allow_redirects=False)
        assert resp.status == status


# --- 3. malformed input is a 4xx, never a 500 -------------------------------------------------------------

BAD_CURSORS = [
    cursor('{"id": 1000000000000000000000000000000}'),
    cursor('{"id": 9223372036854775808}'),
    cursor('{"id": 1e400}'),
    cursor('{"id": Infinity}'),
    cursor('{"id": -Infinity}'),
    cursor('{"id": NaN}'),
    cursor('{"id": -1}'),
    cursor('{"id": 1.5}'),
    cursor('{"id": true}'),
    cursor('{"id": null}'),
    cursor('{"id": "5"}'),
    cursor('{"id": [1]}'),
    cursor('{"id": {"id": 1}}'),
    cursor('[{"id": 1}]'),
    cursor('"abc"'),
    cursor("[" * 3000),
    cursor('{"id": ' + "9" * 5000 + "}"),
    cursor('{"id": 1'),
    base64.urlsafe_b64encode(b'{"id": "\xff\xfe"}').decode().rstrip("="),
    "!!!",
    "\u00e9",
    "%00",
]
BAD_NUMBERS = [
    "\u00b2",
    "\u0661",
    "1\n",
    "1_0",
    " 1",
    "+1",
    "-1",
    "0x1",
    "1.0",
    "1e3",
    "9" * 5000,
    "\x00",
    "\uff11",
    "99999999999999999999",
]
BAD_TEXT = ["\x00", "a\x00b", "image/jpeg\x00"]


LISTS = {"cursor": BAD_CURSORS, "limit": BAD_NUMBERS}
FILTERS = {"q": BAD_TEXT, "source": BAD_TEXT, "mime_type": BAD_TEXT, "folder": BAD_TEXT, "import_id": BAD_NUMBERS}
# Every page and endpoint that reads something from the query string, with what it reads.
READERS: dict[str, dict[str, list[str]]] = {
    "/imports": LISTS,
    "/images": {**LISTS, **FILTERS},
    "/imports/{import_id}/failures": LISTS,
    "/ui/gallery": {**LISTS, **FILTERS},
    "/ui/gallery/_grid": {**LISTS, **FILTERS},
    "/ui/imports/{import_id}": {"failures_cursor": BAD_CURSORS, "retried": BAD_NUMBERS},
    "/ui/imports/{import_id}/_failures": {"cursor": BAD_CURSORS},
    "/ui/imports/{import_id}/_progress": {"seen_failed": BAD_NUMBERS},
}


@pytest.mark.parametrize("path", list(READERS))
async def test_bad_query_parameters_get_a_4xx_never_a_500(idle_client: Any, path: str) -> None:
    client = idle_client
    url = path.format(import_id=await start_import(client))
    html = path.startswith("/ui/")
    problems = []
    for name, values in READERS[path].items():
        for value in values:
            resp = await client.get(url, params={name: value})
            text = await resp.text()
            if html:
                # Pages ignore a number they cannot read (a notice, a poll hint) or refuse it with a page.
                ok = resp.status < 500 and resp.content_type == "text/html"
            else:
                ok = (
                    400 <= resp.status < 500
                    and resp.content_type == JSON
                    and set(json.loads(text)["error"]) == {"code", "message"}
                )
            if not ok:
                problems.append((name, value[:40], resp.status, text[:120]))
    assert problems == []


@pytest.mark.parametrize(
    ("path", "query", "code"),
    [
        ("/imports", {"cursor": cursor('{"id": 1000000000000000000000000000000}')}, "invalid_cursor"),
        ("/imports", {"cursor": cursor('{"id": 1e400}')}, "invalid_cursor"),
        ("/imports", {"cursor": cursor('{"id": -1}')}, "invalid_cursor"),
        ("/imports", {"cursor": cursor("[" * 3000)}, "invalid_cursor"),
        ("/images", {"cursor": cursor('{"id": Infinity}')}, "invalid_cursor"),
        ("/images", {"q": "\x00"}, "invalid_parameter"),
        ("/images", {"source": "\x00"}, "invalid_parameter"),
        ("/images", {"mime_type": "image/\x00"}, "invalid_parameter"),
        ("/images", {"folder": "a\x00"}, "invalid_parameter"),
        ("/images", {"limit": "\u00b2"}, "invalid_parameter"),
        ("/images", {"limit": "9" * 5000}, "invalid_parameter"),
        ("/images", {"import_id": "\u0661"}, "invalid_parameter"),
        ("/images", {"import_id": "+1"}, "invalid_parameter"),
        ("/imports", {"limit": " 1"}, "invalid_parameter"),
        ("/imports", {"limit": "1_0"}, "invalid_parameter"),
        # Found by the fuzzer: a blank number was taken for "none given".
        ("/imports", {"limit": ""}, "invalid_parameter"),
        ("/images", {"import_id": ""}, "invalid_parameter"),
    ],
)
async def test_bad_query_parameters_have_their_code(client: Any, path: str, query: dict[str, str], code: str) -> None:
    await assert_error(await client.get(path, params=query), 400, code)


@pytest.mark.parametrize(
    "path",
    [
        "/ui/gallery?limit=%C2%B2",
        "/ui/gallery?limit=" + "9" * 5000,
        "/ui/gallery?q=%00",
        "/ui/gallery/_grid?cursor=" + cursor('{"id": 1e400}'),
    ],
)
async def test_bad_page_parameters_get_an_html_400(client: Any, path: str) -> None:
    resp = await client.get(path)
    assert resp.status == 400
    assert resp.content_type == "text/html"


async def test_the_gallery_form_may_leave_its_fields_blank(client: Any) -> None:
    for path in ("/ui/gallery?q=&import_id=", "/ui/gallery/_grid?q=&import_id=&limit="):
        resp = await client.get(path)
        assert resp.status == 200, path


async def test_unreadable_numbers_on_pages_are_ignored(idle_client: Any) -> None:
    import_id = await start_import(idle_client)
    for value in ("%C2%B2", "9" * 5000, "%D9%A1"):
        resp = await idle_client.get(f"/ui/imports/{import_id}?retried={value}")
        assert resp.status == 200
        assert "queued again" not in await resp.text()
        resp = await idle_client.get(f"/ui/imports/{import_id}/_progress?seen_failed={value}")
        assert resp.status == 200
        assert "HX-Trigger" not in resp.headers


@pytest.mark.parametrize(
    "raw_id", ["1%0A", "1_0", "%201", "+1", "%D9%A1", "1%00", "01", "1.0", "9" * 5000, "9223372036854775808", "-1", "0"]
)
async def test_only_plain_ascii_ids_name_a_resource(idle_client: Any, raw_id: str) -> None:
    client = idle_client
    assert await start_import(client) == 1
    assert (await client.get("/imports/1")).status == 200
    for template in ("/imports/{}", "/imports/{}/failures", "/images/{}", "/images/{}/content", "/images/{}/thumbnail"):
        await assert_error(await client.get(template.format(raw_id)), 404, "not_found")
    for action in ("retry", "cancel"):
        await assert_error(await client.post(f"/imports/{raw_id}/{action}", json={}), 404, "not_found")
    for template in ("/ui/imports/{}", "/ui/imports/{}/_progress", "/ui/imports/{}/_failures", "/ui/images/{}"):
        resp = await client.get(template.format(raw_id))
        assert resp.status == 404, template
        assert resp.content_type == "text/html"


@pytest.mark.parametrize(
    ("data", "headers", "status", "code"),
    [
        (
            b'{"folder_url": "1AbCdEfGhIjKlMnOpQrStUvWxYz012345"}',
            {"Content-Type": "application/json; charset=bogus"},
            400,
            "invalid_json",
        ),
        (
            b'{"folder_url": "1AbCdEfGhIjKlMnOpQrStUvWxYz012345"}',
            {"Content-Type": "application/json; charset=latin-1"},
            400,
            "invalid_json",
        ),
        (b"[" * 30_000, {"Content-Type": JSON}, 400, "invalid_json"),
        (b'{"a": ' * 10_000, {"Content-Type": JSON}, 400, "invalid_json"),
        (b'"\xff"', {"Content-Type": JSON}, 400, "invalid_json"),
        (b"", {"Content-Type": JSON}, 400, "invalid_json"),
        (b"NaN", {"Content-Type": JSON}, 400, "invalid_json"),
        (
            json.dumps(
                {"folder_url": "https://drive.google.com/drive/folders/1AbCdEfGhIjKlMnOpQrStUvWxYz012345?x=\x00"}
            ).encode(),
            {"Content-Type": JSON},
            422,
            "invalid_folder_url",
        ),
        (
            b'{"folder_url": "https://drive.google.com/drive/folders/1AbCdEfGhIjKlMnOpQrStUvWxYz012345?x=\\ud800"}',
            {"Content-Type": JSON},
            422,
            "invalid_folder_url",
        ),
        (
            json.dumps({"folder_url": "1AbCdEfGhIjKlMnOpQrStUvWxYz012345\x00"}).encode(),
            {"Content-Type": JSON},
            422,
            "invalid_folder_url",
        ),
    ],
)
async def test_bad_import_bodies_get_a_4xx(
    idle_client: Any, data: bytes, headers: dict[str, str], status: int, code: str
) -> None:
    resp = await idle_client.post("/import/google-drive", data=data, headers=headers)
    await assert_error(resp, status, code)
    assert (await (await idle_client.get("/imports")).json())["imports"] == []


async def test_a_nul_in_the_form_link_shows_the_form_again(idle_client: Any) -> None:
    token = form_token(await (await idle_client.get("/")).text())
    for link in (
        "https://drive.google.com/drive/folders/1AbCdEfGhIjKlMnOpQrStUvWxYz012345?x=\x00",
        "1AbCdEfGhIjKlMnOpQrStUvWxYz012345\x00",
    ):
        resp = await idle_client.post(
            "/ui/imports", data={"folder_url": link, "csrf_token": token}, allow_redirects=False
        )
        assert resp.status == 422
        assert resp.content_type == "text/html"
        assert "\x00" not in await resp.text()
    assert (await (await idle_client.get("/imports")).json())["imports"] == []


# --- 4. error answers keep their headers ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "allowed", "html"),
    [
        ("PUT", "/imports", "GET", False),
        ("PUT", "/imports/1", "DELETE", False),
        ("GET", "/import/google-drive", "POST", False),
        ("PATCH", "/images/1/content", "GET", False),
        ("PUT", "/ui/gallery", "GET", True),
        ("GET", "/ui/lock", "POST", True),
    ],
)
async def test_405_answers_say_what_is_allowed(
    idle_client: Any, method: str, path: str, allowed: str, html: bool
) -> None:
    resp = await idle_client.request(method, path, allow_redirects=False)
    assert resp.status == 405
    assert allowed in {m.strip() for m in resp.headers["Allow"].split(",")}
    if html:
        assert resp.content_type == "text/html"
    else:
        await assert_error(resp, 405, "method_not_allowed")


# --- 5. a client leaving mid-download is not an error ---------------------------------------------------


async def test_a_client_leaving_mid_download_is_not_an_error(
    client: Any, app_settings: AppSettings, drive: RunningEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    root = drive.emu.add_folder(None, "Big")
    drive.emu.add_image(root, "big.jpg", size_bytes=24 * MiB)
    body = await wait_for_import(client, await start_import(client, root))
    assert body["status"] == "completed", body
    image = (await (await client.get("/images")).json())["images"][0]

    # Served as `fotoowl serve` serves it: the test server cancels handlers on disconnect, which
    # would hide what production sees (a failed write).
    runner = web.AppRunner(create_app(app_settings, run_worker=False))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    caplog.set_level(logging.DEBUG, logger="fotoowl.web")
    try:
        for _ in range(3):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(f"GET {image['url']} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
            await writer.drain()
            assert (await reader.readexactly(12)).startswith(b"HTTP/1.1 200")
            writer.transport.abort()  # a reset, as when a browser tab is closed

        def ended() -> list[logging.LogRecord]:
            return [
                r
                for r in caplog.records
                if r.name == "fotoowl.web" and (r.getMessage() == "unhandled error" or "went away" in r.getMessage())
            ]

        for _ in range(200):
            if len(ended()) >= 3:
                break
            await asyncio.sleep(0.05)
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert errors == []
        assert [r.levelno for r in ended()] == [logging.DEBUG] * 3

        # The server keeps serving.
        async with aiohttp.ClientSession() as session, session.get(f"http://{host}:{port}{image['url']}") as resp:
            assert resp.status == 200
            assert len(await resp.read()) == image["size"]
    finally:
        await runner.cleanup()


async def raw_request(host: str, port: int, head: bytes) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(head)
        await writer.drain()
        answer = await reader.read()
    finally:
        writer.close()
    return int(answer.split(b" ", 2)[1]), answer


async def test_header_bytes_that_are_not_utf8_are_refused_not_crashed_on(locked_client: Any) -> None:
    host, port = locked_client.host, locked_client.port
    for head, status in (
        (b"GET / HTTP/1.1\r\nCookie: fotoowl_unlock=\xff\xfe; fotoowl_csrf=\xff\r\n", 200),
        (
            b"POST /imports/1/cancel HTTP/1.1\r\nAuthorization: Bearer \xff\r\nContent-Type: application/json\r\n"
            b"Content-Length: 0\r\n",
            401,
        ),
        (
            b"POST /ui/imports HTTP/1.1\r\nCookie: fotoowl_csrf=\xff\r\nContent-Type: application/x-www-form-urlencoded"
            b"\r\nContent-Length: 14\r\n",
            403,
        ),
    ):
        answered, answer = await raw_request(
            host,
            port,
            head + b"Host: x\r\nConnection: close\r\n\r\n" + (b"csrf_token=%FF" if b"/ui/imports" in head else b""),
        )
        assert answered == status, answer[:400]
