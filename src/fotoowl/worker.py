"""arq workers: `arq fotoowl.worker.Settings` in their own processes, or embedded in the web app.

Job payloads are import ids, serialised as JSON. Every job is idempotent: arq delivers at least once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import threading
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

import aiohttp
import asyncpg
import redis.exceptions
from arq import ArqRedis, Worker, create_pool, cron
from arq.connections import RedisSettings
from arq.worker import get_kwargs
from redis.asyncio.retry import Retry as RedisRetry
from redis.backoff import ExponentialBackoff

from fotoowl.config import AppSettings
from fotoowl.db import create_pool as create_db_pool
from fotoowl.exit_grace import ExitGrace
from fotoowl.jobs import (
    COURIER,
    DEPS,
    check_watch,
    delete_import,
    deliver_webhooks,
    list_import,
    queue_watch_checks,
    sweep,
    transfer_import,
)
from fotoowl.liveness import beating
from fotoowl.pipeline import preview_lane, preview_process, webhooks
from fotoowl.pipeline.deps import Deps
from fotoowl.resilience import LONGEST_WAIT_S, is_redis_outage
from fotoowl.sources.registry import open_sources
from fotoowl.storage import Storage
from fotoowl.storage_backends import open_storage
from fotoowl.timeouts import within
from fotoowl.worker_http import serving

log = logging.getLogger("fotoowl.worker")

QUEUE_NAME = "fotoowl:queue"
# arq polls every half second; a worker silent for this long is stuck or cut off from Redis.
POLL_SILENCE_LIMIT_S = 15.0
# Worker processes sharing a host serve their metrics on consecutive ports from FOTOOWL_WORKER_HTTP_PORT.
WORKER_HTTP_PORTS = 16
# Shutdown waits at most this long for Redis (it may be the thing that is down).
SHUTDOWN_REDIS_TIMEOUT_S = 5.0
SWEEP_EVERY_S = 5
# Ctx is arq's dict; the key of the worker itself (DEPS, in fotoowl.jobs, holds the dependencies).
WORKER = "fotoowl_worker"


def json_serializer(value: dict[str, Any]) -> bytes:
    # A failed job's result is its exception: stored as its text, since JSON has no exceptions.
    return json.dumps(value, separators=(",", ":"), default=_as_text).encode()


def _as_text(value: object) -> str:
    if isinstance(value, BaseException):
        return f"{type(value).__name__}: {value}"
    return repr(value)


def json_deserializer(data: bytes) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(data)
    return result


def arq_redis_settings(settings: AppSettings, *, patient: bool = False) -> RedisSettings:
    """`patient`: for workers, every Redis call waits out an outage (reconnecting with backoff)
    instead of failing, so a Redis restart pauses them rather than ending them. The web app's pool is
    impatient: a request must not hang; what it could not queue, the sweeper queues later."""
    redis_settings = RedisSettings.from_dsn(settings.redis_url) if settings.redis_url else RedisSettings()
    if patient:
        redis_settings.retry_on_error = [redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError]
        redis_settings.retry = RedisRetry(ExponentialBackoff(cap=LONGEST_WAIT_S, base=0.25), -1)
        redis_settings.conn_retries = 1_000_000
    return redis_settings


async def create_arq_pool(settings: AppSettings, *, patient: bool = False) -> ArqRedis:
    return await create_pool(
        arq_redis_settings(settings, patient=patient),
        job_serializer=json_serializer,
        job_deserializer=json_deserializer,
        default_queue_name=QUEUE_NAME,
    )


def http_session(settings: AppSettings) -> aiohttp.ClientSession:
    # Sized to the files in flight plus listing and metadata calls.
    connector = aiohttp.TCPConnector(limit=settings.files_in_flight * 2 + 8, ttl_dns_cache=300)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None, sock_connect=30))


def make_deps(
    settings: AppSettings, pool: asyncpg.Pool, redis: ArqRedis, storage: Storage, session: aiohttp.ClientSession
) -> Deps:
    return Deps(
        settings=settings, pool=pool, redis=redis, storage=storage, sources=open_sources(settings, session, redis)
    )


@contextlib.asynccontextmanager
async def open_deps(
    settings: AppSettings, *, previews: Literal["lane", "process"] = "lane", heartbeat: bool = True
) -> AsyncIterator[Deps]:
    """Everything a worker process owns, opened once at start-up and closed at shutdown. Previews of
    any import are made beside its copies by a lane on its loop, or by a child process (`process`)."""
    async with contextlib.AsyncExitStack() as stack:
        pool = await create_db_pool(settings)
        stack.push_async_callback(pool.close)
        redis = await create_arq_pool(settings, patient=True)
        stack.push_async_callback(redis.aclose)
        storage = await stack.enter_async_context(open_storage(settings))
        session = await stack.enter_async_context(http_session(settings))
        deps = make_deps(settings, pool, redis, storage, session)
        stack.callback(deps.close)
        if heartbeat:
            await stack.enter_async_context(beating(deps.heartbeat))
        if previews == "process":
            await stack.enter_async_context(preview_process.running())
        else:
            await stack.enter_async_context(preview_lane.running(deps))
        yield deps


async def startup(ctx: dict[str, Any]) -> None:
    from fotoowl.logs import setup_logging

    settings = AppSettings.from_env()
    setup_logging(settings)
    stack = contextlib.AsyncExitStack()
    ctx["fotoowl_stack"] = stack
    grace = ExitGrace(asyncio.get_running_loop(), lambda: shutdown(ctx))
    grace.arm()
    ctx["fotoowl_exit_grace"] = grace
    previews: Literal["lane", "process"] = "process" if settings.preview_process else "lane"
    ctx[DEPS] = await stack.enter_async_context(open_deps(settings, previews=previews))
    # The webhook courier's HTTP sessions live as long as the worker (jobs.deliver_webhooks runs it).
    courier: webhooks.Courier = ctx.setdefault(COURIER, webhooks.Courier())
    stack.push_async_callback(courier.close)
    if settings.worker_http_port:
        try:
            await stack.enter_async_context(
                serving(
                    settings.host,
                    settings.worker_http_port,
                    lambda: polling_problem(ctx.get(WORKER)),
                    tries=WORKER_HTTP_PORTS,
                )
            )
        except OSError as exc:
            # Another worker on this host has the port: this one works on, unscraped, and says so.
            log.error(
                "worker metrics not served: ports %d-%d are taken: %s",
                settings.worker_http_port,
                settings.worker_http_port + WORKER_HTTP_PORTS - 1,
                exc,
            )
    log.info("worker started", extra={"files_in_flight": settings.files_in_flight})


async def shutdown(ctx: dict[str, Any]) -> None:
    grace: ExitGrace | None = ctx.pop("fotoowl_exit_grace", None)
    if grace is not None:
        grace.disarm()
    stack: contextlib.AsyncExitStack | None = ctx.pop("fotoowl_stack", None)
    if stack is not None:
        await stack.aclose()


FUNCTIONS = [list_import, transfer_import, check_watch, delete_import]
CRON_JOBS = [
    cron(sweep, second=set(range(0, 60, SWEEP_EVERY_S)), unique=True, run_at_startup=True, timeout=120),
    # Every second: a watch's interval may be as short as FOTOOWL_WATCH_MIN_INTERVAL_S.
    cron(queue_watch_checks, second=set(range(60)), unique=True, timeout=30),
    # Every second; a run stops taking new batches after RUN_BUDGET_S (pipeline/webhooks.py).
    cron(deliver_webhooks, second=set(range(60)), unique=True, run_at_startup=True, timeout=60),
]


_ENV = AppSettings.from_env()


class Settings:
    """arq's CLI reads only this class's own attributes: everything is defined here, not inherited."""

    functions = FUNCTIONS
    cron_jobs = CRON_JOBS
    on_startup = startup
    on_shutdown = shutdown
    redis_settings = arq_redis_settings(_ENV, patient=True)
    queue_name = QUEUE_NAME
    job_serializer = json_serializer
    job_deserializer = json_deserializer
    max_jobs = 6
    job_timeout = _ENV.job_timeout_s
    keep_result = 3600
    max_tries = 10
    health_check_interval = 30
    allow_abort_jobs = True
    handle_signals = True


class ResilientWorker(Worker):
    """arq's worker, except that an error talking to Redis never ends it: the poll loop backs off
    and polls again, and jobs already running go on meanwhile (copies need no Redis).

    `polled_at_s` tells a readiness check whether the loop is alive."""

    polled_at_s: float = 0.0
    _poll_failures: int = 0

    async def _poll_iteration(self) -> None:
        try:
            await super()._poll_iteration()
        except Exception as exc:
            # Whatever it was (a lost connection often surfaces as a WatchError mid-pipeline), the
            # worker polls again after a pause rather than ending.
            self._poll_failures += 1
            delay_s = min(LONGEST_WAIT_S, 0.25 * 2 ** min(self._poll_failures, 10))
            if is_redis_outage(exc) or isinstance(exc, redis.exceptions.WatchError):
                log.warning(
                    "lost Redis while polling for jobs (%s); polling again in %.1f s", type(exc).__name__, delay_s
                )
            else:
                log.exception("polling for jobs failed; polling again in %.1f s", delay_s)
            await asyncio.sleep(delay_s)
            return
        self._poll_failures = 0
        self.polled_at_s = time.monotonic()

    async def close(self) -> None:
        """arq's close, except that a Redis outage cannot hold a shutdown up: the Redis calls are
        bounded, and our own resources are closed whatever Redis does."""
        if not self._handle_signals:
            self.handle_sig(signal.SIGUSR1)
        if not self._pool:
            return
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        with contextlib.suppress(Exception):
            await within(self.pool.delete(self.health_check_key), SHUTDOWN_REDIS_TIMEOUT_S)
        if self.on_shutdown:
            await self.on_shutdown(self.ctx)
        with contextlib.suppress(Exception):
            await within(self.pool.aclose(), SHUTDOWN_REDIS_TIMEOUT_S)
        self._pool = None


def polling_problem(worker: object) -> str | None:
    """None while `worker` polls for jobs; otherwise what is wrong."""
    if not isinstance(worker, ResilientWorker):
        return "the worker has not started"
    silent_s = time.monotonic() - worker.polled_at_s
    if silent_s > POLL_SILENCE_LIMIT_S:
        return f"the worker has not polled for jobs for {silent_s:.0f} s (Redis unreachable?)"
    return None


def run_worker_forever() -> None:
    """`fotoowl worker`: the worker of `arq fotoowl.worker.Settings`, restarted with backoff if Redis is
    unreachable at start or the worker ever stops on a Redis error; SIGTERM/SIGINT end it."""
    asyncio.run(_run_worker_forever())


async def _run_worker_forever() -> None:
    delay_s = 0.5
    while True:
        worker = ResilientWorker(**get_kwargs(Settings))  # type: ignore[arg-type]
        worker.polled_at_s = time.monotonic()
        worker.ctx[WORKER] = worker
        stopping = False

        def on_stop(_signal: signal.Signals) -> None:
            nonlocal stopping
            stopping = True

        worker.on_stop = on_stop
        try:
            await worker.async_run()
            return
        except asyncio.CancelledError:
            if stopping:
                return
            raise
        except Exception as exc:
            if not is_redis_outage(exc):
                raise
            log.warning("the worker lost Redis (%s); starting it again in %.1f s", type(exc).__name__, delay_s)
        finally:
            with contextlib.suppress(Exception):
                await within(worker.close(), 60)
        await asyncio.sleep(delay_s)
        delay_s = min(LONGEST_WAIT_S, delay_s * 2)


def embedded_worker(
    deps: Deps, settings: AppSettings, redis: ArqRedis, courier: webhooks.Courier | None = None
) -> Worker:
    """The same worker as the CLI's, built to run inside an event loop we own (which closes `courier`)."""
    return ResilientWorker(
        functions=FUNCTIONS,
        cron_jobs=CRON_JOBS,
        redis_pool=redis,
        queue_name=QUEUE_NAME,
        job_serializer=json_serializer,
        job_deserializer=json_deserializer,
        ctx={DEPS: deps, COURIER: courier or webhooks.Courier()},
        max_jobs=Settings.max_jobs,
        job_timeout=settings.job_timeout_s,
        keep_result=Settings.keep_result,
        max_tries=Settings.max_tries,
        health_check_interval=Settings.health_check_interval,
        allow_abort_jobs=True,
        handle_signals=False,
    )


