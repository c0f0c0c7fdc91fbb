"""Running it: the emulator over HTTP, on one address or on two (pages and downloads apart, as
drive.google.com and drive.usercontent.google.com are)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web

from fotoowl.testing.drive_public_emulator.app import PublicDriveEmulator


@dataclass
class PublicEmulatorServer:
    """Where the emulator answers: `page_url` and `download_url` for DrivePublicSource."""

    page_url: str
    download_url: str
    runners: list[web.AppRunner] = field(default_factory=list)

    async def cleanup(self) -> None:
        for runner in self.runners:
            await runner.cleanup()


async def _serve(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    shown_host = f"[{host}]" if ":" in host else host
    return runner, f"http://{shown_host}:{runner.addresses[0][1]}"


async def start_emulator(
    emu: PublicDriveEmulator,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    separate_download: bool = False,
    download_port: int = 0,
) -> PublicEmulatorServer:
    """Serve `emu`; with `separate_download` the downloads get an address of their own (and the folder
    pages' address serves none), and the virus-scan form points there."""
    if not separate_download:
        runner, url = await _serve(emu.make_app(), host, port)
        return PublicEmulatorServer(url, url, [runner])
    page_runner, page_url = await _serve(emu.make_app(downloads=False), host, port)
    try:
        download_runner, download_url = await _serve(emu.make_app(pages=False), host, download_port)
    except BaseException:
        await page_runner.cleanup()
        raise
    emu.download_base_url = download_url
    return PublicEmulatorServer(page_url, download_url, [page_runner, download_runner])


@asynccontextmanager
async def running_emulator(
    emu: PublicDriveEmulator, host: str = "127.0.0.1", port: int = 0, *, separate_download: bool = False
) -> AsyncIterator[PublicEmulatorServer]:
    server = await start_emulator(emu, host, port, separate_download=separate_download)
    try:
        yield server
    finally:
        await server.cleanup()
