"""Regression tests for three small defects: SeaweedFS port picking, the CLI with a service down, and
download redirects to URLs that have no usable host."""

from __future__ import annotations

import json
import os
import socket
import stat
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from drive_helpers import fast_client, read_all
from fotoowl import embedded
from fotoowl.sources.google_drive.errors import DriveError
from test_cli import link, run_cli

# --- SeaweedFS ports ------------------------------------------------------------------------------

GRPC_OFFSET = 10000


def test_port_groups_never_collide_with_their_grpc_ports() -> None:
    for _ in range(2000):
        ports = embedded.free_ports_with_offset(5, GRPC_OFFSET)
        assert len(ports) == 5
        numbers = [*ports, *(p + GRPC_OFFSET for p in ports)]
        assert len(set(numbers)) == 10, ports
        assert all(0 < n < 65536 for n in numbers), ports


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def test_port_groups_are_free_when_returned() -> None:
    ports = embedded.free_ports_with_offset(5, GRPC_OFFSET)
    assert all(_bindable(p) and _bindable(p + GRPC_OFFSET) for p in ports)


def _fake_weed(tmp_path: Path, *, clashes: int) -> tuple[Path, Path]:
    """A stand-in for the weed binary: the first `clashes` runs fail the way `weed mini` does on a port
    reserved for gRPC, later runs answer HTTP on the -s3.port. Each run appends its arguments to a file."""
    calls = tmp_path / "calls"
    script = tmp_path / "weed"
    script.write_text(f"""#!{sys.executable}
import http.server, pathlib, sys
calls = pathlib.Path({str(calls)!r})
with calls.open("a") as f:
    f.write(" ".join(sys.argv[1:]) + "\\n")
if len(calls.read_text().splitlines()) <= {clashes}:
    print("F0101 port 18333 for filer (specified by flag -filer.port) is reserved for gRPC calculation "
          "and cannot be used", flush=True)
    sys.exit(1)
s3 = int(next(a for a in sys.argv if a.startswith("-s3.port=")).split("=", 1)[1])
http.server.HTTPServer(("127.0.0.1", s3), http.server.BaseHTTPRequestHandler).serve_forever()
""")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script, calls


def _port_flags(args_line: str) -> dict[str, int]:
    return {
        a.split("=", 1)[0]: int(a.split("=", 1)[1])
        for a in args_line.split()
        if a.startswith("-") and ".port=" in a and not a.startswith("-s3.port.")
    }


def test_seaweedfs_retries_once_with_new_ports_after_a_grpc_port_clash(tmp_path: Path) -> None:
    weed, calls = _fake_weed(tmp_path, clashes=1)
    server = embedded.start_seaweedfs(
        tmp_path / "s3", bucket="b", access_key_id="k", secret_access_key="s", weed=str(weed)
    )
    try:
        first, second = calls.read_text().splitlines()
        assert server.url == f"http://127.0.0.1:{_port_flags(second)['-s3.port']}"
        assert set(_port_flags(first).values()).isdisjoint(_port_flags(second).values())
    finally:
        server.stop()


def test_seaweedfs_gives_up_after_the_second_clash(tmp_path: Path) -> None:
    weed, calls = _fake_weed(tmp_path, clashes=2)
    with pytest.raises(embedded.EmbeddedError, match="reserved for gRPC calculation"):
        embedded.start_seaweedfs(tmp_path / "s3", bucket="b", access_key_id="k", secret_access_key="s", weed=str(weed))
    assert len(calls.read_text().splitlines()) == 2


# --- `fotoowl import` with a service down -----------------------------------------------------------


def _env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FOTOOWL_", "GOOGLE_"))}
    env.update({"FOTOOWL_GOOGLE_API_KEY": "k", "FOTOOWL_LOG_FORMAT": "json", **values})
    return env


FOLDER = link("1AbCdEfGhIjKlMnOpQrStUvWxYz")


