"""`create_app(settings)`: the aiohttp application and the resources it owns.

Each resource is a cleanup_ctx generator stored under a typed AppKey, so a test can build the app
with its own settings and everything is closed in reverse order on shutdown.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import jinja2
from aiohttp import web
from arq import ArqRedis

from fotoowl import worker as worker_mod
from fotoowl.config import Settings
from fotoowl.db import create_pool, migrate
from fotoowl.storage import Storage, open_storage

log = logging.getLogger("fotoowl.web")

SETTINGS = web.AppKey("settings", Settings)
DB = web.AppKey("db", asyncpg.Pool)
ARQ = web.AppKey("arq", ArqRedis)
STORAGE = web.AppKey("storage", Storage)
WORKER = web.AppKey("worker", worker_mod.EmbeddedWorker)
TEMPLATES = web.AppKey("templates", jinja2.Environment)
DEMO_FOLDER_URL = web.AppKey("demo_folder_url", str)

ROOT = Path(__file__).resolve().parents[3]


def templates_dir() -> Path:
    for candidate in (ROOT / "templates", Path(__file__).resolve().parent / "templates"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("the templates/ folder is missing")


def static_dir() -> Path:
    return ROOT / "static"


async def _db_ctx(app: web.Application) -> AsyncIterator[None]:
    pool = await create_pool(app[SETTINGS])
    async with pool.acquire() as conn:
        await migrate(conn)
    app[DB] = pool
    yield
    await pool.close()


async def _arq_ctx(app: web.Application) -> AsyncIterator[None]:
    redis = await worker_mod.create_arq_pool(app[SETTINGS])
    app[ARQ] = redis
    yield
    await redis.aclose()


async def _storage_ctx(app: web.Application) -> AsyncIterator[None]:
    async with open_storage(app[SETTINGS]) as storage:
        app[STORAGE] = storage
        yield


async def _worker_ctx(app: web.Application) -> AsyncIterator[None]:
    """The embedded worker pool: the same jobs as `arq fotoowl.worker.Settings`, on a thread with
    its own event loop and connections, so copying files never delays an API answer."""
    pool = worker_mod.EmbeddedWorker(app[SETTINGS])
    await asyncio.to_thread(pool.start)
    app[WORKER] = pool
    log.info("embedded worker started")
    yield
    # Cancelled transfer jobs hand their items back (leases released) before the thread ends.
    await asyncio.to_thread(pool.stop)


def create_app(settings: Settings, *, run_worker: bool | None = None) -> web.Application:
    from fotoowl.web import api, errors, openapi, ops, security, templating, views

    # Errors outermost, so a refused cross-site write gets the usual error shape too.
    app = web.Application(middlewares=[errors.error_middleware, security.cross_site_middleware],
                          client_max_size=64 * 1024)
    app[SETTINGS] = settings
    app[TEMPLATES] = templating.make_templates()
    app.cleanup_ctx.extend([_db_ctx, _arq_ctx, _storage_ctx])
    security.setup(app)
    if settings.embedded_workers if run_worker is None else run_worker:
        app.cleanup_ctx.append(_worker_ctx)
    api.setup_routes(app)
    ops.setup_routes(app)
    openapi.setup_routes(app)
    views.setup_routes(app)
    return app
