"""Running it: serving a DropboxEmulator over HTTP on a free port."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web

from fotoowl.testing.dropbox_emulator.app import DropboxEmulator


async def start_emulator(emu: DropboxEmulator, host: str = "127.0.0.1", port: int = 0) -> tuple[web.AppRunner, str]:
    """Serve `emu`; returns the runner (call `cleanup()`) and the base URL, which is both the api_url and
    the content_url of DropboxSource/DropboxClient (one server answers the routes of both hosts)."""
    # No access log: Authorization headers and links must not reach logs, here as in the client.
    runner = web.AppRunner(emu.make_app(), access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound_port = runner.addresses[0][1]
    shown_host = f"[{host}]" if ":" in host else host
    return runner, f"http://{shown_host}:{bound_port}"


@asynccontextmanager
async def running_emulator(emu: DropboxEmulator, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
    runner, base_url = await start_emulator(emu, host, port)
    try:
        yield base_url
    finally:
        await runner.cleanup()
