"""arq workers: `arq fotoowl.worker.Settings` in their own processes, or embedded in the web app.

Job payloads are import ids, serialised as JSON. Every job is idempotent: arq delivers at least once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import signal
import threading
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
from arq import ArqRedis, Retry, Worker, create_pool, cron
from arq.connections import RedisSettings

from fotoowl import importer
from fotoowl.config import Settings as AppSettings
from fotoowl.db import create_pool as create_db_pool
from fotoowl.drive import DriveClient, DriveError
from fotoowl.pacer import RedisPacer
from fotoowl.storage import Storage, open_storage

log = logging.getLogger("fotoowl.worker")

QUEUE_NAME = "fotoowl:queue"
SWEEP_EVERY_S = 5
# Ctx is arq's dict; this is the one key we put in it, holding a typed object.
DEPS = "fotoowl"


def json_serializer(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def json_deserializer(data: bytes) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(data)
    return result


def arq_redis_settings(settings: AppSettings) -> RedisSettings:
    if not settings.redis_url:
        return RedisSettings()
    return RedisSettings.from_dsn(settings.redis_url)


async def create_arq_pool(settings: AppSettings) -> ArqRedis:
    return await create_pool(arq_redis_settings(settings), job_serializer=json_serializer,
                             job_deserializer=json_deserializer, default_queue_name=QUEUE_NAME)


def http_session(settings: AppSettings) -> aiohttp.ClientSession:
    # Sized to the files in flight plus listing and metadata calls.
    connector = aiohttp.TCPConnector(limit=settings.files_in_flight * 2 + 8, ttl_dns_cache=300)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None,
                                                                                     sock_connect=30))


def drive_client(settings: AppSettings, session: aiohttp.ClientSession, redis: ArqRedis) -> DriveClient:
    key = settings.google_api_key.get()
    # One bucket per API key, shared by every worker process on every machine.
    bucket = "fotoowl:pacer:" + hashlib.sha256(key.encode()).hexdigest()[:16]
    pacer = RedisPacer(redis, bucket, settings.drive_rate_per_s, settings.drive_burst)
    return DriveClient(session, api_url=settings.drive_api_url, api_key=key or None, pacer=pacer,
                       read_timeout_s=settings.drive_read_timeout_s)


def make_deps(settings: AppSettings, pool: asyncpg.Pool, redis: ArqRedis, storage: Storage,
              session: aiohttp.ClientSession) -> importer.Deps:
    return importer.Deps(settings=settings, pool=pool, redis=redis, storage=storage,
                         drive=drive_client(settings, session, redis))


@contextlib.asynccontextmanager
async def open_deps(settings: AppSettings) -> AsyncIterator[importer.Deps]:
    """Everything a worker process owns, opened once at start-up and closed at shutdown."""
    async with contextlib.AsyncExitStack() as stack:
        pool = await create_db_pool(settings)
        stack.push_async_callback(pool.close)
        redis = await create_arq_pool(settings)
        stack.push_async_callback(redis.aclose)
        storage = await stack.enter_async_context(open_storage(settings))
        session = await stack.enter_async_context(http_session(settings))
        deps = make_deps(settings, pool, redis, storage, session)
        stack.callback(deps.close)
        yield deps


def _deps(ctx: dict[str, Any]) -> importer.Deps:
    deps: importer.Deps = ctx[DEPS]
    return deps


def _retry_delay_s(ctx: dict[str, Any]) -> float:
    tries: int = ctx.get("job_try", 1)
    return float(min(300, 5 * 2 ** (tries - 1)))


async def list_import(ctx: dict[str, Any], import_id: int) -> None:
    deps = _deps(ctx)
    try:
        await importer.list_import(deps, import_id)
    except DriveError as exc:
        if exc.transient and ctx.get("job_try", 1) < 8:
            log.warning("listing hit a transient Drive error; retrying: %s", exc,
                        extra={"import_id": import_id})
            raise Retry(defer=_retry_delay_s(ctx)) from exc
        await importer.fail_import(deps.pool, import_id, exc.reason or "drive_error", str(exc))


async def transfer_import(ctx: dict[str, Any], import_id: int) -> int:
    return await importer.transfer_import(_deps(ctx), import_id)


async def sweep(ctx: dict[str, Any]) -> None:
    await importer.sweep(_deps(ctx))


async def startup(ctx: dict[str, Any]) -> None:
    from fotoowl.logs import setup_logging

    settings = AppSettings.from_env()
    setup_logging(settings)
    stack = contextlib.AsyncExitStack()
    ctx["fotoowl_stack"] = stack
    ctx[DEPS] = await stack.enter_async_context(open_deps(settings))
    log.info("worker started", extra={"files_in_flight": settings.files_in_flight})


async def shutdown(ctx: dict[str, Any]) -> None:
    stack: contextlib.AsyncExitStack | None = ctx.get("fotoowl_stack")
    if stack is not None:
        await stack.aclose()


FUNCTIONS = [list_import, transfer_import]
CRON_JOBS = [cron(sweep, second=set(range(0, 60, SWEEP_EVERY_S)), unique=True, run_at_startup=True,
                  timeout=120)]


_ENV = AppSettings.from_env()


class Settings:
    """arq's CLI reads only this class's own attributes: everything is defined here, not inherited."""

    functions = FUNCTIONS
    cron_jobs = CRON_JOBS
    on_startup = startup
    on_shutdown = shutdown
    redis_settings = arq_redis_settings(_ENV)
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


def embedded_worker(deps: importer.Deps, settings: AppSettings, redis: ArqRedis) -> Worker:
    """The same worker as the CLI's, built to run inside an event loop we own."""
    return Worker(
        functions=FUNCTIONS,
        cron_jobs=CRON_JOBS,
        redis_pool=redis,
        queue_name=QUEUE_NAME,
        job_serializer=json_serializer,
        job_deserializer=json_deserializer,
        ctx={DEPS: deps},
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
            redis = await create_arq_pool(self.settings)
            worker = embedded_worker(deps, self.settings, redis)
            self._worker = worker
            self._started.set()
            try:
                await worker.async_run()
            except asyncio.CancelledError:
                pass
            finally:
                # Worker.close() would close the pool through redis-py's deprecated close().
                await asyncio.gather(*worker.tasks.values(), return_exceptions=True)
                await redis.delete(worker.health_check_key)
                await redis.aclose()
