"""A last chance, at process exit, for jobs to hand back what they hold.

Under `arq fotoowl.worker.Settings`, arq's own shutdown cancels the running jobs and then waits for
them with a plain `asyncio.gather`: when one of them was cancelled before its function began (arq was
still reading it from Redis), that gather ends at once, the command exits, and the other jobs never
finish handing their claimed files back (they would wait for the heartbeat to lapse instead). At
exit, the loop is still there: this runs it until those jobs are done, then closes the worker's
resources, each bounded. (`fotoowl worker` and embedded workers shut down in order and disarm it.)
"""

from __future__ import annotations

import asyncio
import atexit
import logging
from collections.abc import Awaitable, Callable

from arq.worker import Worker

log = logging.getLogger("fotoowl.worker")

JOBS_GRACE_S = 20.0
SHUTDOWN_GRACE_S = 20.0

# arq runs each job in a task of this coroutine; named from arq itself, so a rename fails at import.
_JOB_COROUTINE = Worker.run_job.__name__


class ExitGrace:
    def __init__(self, loop: asyncio.AbstractEventLoop, shutdown: Callable[[], Awaitable[None]]) -> None:
        self._loop = loop
        self._shutdown = shutdown

    def arm(self) -> None:
        atexit.register(self.finish)

    def disarm(self) -> None:
        atexit.unregister(self.finish)

    def finish(self) -> None:
        loop = self._loop
        if loop.is_closed() or loop.is_running():
            return
        jobs = [task for task in asyncio.all_tasks(loop) if not task.done() and _is_job(task)]
        if jobs:
            log.info("letting %d cancelled job(s) hand their files back before exiting", len(jobs))
            loop.run_until_complete(asyncio.wait(jobs, timeout=JOBS_GRACE_S))
        try:
            loop.run_until_complete(asyncio.wait_for(self._shutdown(), SHUTDOWN_GRACE_S))
        except Exception:
            log.exception("the worker's resources could not be closed at exit")


def _is_job(task: asyncio.Task[object]) -> bool:
    code = getattr(task.get_coro(), "cr_code", None)
    return code is not None and code.co_name == _JOB_COROUTINE
