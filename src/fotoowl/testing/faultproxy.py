"""Proxies that stand between fotoowl and a real server and misbehave on request.

Tests and the chaos suite put one in front of PostgreSQL, Redis or S3 to make outages on demand
without stopping the shared server: the real server keeps its data, only the path to it breaks.

- `TcpFaultProxy` forwards bytes. `refuse()` closes every open connection and turns new ones away
  (a restart, as a client sees it); `stall()` accepts but forwards nothing (a SIGSTOPped server).
- `HttpFaultProxy` forwards HTTP requests one by one, so it can answer S3 writes with 500 while reads
  still work, the way an overloaded or half-broken object store does.

Both can be `retarget`ed: a real server restarted on another port stays behind the same proxy port,
so clients keep the address they were configured with.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Literal

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

log = logging.getLogger("fotoowl.testing.faultproxy")

Mode = Literal["pass", "refuse", "stall"]
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "upgrade",
        "te",
        "trailer",
        "proxy-authenticate",
        "proxy-authorization",
    }
)


class TcpFaultProxy:
    """A loopback TCP proxy to `target_host:target_port` whose path can be cut and restored."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.mode: Mode = "pass"
        self.port = 0
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.connections_refused = 0

    async def start(self, port: int = 0) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self._drop_all()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def refuse(self) -> None:
        """Close every connection now and turn new ones away until `restore()`."""
        self.mode = "refuse"
        self._drop_all()

    def stall(self) -> None:
        """Keep connections open but move no byte either way until `restore()`."""
        self.mode = "stall"

    def restore(self) -> None:
        self.mode = "pass"

    def retarget(self, host: str, port: int) -> None:
        """New connections go to host:port; open ones stay with the old server until it closes them."""
        self.target_host = host
        self.target_port = port

    def _drop_all(self) -> None:
        for writer in list(self._open):
            writer.transport.abort()
        self._open.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode == "refuse":
            self.connections_refused += 1
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._open.update((writer, up_writer))
        pipes = [asyncio.create_task(self._pipe(reader, up_writer)), asyncio.create_task(self._pipe(up_reader, writer))]
        self._tasks.update(pipes)
        try:
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pipe in pipes:
                pipe.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)
            self._tasks.difference_update(pipes)
            for w in (writer, up_writer):
                self._open.discard(w)
                w.transport.abort()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, ConnectionError):
            while True:
                data = await reader.read(65536)
                if not data:
                    return
                while self.mode == "stall":  # noqa: ASYNC110 - a test tool; polling keeps it simple
                    await asyncio.sleep(0.05)
                if self.mode == "refuse":
                    return
                writer.write(data)
                await writer.drain()


class HttpFaultProxy:
    """An HTTP reverse proxy to `target_url` that can fail writes (PUT, POST, DELETE) with 500.

    The Host header is passed through unchanged, so AWS SigV4 signatures made for the proxy's
    address still verify at the real server.
    """

    def __init__(self, target_url: str) -> None:
        self.target_url = target_url.rstrip("/")
        self.fail_writes = False
        self.failed_writes = 0
        self.dropped_requests = 0
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def retarget(self, target_url: str) -> None:
        self.target_url = target_url.rstrip("/")

    async def start(self, port: int = 0) -> str:
        self._session = aiohttp.ClientSession(
            auto_decompress=False, timeout=aiohttp.ClientTimeout(total=None, sock_connect=10)
        )
        app = web.Application(client_max_size=1024**3)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.Server)
        self.port = int(server.sockets[0].getsockname()[1])
        return self.url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if self.fail_writes and request.method in ("PUT", "POST", "DELETE"):
            self.failed_writes += 1
            return web.Response(
                status=500,
                content_type="application/xml",
                text='<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code>'
                "<Message>We encountered an internal error. Please try again.</Message></Error>",
            )
        headers = CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP)
        assert self._session is not None
        try:
            async with self._session.request(
                request.method,
                self.target_url + request.raw_path,
                headers=headers,
                data=body,
                allow_redirects=False,
                skip_auto_headers=("User-Agent", "Content-Type", "Accept-Encoding"),
            ) as upstream:
                payload = await upstream.read()
                # A HEAD answer's Content-Length is the object's size (S3 clients read it), not the body's.
                head = request.method == "HEAD"
                out_headers = CIMultiDict(
                    (k, v)
                    for k, v in upstream.headers.items()
                    if k.lower() not in _HOP_BY_HOP and (head or k.lower() != "content-length")
                )
                return web.Response(status=upstream.status, headers=out_headers, body=None if head else payload)
        except (aiohttp.ClientConnectionError, OSError):
            # A dead or restarting server: the client must see its connection fail, as it would
            # without the proxy, not an HTTP answer the server never gave.
            self.dropped_requests += 1
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=502)
