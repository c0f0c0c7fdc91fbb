"""`python -m fotoowl.preview_worker`: the preview child of a worker process (pipeline/preview_process.py).

It runs at nice 19 with its own event loop, database pool and storage client, and makes pending
previews at full pace (pipeline/preview_lane.py) until its stdin closes (its parent stopping, or
gone) or it gets SIGTERM. It holds no items and beats no heartbeat: its preview claims are leased.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys

from fotoowl.config import AppSettings
from fotoowl.logs import setup_logging
from fotoowl.metrics import preview_originals_read
from fotoowl.worker import open_deps

log = logging.getLogger("fotoowl.preview_worker")

LOWEST_PRIORITY = 19


async def _parent_gone() -> None:
    """Returns when stdin reaches its end: the parent closed it, or exited."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while await reader.read(4096):
        pass


async def serve(settings: AppSettings) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    async with open_deps(settings, previews="lane", heartbeat=False):
        log.info("preview process ready", extra={"pid": os.getpid()})
        parent = asyncio.create_task(_parent_gone())
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait({parent, stopped}, return_when=asyncio.FIRST_COMPLETED)
        parent.cancel()
        stopped.cancel()
    # Whether the spool had room for the backlog, in one line a benchmark or an operator can read.
    read = preview_originals_read()
    log.info(
        "preview process stopped",
        extra={"originals_from_spool": read["spool"], "originals_from_storage": read["storage"]},
    )


def main() -> None:
    # Ctrl-C in a terminal reaches the whole process group: the parent decides when this one stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(OSError):
        os.nice(LOWEST_PRIORITY - os.nice(0))
    settings = AppSettings.from_env()
    setup_logging(settings)
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
