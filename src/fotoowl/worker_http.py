"""A worker process's own small HTTP face: `/metrics` for Prometheus and `/healthz` for liveness.

Counters of files and bytes are counted where the copies happen, in the worker processes, so each
worker must be scraped itself (`FOTOOWL_WORKER_HTTP_PORT`, 9100 by default, 0 for none).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

log = logging.getLogger("fotoowl.worker")

# None when the worker is healthy; otherwise what is wrong.
Problem = Callable[[], str | None]
PROBLEM: web.AppKey[Problem] = web.AppKey("problem")


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def healthz(request: web.Request) -> web.Response:
    problem = request.app[PROBLEM]()
    if problem is None:
        return web.json_response({"status": "ok"})
    return web.json_response({"error": {"code": "unhealthy", "message": problem}}, status=503)


def create_worker_app(problem: Problem) -> web.Application:
    app = web.Application()
    app[PROBLEM] = problem
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    return app


@asynccontextmanager
async def serving(host: str, port: int, problem: Problem, *, tries: int = 1) -> AsyncIterator[int]:
    """Serve on `host:port` (0: a free port) until the block ends; yields the port. With `tries`, the
    next ports are tried when it is taken (several workers on one host each get their own)."""
    runner = web.AppRunner(create_worker_app(problem), access_log=None)
    await runner.setup()
    try:
        for attempt in range(tries):
            site = web.TCPSite(runner, host, port + attempt if port else 0)
            try:
                await site.start()
                break
            except OSError:
                if attempt == tries - 1:
                    raise
        server = site._server
        sockets = server.sockets if isinstance(server, asyncio.Server) else ()
        bound = int(sockets[0].getsockname()[1]) if sockets else port
        log.info("worker metrics and health on http://%s:%d/", host, bound)
        yield bound
    finally:
        await runner.cleanup()
