"""The command line as a client of a running server: `fotoowl import`, `imports` and `images` against the
real app on a real port (the `client` fixture), run as subprocesses with FOTOOWL_URL pointing at it and
without any database or Google setting of their own; and the typed client (fotoowl.client) itself.
"""

from __future__ import annotations

import asyncio
import json
import os
import pty
import re
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from conftest import RunningEmulator, counts, wait_for_import, without_previews
from fotoowl import embedded
from fotoowl.cli_import import POLL_S
from fotoowl.client import ApiFailure, FotoowlClient, ImageFilters, ServiceUnreachable
from fotoowl.config import AppSettings, Secret
from fotoowl.models import Image, Import, ImportAccepted
from fotoowl.statuses import ImportStatus
from test_cli import link, run_cli

TOKEN = "cli-test-token"


def api_env(url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FOTOOWL_", "GOOGLE_"))}
    env.update({"FOTOOWL_URL": url, "FOTOOWL_LOG_FORMAT": "json", **extra})
    return env


def base_url(client: Any) -> str:
    return str(client.make_url("/"))


def shoot(drive: RunningEmulator) -> str:
    """Four images on top, two in "Day 2" and a text file: 7 found, 6 imported, 1 skipped."""
    root = drive.emu.add_folder(None, "Shoot")
    day2 = drive.emu.add_folder(root, "Day 2")
    for i in range(4):
        drive.emu.add_image(root, f"top-{i}.jpg")
    for i in range(2):
        drive.emu.add_image(day2, f"day2-{i}.jpg")
    drive.emu.add_file(root, "notes.txt", "text/plain", content=b"not an image")
    return root


async def import_through_the_api(client: Any, folder_id: str) -> dict[str, Any]:
    resp = await client.post("/import/google-drive", json={"folder_url": link(folder_id)})
    assert resp.status == 202, await resp.text()
    return await wait_for_import(client, (await resp.json())["import_id"])


# --- fotoowl import -------------------------------------------------------------------------------

SUMMARY = re.compile(r"import (\d+): completed - 6 imported, 1 skipped, 0 failed of 7 found; [\d,]+ bytes\n")


async def test_import_wait_prints_the_summary_and_exits_0(client: Any, drive: RunningEmulator) -> None:
    code, out, err = await run_cli(api_env(base_url(client)), "import", link(shoot(drive)), "--wait")
    assert code == 0, err
    assert SUMMARY.fullmatch(out), out
    assert "Traceback" not in err


async def test_import_wait_json_is_the_import_as_the_api_shows_it(client: Any, drive: RunningEmulator) -> None:
    code, out, err = await run_cli(api_env(base_url(client)), "import", link(shoot(drive)), "--wait", "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["status"] == "completed"
    assert summary["counts"] == counts(found=7, imported=6, skipped=1)
    resp = await client.get(f"/imports/{summary['id']}")
    # Previews follow the import (their own stage): their counts may have moved on since.
    assert without_previews(summary) == without_previews(await resp.json())


async def test_import_without_wait_returns_once_queued(client: Any, drive: RunningEmulator) -> None:
    url = base_url(client).rstrip("/")
    code, out, err = await run_cli(api_env(url), "import", link(shoot(drive)), "--no-recursive")
    assert code == 0, err
    found = re.fullmatch(rf"import (\d+) \w+: {re.escape(url)}/ui/imports/(\d+)\n", out)
    assert found and found[1] == found[2], out
    final = await wait_for_import(client, int(found[1]))
    assert final["recursive"] is False
    assert final["counts"]["imported"] == 4  # not the two in "Day 2"


async def test_invalid_link_exits_2_with_the_servers_message(client: Any) -> None:
    bad = "https://example.com/drive/folders/abc"
    resp = await client.post("/imports", json={"folder_url": bad})
    assert resp.status == 422
    message = (await resp.json())["error"]["message"]
    code, out, err = await run_cli(api_env(base_url(client)), "import", bad, "--wait")
    assert (code, out, err) == (2, "", f"fotoowl: {message}\n")
    code, out, _ = await run_cli(api_env(base_url(client)), "import", bad, "--json")
    assert code == 2
    assert json.loads(out) == {"status": "rejected", "error": {"code": "invalid_folder_url", "message": message}}
    assert (await (await client.get("/imports")).json())["imports"] == []


async def test_fotoowl_url_wins_over_a_database_url(client: Any) -> None:
    # FOTOOWL_DATABASE_URL alone selects --direct (scripts of before); FOTOOWL_URL says "the server".
    env = api_env(
        base_url(client),
        FOTOOWL_DATABASE_URL=f"postgresql://u@127.0.0.1:{embedded.free_port()}/x",
        FOTOOWL_REDIS_URL=f"redis://127.0.0.1:{embedded.free_port()}/0",
    )
    code, _, err = await run_cli(env, "import", "not a link")
    assert code == 2, err
    assert "database" not in err and "link" in err


async def test_server_not_running_exits_4_with_one_line() -> None:
    url = f"http://127.0.0.1:{embedded.free_port()}"
    code, out, err = await run_cli(api_env(url), "import", link("1AbCdEfGhIjKlMnOpQrStUvWxYz"), "--wait")
    assert (code, out) == (4, "")
    lines = err.splitlines()
    assert len(lines) == 1, err
    for part in (url, "FOTOOWL_URL", "Connection refused", "make run", "fotoowl serve", "--direct"):
        assert part in lines[0], part
    code, out, _ = await run_cli(api_env(url), "import", link("1AbCdEfGhIjKlMnOpQrStUvWxYz"), "--json")
    assert code == 4
    assert json.loads(out)["error"]["code"] == "server_unavailable"


async def test_without_fotoowl_url_the_server_is_where_fotoowl_host_and_port_say() -> None:
    env = api_env("", FOTOOWL_HOST="0.0.0.0", FOTOOWL_PORT=str(port := embedded.free_port()))
    del env["FOTOOWL_URL"]
    code, _, err = await run_cli(env, "imports")
    assert code == 4
    # A server listening on every address is reached on loopback; `imports` has no --direct to suggest.
    assert f"http://127.0.0.1:{port} (FOTOOWL_URL)" in err and "--direct" not in err


# --- a token-protected server ---------------------------------------------------------------------


async def test_a_server_with_a_token_needs_fotoowl_api_token(
    app_settings: AppSettings, aiohttp_client: Any, drive: RunningEmulator
) -> None:
    from fotoowl.web.app import create_app

    client = await aiohttp_client(create_app(app_settings.replace(api_token=Secret(TOKEN))))
    url, folder = base_url(client), link(shoot(drive))
    code, out, err = await run_cli(api_env(url), "import", folder, "--wait")
    assert (code, out) == (2, "")
    assert len(err.splitlines()) == 1, err
    assert "401" in err and "set FOTOOWL_API_TOKEN" in err
    code, _, err = await run_cli(api_env(url, FOTOOWL_API_TOKEN="wrong"), "import", folder)
    assert code == 2
    assert "FOTOOWL_API_TOKEN is not the server's token" in err
    assert (await (await client.get("/imports")).json())["imports"] == []

    code, out, err = await run_cli(api_env(url, FOTOOWL_API_TOKEN=TOKEN), "import", folder, "--wait")
    assert code == 0, err
    assert SUMMARY.fullmatch(out), out


# --- fotoowl imports / images ---------------------------------------------------------------------


async def test_imports_and_images_list_what_the_import_made(client: Any, drive: RunningEmulator) -> None:
    done = await import_through_the_api(client, shoot(drive))
    env = api_env(base_url(client))

    code, out, err = await run_cli(env, "imports")
    assert code == 0, err
    header, row = out.splitlines()
    assert header.split() == ["ID", "STATUS", "FOLDER", "FOUND", "IMPORTED", "SKIPPED", "FAILED", "CREATED", "(UTC)"]
    assert row.split()[:7] == [str(done["id"]), "completed", "Shoot", "7", "6", "1", "0"]

    code, out, _ = await run_cli(env, "imports", "--json")
    assert code == 0
    assert [without_previews(json.loads(line)) for line in out.splitlines()] == [without_previews(done)]

    code, out, _ = await run_cli(env, "images", "--import-id", str(done["id"]))
    assert code == 0
    header, *rows = out.splitlines()
    assert header.split() == ["ID", "NAME", "SIZE", "TYPE", "FOLDER"]
    names = {r.split()[1]: r.split("  ")[-1].strip() for r in rows}
    assert names == {**{f"top-{i}.jpg": "/" for i in range(4)}, **{f"day2-{i}.jpg": "/Day 2" for i in range(2)}}

    code, out, _ = await run_cli(env, "images", "--folder", "Day 2", "--q", "day2-1", "--json")
    assert code == 0
    (image,) = [json.loads(line) for line in out.splitlines()]
    assert (image["name"], image["folder_path"], image["import_id"]) == ("day2-1.jpg", "Day 2", done["id"])
    assert image == await (await client.get(f"/images/{image['id']}")).json()


async def test_images_with_no_match_print_nothing_on_stdout(client: Any) -> None:
    code, out, err = await run_cli(api_env(base_url(client)), "images", "--q", "nothing-is-called-this")
    assert (code, out) == (0, "")
    assert "no images" in err


# --- progress on a terminal -----------------------------------------------------------------------


async def test_wait_draws_progress_on_a_terminal(client: Any, drive: RunningEmulator) -> None:
    drive.emu.latency_s = 0.05  # a few polls' worth of import
    leader, follower = pty.openpty()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "fotoowl.cli",
        "import",
        link(shoot(drive)),
        "--wait",
        env=api_env(base_url(client)),
        stdout=asyncio.subprocess.PIPE,
        stderr=follower,
    )
    os.close(follower)

    def read_terminal() -> bytes:
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)

    try:
        terminal, (out, _) = await asyncio.wait_for(
            asyncio.gather(asyncio.to_thread(read_terminal), proc.communicate()), 90
        )
    finally:
        os.close(leader)
    assert proc.returncode == 0, terminal
    assert SUMMARY.fullmatch(out.decode()), out
    screen = terminal.decode(errors="replace")
    assert "/7 files" in screen and "img/s" in screen, screen


