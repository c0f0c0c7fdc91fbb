"""Health, readiness and Prometheus metrics."""

from __future__ import annotations

import logging

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from fotoowl.metrics import IMPORTS, QUEUE_DEPTH
from fotoowl.models import Checks, ErrorDetail, Health, NotReady, Ready
from fotoowl.timeouts import within
from fotoowl.web.keys import ARQ, DB, STORAGE, WORKER

log = logging.getLogger("fotoowl.web")

CHECK_TIMEOUT_S = 3.0


async def healthz(request: web.Request) -> web.Response:
    return web.json_response(Health(status="ok").body())


async def readyz(request: web.Request) -> web.Response:
    async def database() -> None:
        await request.app[DB].fetchval("SELECT 1")

    async def redis() -> None:
        await request.app[ARQ].ping()

    async def storage() -> None:
        await request.app[STORAGE].ping()

    checks = {"database": database, "redis": redis, "storage": storage}
    results: dict[str, str] = {}
    for name, check in checks.items():
        try:
            await within(check(), CHECK_TIMEOUT_S)
            results[name] = "ok"
        except Exception as exc:  # any failure means "not ready"; the reason is reported
            results[name] = f"unavailable: {type(exc).__name__}"
            log.warning("readiness check failed: %s", name, extra={"check": name, "error": str(exc)[:200]})
    if WORKER in request.app:
        # A process whose embedded workers are stuck serves pages but moves no file: not ready.
        problem = request.app[WORKER].problem()
        results["workers"] = "ok" if problem is None else f"unavailable: {problem}"
    failed = [name for name, result in results.items() if result != "ok"]
    report = Checks.model_validate(results)
    if failed:
        detail = ErrorDetail(code="not_ready", message=f"unavailable: {', '.join(failed)}")
        return web.json_response(NotReady(error=detail, checks=report).body(), status=503)
    return web.json_response(Ready(status="ready", checks=report).body())


async def metrics(request: web.Request) -> web.Response:
    from fotoowl.worker import QUEUE_NAME

    # Gauges that describe shared state are sampled at scrape time.
    try:
        QUEUE_DEPTH.set(await request.app[ARQ].zcard(QUEUE_NAME))
        rows = await request.app[DB].fetch("SELECT status, count(*) AS n FROM imports GROUP BY status")
        IMPORTS.clear()
        for row in rows:
            IMPORTS.labels(row["status"]).set(row["n"])
    except Exception as exc:
        log.warning("metrics sampling failed: %s", type(exc).__name__)
    body = generate_latest()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz, name="healthz")
    app.router.add_get("/readyz", readyz, name="readyz")
    app.router.add_get("/metrics", metrics, name="metrics")