class EmbeddedWorker:
    """The worker pool of `fotoowl serve`: a thread running its own event loop and connections.

    Its own loop keeps the web app's loop free for requests however busy the copies get; the
    hashing, TLS and image work it does releases the GIL most of the time.
    """

    def __init__(self, settings: AppSettings, *, start_timeout_s: float = 60.0) -> None:
        self.settings = settings
        self.start_timeout_s = start_timeout_s
        self._thread = threading.Thread(target=self._run, name="fotoowl-worker", daemon=True)
        self._started = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._worker: Worker | None = None
        self._error: BaseException | None = None

    def start(self) -> None:
        """Start the thread and wait until the worker is polling for jobs (or failed to start)."""
        self._thread.start()
        if not self._started.wait(self.start_timeout_s):
            raise RuntimeError(f"the embedded worker did not start in {self.start_timeout_s} s")
        if self._error is not None:
            raise RuntimeError(f"the embedded worker failed to start: {self._error}") from self._error

    def problem(self) -> str | None:
        """None while the pool is alive and polling for jobs; otherwise what is wrong, for /readyz."""
        if not self._thread.is_alive():
            return "the embedded worker has stopped"
        return polling_problem(self._worker)

    def stop(self, timeout_s: float = 60.0) -> None:
        loop, worker = self._loop, self._worker
        if loop is not None and worker is not None and not loop.is_closed():
            # handle_sig cancels the running jobs (they hand their items back) and the poll loop.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(worker.handle_sig, signal.SIGTERM)
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            log.error("the embedded worker did not stop in %s s", timeout_s)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported through start(); the thread must not die silently
            if not self._started.is_set():
                self._error = exc
                self._started.set()
            else:
                log.exception("the embedded worker stopped with an error")

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        async with open_deps(self.settings) as deps:
            # Its own Redis pool: the worker's shutdown closes the pool it polls with.
            redis = await create_arq_pool(self.settings, patient=True)
            courier = webhooks.Courier()
            worker = embedded_worker(deps, self.settings, redis, courier)
            if isinstance(worker, ResilientWorker):
                worker.polled_at_s = time.monotonic()
            self._worker = worker
            self._started.set()
            try:
                await worker.async_run()
            except asyncio.CancelledError:
                pass
            finally:
                # Worker.close() would close the pool through redis-py's deprecated close().
                await asyncio.gather(*worker.tasks.values(), return_exceptions=True)
                await courier.close()
                with contextlib.suppress(Exception):
                    await within(redis.delete(worker.health_check_key), SHUTDOWN_REDIS_TIMEOUT_S)
                await redis.aclose()
