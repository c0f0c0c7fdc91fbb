"""`create_app(settings)`: the aiohttp application and the resources it owns.

Each resource is a cleanup_ctx generator stored under a typed AppKey, so a test can build the app
with its own settings and everything is closed in reverse order on shutdown.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from fotoowl import worker as worker_mod
from fotoowl.config import AppSettings
from fotoowl.db import create_pool, migrate
from fotoowl.storage_backends import open_storage
from fotoowl.web import (
    api,
    api_sync,
    api_webhooks,
    error_pages,
    events,
    openapi,
    ops,
    security,
    templating,
    views,
    views_sync,
)
from fotoowl.web.keys import ARQ, DB, SETTINGS, STORAGE, TEMPLATES, WORKER

log = logging.getLogger("fotoowl.web")


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


def create_app(settings: AppSettings, *, run_worker: bool | None = None) -> web.Application:
    # Errors outermost, so a refused cross-site write gets the usual error shape too.
    app = web.Application(
        middlewares=[error_pages.error_middleware, security.cross_site_middleware], client_max_size=64 * 1024
    )
    app[SETTINGS] = settings
    app[TEMPLATES] = templating.make_templates()
    app.cleanup_ctx.extend([_db_ctx, _arq_ctx, _storage_ctx])
    security.setup(app)
    if settings.embedded_workers if run_worker is None else run_worker:
        app.cleanup_ctx.append(_worker_ctx)
    api.setup_routes(app)
    api_sync.setup_routes(app)
    events.setup_routes(app)
    api_webhooks.setup_routes(app)
    ops.setup_routes(app)
    openapi.setup_routes(app)
    views.setup_routes(app)
    views_sync.setup_routes(app)
    return app
