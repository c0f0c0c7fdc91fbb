"""A worker process's previews made by a child process at the lowest CPU priority.

Previews made on the worker's own event loop delay every copy in flight (each waits its turn on the
loop several times per file), so there they trickle while the worker copies (preview_lane.py). Yet a
latency-bound copy leaves most of a core idle. A child process (`python -m fotoowl.preview_worker`)
with its own event loop, at nice 19, spends that idle CPU on previews at full pace: the kernel runs
it only when the copies' processes wait. It claims previews from the database like any lane (leases,
SKIP LOCKED), so it needs nothing from its parent but the environment.

The parent supervises it: a child that dies is started again (after a pause that doubles, to a
minute); at shutdown its stdin is closed, which it takes as the signal to hand back what it has not
started and exit. A parent killed outright closes that pipe too, so a child never outlives it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator

from fotoowl.timeouts import within

log = logging.getLogger("fotoowl.pipeline.preview_process")

CHILD_MODULE = "fotoowl.preview_worker"
# A child that handed back its claims exits within this; past it, it is killed (its leases expire).
STOP_TIMEOUT_S = 15.0
RESTART_FIRST_S = 1.0
RESTART_LONGEST_S = 60.0
# A child that ran this long before dying was not failing at start-up: its restart pause starts over.
HEALTHY_RUN_S = 60.0


@contextlib.asynccontextmanager
async def running() -> AsyncIterator[None]:
    """The preview child of this process, from start-up to shutdown."""
    stopping = asyncio.Event()
    task = asyncio.create_task(_supervise(stopping), name="fotoowl-preview-process")
    try:
        yield
    finally:
        stopping.set()
        await asyncio.gather(task, return_exceptions=True)


async def _supervise(stopping: asyncio.Event) -> None:
    pause_s = RESTART_FIRST_S
    loop = asyncio.get_running_loop()
    while not stopping.is_set():
        started_at = loop.time()
        try:
            child = await asyncio.create_subprocess_exec(
                sys.executable, "-m", CHILD_MODULE, stdin=asyncio.subprocess.PIPE
            )
        except OSError as exc:
            log.error("could not start the preview process: %s; previews wait", exc)
        else:
            log.info("preview process started", extra={"pid": child.pid})
            code = await _run_until_stopped(child, stopping)
            if stopping.is_set():
                return
            log.error("the preview process exited with %s; starting it again in %.0f s", code, pause_s)
            if loop.time() - started_at > HEALTHY_RUN_S:
                pause_s = RESTART_FIRST_S
        with contextlib.suppress(TimeoutError):
            await within(stopping.wait(), pause_s)
        pause_s = min(RESTART_LONGEST_S, pause_s * 2)


async def _run_until_stopped(child: asyncio.subprocess.Process, stopping: asyncio.Event) -> int | None:
    """Wait for the child to exit, or stop it when `stopping` is set; returns its exit code."""
    exited = asyncio.create_task(child.wait())
    stop = asyncio.create_task(stopping.wait())
    try:
        await asyncio.wait({exited, stop}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
        if not exited.done():
            await _stop(child, exited)
    return exited.result() if exited.done() and not exited.cancelled() else None


async def _stop(child: asyncio.subprocess.Process, exited: asyncio.Task[int]) -> None:
    if child.stdin is not None:
        child.stdin.close()
    try:
        await within(asyncio.shield(exited), STOP_TIMEOUT_S)
    except TimeoutError:
        log.warning("the preview process did not stop within %.0f s; killing it", STOP_TIMEOUT_S)
        with contextlib.suppress(ProcessLookupError):
            child.kill()
        await exited