async def test_ctrl_c_stops_the_waiting_not_the_import(client: Any, drive: RunningEmulator) -> None:
    drive.emu.latency_s = 0.5  # slow enough that the import is still going when Ctrl-C comes
    # Ctrl-C as a terminal sends it, whatever this test run inherited: a suite started in the background
    # of a non-interactive shell ignores SIGINT, and its children would too.
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "runpy.run_module('fotoowl.cli', run_name='__main__')",
        "import",
        link(shoot(drive)),
        "--wait",
        env=api_env(base_url(client)),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        for _ in range(200):
            imports = (await (await client.get("/imports")).json())["imports"]
            if imports:
                break
            await asyncio.sleep(0.05)
        (started,) = imports
        await asyncio.sleep(POLL_S)  # into the polling loop
        proc.send_signal(signal.SIGINT)
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert (proc.returncode, out) == (130, b""), err
    assert f"stopped waiting; import {started['id']} goes on: " in err.decode()
    assert "Traceback" not in err.decode()
    drive.emu.latency_s = 0
    assert (await wait_for_import(client, started["id"]))["status"] == "completed"


# --- the client itself ----------------------------------------------------------------------------


async def test_client_answers_are_typed_and_dump_back_to_the_api_json(client: Any, drive: RunningEmulator) -> None:
    async with FotoowlClient(base_url(client)) as api:
        started = await api.start_import(link(shoot(drive)), recursive=True)
        assert isinstance(started, ImportAccepted)
        assert started.status_url == f"/imports/{started.import_id}"
        raw = await wait_for_import(client, started.import_id)
        info = await api.get_import(started.import_id)
        assert isinstance(info, Import) and info.status is ImportStatus.COMPLETED
        assert (info.counts.imported, info.counts.skipped, info.urls.self) == (6, 1, f"/imports/{info.id}")
        assert info.body() == raw
        page = await api.list_imports(limit=5)
        assert [i.id for i in page.imports] == [info.id] and page.next_cursor is None
        images = await api.list_images(ImageFilters(import_id=info.id, folder="Day 2"))
        assert all(isinstance(i, Image) for i in images.images)
        assert sorted(i.name for i in images.images) == ["day2-0.jpg", "day2-1.jpg"]
        raw_images = await (await client.get(f"/images?import_id={info.id}&folder=Day+2")).json()
        assert [i.body() for i in images.images] == raw_images["images"]


