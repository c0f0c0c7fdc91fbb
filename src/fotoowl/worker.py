"""arq workers: `arq fotoowl.worker.Settings` in their own processes, or embedded in the web app.

Job payloads are import ids, serialised as JSON. Every job is idempotent: arq delivers at least once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
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
    """The same worker, run as a task inside the web app's event loop."""
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
