"""Telling an outage of our own services from a file's fault, and waiting an outage out.

An outage of PostgreSQL, Redis or storage is never a reason to fail a user's file: the work pauses,
nothing spends a per-file attempt, and it resumes on its own when the service is back. Everything
retried here is idempotent (item writes check the lease token), so a retry after a lost answer is safe.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg
import redis.exceptions
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from fotoowl.timeouts import within

log = logging.getLogger("fotoowl.resilience")

T = TypeVar("T")

# How often a waiting process looks again; doubling from the first to the last.
FIRST_WAIT_S = 0.5
LONGEST_WAIT_S = 5.0
# No single statement of the pipeline comes near this; a try that takes longer met a dead connection.
DB_OPERATION_TIMEOUT_S = 20.0
_LOG_EVERY_S = 10.0

_DB_OUTAGES: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,  # class 08: connection failure, does not exist, ...
    asyncpg.CannotConnectNowError,  # starting up or in recovery
    asyncpg.AdminShutdownError,  # fast or smart shutdown
    asyncpg.CrashShutdownError,  # another backend crashed (a SIGKILLed postmaster's children)
    asyncpg.TooManyConnectionsError,
    OSError,  # refused, reset, unreachable
    TimeoutError,  # command or acquire timeout while the server hangs
)
_STORAGE_CONNECTION_ERRORS = (EndpointConnectionError, ConnectionClosedError, ConnectTimeoutError, ReadTimeoutError)
_STORAGE_OUTAGE_CODES = frozenset({"InternalError", "ServiceUnavailable", "SlowDown", "503", "500", "502", "504"})


def is_db_outage(exc: BaseException) -> bool:
    if isinstance(exc, _DB_OUTAGES):
        return True
    # asyncpg reports a connection lost mid-query as an InterfaceError ("connection is closed"), and a
    # connection left mid-operation by a crash as an InternalClientError ("another operation is in
    # progress"): both are the connection's state, not the statement's fault.
    if isinstance(exc, asyncpg.InterfaceError) and "closed" in str(exc).lower():
        return True
    return isinstance(exc, asyncpg.exceptions.InternalClientError) and "in progress" in str(exc).lower()


def is_redis_outage(exc: BaseException) -> bool:
    return isinstance(exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError | OSError)


def is_storage_outage(exc: BaseException) -> bool:
    """Storage unreachable or failing as a whole (5xx, connection errors), not refusing one object."""
    if isinstance(exc, _STORAGE_CONNECTION_ERRORS):
        return True
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        code = str(exc.response.get("Error", {}).get("Code", ""))
        return int(status) >= 500 or code in _STORAGE_OUTAGE_CODES
    return isinstance(exc, BotoCoreError | OSError) and not isinstance(exc, FileNotFoundError)


class _Throttled:
    """A warning at most every few seconds while one outage lasts."""

    def __init__(self) -> None:
        self._last_s = float("-inf")

    def warn(self, message: str, *args: object) -> None:
        now_s = time.monotonic()
        if now_s - self._last_s >= _LOG_EVERY_S:
            self._last_s = now_s
            log.warning(message, *args)


_db_warning = _Throttled()


async def wait_for_database(pool: asyncpg.Pool) -> None:
    """Return once the database answers again; waits as long as it takes (cancel to give up)."""
    delay_s = FIRST_WAIT_S
    while True:
        try:
            await within(pool.fetchval("SELECT 1"), 5.0)
            return
        except Exception as exc:
            if not is_db_outage(exc):
                raise
            _db_warning.warn("the database is unavailable (%s); waiting for it", type(exc).__name__)
        await asyncio.sleep(delay_s)
        delay_s = min(LONGEST_WAIT_S, delay_s * 2)


async def with_database(
    pool: asyncpg.Pool, op: Callable[[], Awaitable[T]], *, timeout_s: float = DB_OPERATION_TIMEOUT_S
) -> T:
    """Run an idempotent database operation, waiting out any outage and running it again.

    Each try is bounded: a connection to a server that died without closing it (a SIGKILLed
    postmaster leaves its backends behind for a while) can hang a COPY or a commit, and a batch stuck
    there would keep renewing its items' leases forever."""
    while True:
        try:
            return await within(op(), timeout_s)
        except Exception as exc:
            if not is_db_outage(exc):
                raise
            _db_warning.warn("a database operation failed (%s); waiting for the database", type(exc).__name__)
        await wait_for_database(pool)


class OutageGate:
    """One per process and service: work that needs the service waits while it is down.

    A failure that looks like an outage is confirmed by a probe (one at a time, shared by every
    caller) so one bad answer does not pause the process, and the probe keeps going, backing off,
    until the service answers: then everything waiting resumes at once.
    """

    def __init__(self, name: str, probe: Callable[[], Awaitable[object]], *, probe_timeout_s: float = 10.0) -> None:
        self.name = name
        self._probe = probe
        self._probe_timeout_s = probe_timeout_s
        self._up = asyncio.Event()
        self._up.set()
        self._watching: asyncio.Task[None] | None = None
        self._probing: asyncio.Future[bool] | None = None
        self.down_since_s: float | None = None
        self.up_since_s = float("-inf")
        self.outages = 0

    @property
    def is_up(self) -> bool:
        return self._up.is_set()

    async def _answers(self) -> bool:
        try:
            await within(self._probe(), self._probe_timeout_s)
            return True
        except Exception as exc:
            log.warning("%s is unavailable: %s", self.name, f"{type(exc).__name__}: {exc}"[:300])
            return False

    async def confirm_outage(self, *, recent_s: float = 0.0) -> bool:
        """After a failure that looks like an outage: is the service really down (or was it, less than
        `recent_s` ago)? If it is down now, pause."""
        if not self._up.is_set():
            return True
        # Every copy in flight fails at once when storage goes: they share one probe, not one each.
        if self._probing is None or self._probing.done():
            self._probing = asyncio.ensure_future(self._answers())
        if await asyncio.shield(self._probing):
            return time.monotonic() - self.up_since_s < recent_s
        if self._up.is_set():
            self._up.clear()
            self.down_since_s = time.monotonic()
            self.outages += 1
            log.warning("%s is down: pausing work that needs it until it answers again", self.name)
            self._watching = asyncio.create_task(self._watch())
        return True

    async def _watch(self) -> None:
        delay_s = FIRST_WAIT_S
        while not await self._answers():
            await asyncio.sleep(delay_s)
            delay_s = min(LONGEST_WAIT_S, delay_s * 2)
        down_s = time.monotonic() - (self.down_since_s or time.monotonic())
        log.warning("%s is back after %.1f s: resuming", self.name, down_s)
        self.down_since_s = None
        self.up_since_s = time.monotonic()
        self._up.set()

    async def wait_until_up(self, timeout_s: float | None = None) -> bool:
        """True once the service is up (at once when it is); False if `timeout_s` ran out first."""
        if self._up.is_set():
            return True
        try:
            await within(self._up.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    def cancel(self) -> None:
        for task in (self._watching, self._probing):
            if task is not None:
                task.cancel()