async def test_client_follows_cursors_up_to_the_limit(client: Any, drive: RunningEmulator) -> None:
    done = await import_through_the_api(client, shoot(drive))
    async with FotoowlClient(base_url(client)) as api:
        everything = [i.id async for i in api.iter_images(None, 100)]
        assert len(everything) == 6 and everything == sorted(everything, reverse=True)
        paged = [i.id async for i in api.iter_images(ImageFilters(import_id=done["id"]), 5, page_size=2)]
        assert paged == everything[:5]
        assert [i.id async for i in api.iter_imports(10, page_size=1)] == [done["id"]]


async def test_client_raises_api_failure_with_the_servers_code(client: Any) -> None:
    async with FotoowlClient(base_url(client)) as api:
        with pytest.raises(ApiFailure) as caught:
            await api.get_import(999_999)
        assert (caught.value.status, caught.value.code) == (404, "not_found")
        with pytest.raises(ApiFailure) as caught:
            await api.start_import("not a link")
        assert (caught.value.status, caught.value.code) == (422, "invalid_folder_url")
        with pytest.raises(ApiFailure) as caught:
            await api.list_images(ImageFilters(q="x" * 201))
        assert (caught.value.status, caught.value.code) == (400, "invalid_parameter")


async def test_client_reports_a_server_that_is_not_there() -> None:
    async with FotoowlClient(f"http://127.0.0.1:{embedded.free_port()}") as api:
        with pytest.raises(ServiceUnreachable) as caught:
            await api.list_imports()
    assert caught.value.reason == "Connection refused"


async def test_client_refuses_answers_that_are_not_the_api(
    aiohttp_server: Callable[[web.Application], Awaitable[TestServer]],
) -> None:
    async def other_json(request: web.Request) -> web.Response:
        return web.json_response({"hello": "world"})

    app = web.Application()
    app.router.add_get("/imports/1", other_json)
    server = await aiohttp_server(app)
    async with FotoowlClient(str(server.make_url("/"))) as api:
        with pytest.raises(ApiFailure) as caught:
            await api.get_import(1)
        assert caught.value.code == "unexpected_response"
        assert "Import: id: Field required" in caught.value.message and "FOTOOWL_URL" in caught.value.message
        with pytest.raises(ApiFailure) as caught:
            await api.list_imports()
        assert (caught.value.status, caught.value.code) == (404, "http_404")


def test_client_takes_only_http_urls() -> None:
    for url in ("ftp://example.com", "127.0.0.1:8000", "http://"):
        with pytest.raises(ValueError):
            FotoowlClient(url)