async def test_unreachable_database_exits_4_with_one_line() -> None:
    port = embedded.free_port()
    env = _env(
        FOTOOWL_DATABASE_URL=f"postgresql://postgres:s3cret-pw@127.0.0.1:{port}/x",
        FOTOOWL_REDIS_URL=f"redis://127.0.0.1:{embedded.free_port()}/0",
    )
    code, out, err = await run_cli(env, "import", FOLDER)
    assert code == 4, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "database" in lines[0] and f"127.0.0.1:{port}" in lines[0]
    assert "s3cret-pw" not in err and "****" in lines[0]
    assert "Traceback" not in err and out == ""


async def test_unreachable_database_with_json_prints_the_error_object() -> None:
    env = _env(
        FOTOOWL_DATABASE_URL=f"postgresql://postgres@127.0.0.1:{embedded.free_port()}/x",
        FOTOOWL_REDIS_URL=f"redis://127.0.0.1:{embedded.free_port()}/0",
    )
    code, out, err = await run_cli(env, "import", FOLDER, "--json")
    assert code == 4, err
    body = json.loads(out)
    assert body["status"] == "rejected"
    assert body["error"]["code"] == "database_unavailable"
    assert "Traceback" not in err


async def test_unreachable_redis_exits_4_with_one_line(database_url: str) -> None:
    port = embedded.free_port()
    env = _env(FOTOOWL_DATABASE_URL=database_url, FOTOOWL_REDIS_URL=f"redis://:s3cret-pw@127.0.0.1:{port}/0")
    code, out, err = await run_cli(env, "import", FOLDER, timeout_s=30)
    assert out == ""
    assert code == 4, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Redis" in lines[0] and f"127.0.0.1:{port}" in lines[0]
    assert "s3cret-pw" not in err and "****" in lines[0]


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://postgres:postgres@db/x", "postgresql://postgres:****@db/x"),
        ("redis://:pw@127.0.0.1:6379/0", "redis://:****@127.0.0.1:6379/0"),
        ("postgresql://u@db/x?sslmode=disable&password=pw", "postgresql://u@db/x?sslmode=disable&password=****"),
        ("unix:///run/redis.sock?password=pw&db=0", "unix:///run/redis.sock?password=****&db=0"),
        ("postgresql://u@db/x", "postgresql://u@db/x"),
    ],
)
def test_service_urls_are_shown_without_their_password(url: str, shown: str) -> None:
    from fotoowl.cli import _redacted_url

    assert _redacted_url(url) == shown


# --- download redirects without a usable host -----------------------------------------------------

ServerFactory = Callable[[web.Application], Awaitable[TestServer]]


async def _redirecting_drive(aiohttp_server: ServerFactory, location: str | None) -> TestServer:
    """Stands in for the Drive API: every media request is answered 302 to `location`."""

    async def media(request: web.Request) -> web.StreamResponse:
        if request.path.startswith("/content/"):
            return web.Response(body=b"image bytes")
        headers = {} if location is None else {"Location": location}
        return web.Response(status=302, headers=headers)

    app = web.Application()
    app.router.add_get("/{tail:.*}", media)
    return await aiohttp_server(app)


@pytest.mark.parametrize(
    "location",
    [
        "file:///etc/passwd",
        "http://[::1",
        "//",
        "///x",
        "http:",
        "https://:80/x",
        "http://a:99999/",
        "mailto:drive@example.com",
        "",
        None,
    ],
)
async def test_redirect_without_a_usable_host_fails_that_file_only(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession, location: str | None
) -> None:
    server = await _redirecting_drive(aiohttp_server, location)
    client = fast_client(session, str(server.make_url("")))
    with pytest.raises(DriveError) as caught:
        await read_all(client, "file1")
    assert (caught.value.reason, caught.value.transient) == ("unexpectedRedirect", False)


async def test_relative_redirect_on_the_api_host_is_still_followed(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    server = await _redirecting_drive(aiohttp_server, "/content/file1")
    client = fast_client(session, str(server.make_url("")))
    data, _ = await read_all(client, "file1")
    assert data == b"image bytes"
