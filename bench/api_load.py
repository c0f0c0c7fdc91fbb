"""API latency with the server idle and while an import runs in the same process (embedded workers)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import asyncpg

from bench.contenders import ARQ, check_import, wait_finished, wait_previews
from bench.manifest import Manifest
from bench.procs import PYTHON, Children, sample_peaks, wait_for_log
from bench.results import ApiLoad, Latency, Row
from bench.stack import Stack
from fotoowl.embedded import free_port

FOTOOWL = str(Path(PYTHON).parent / "fotoowl")


@dataclass(frozen=True)
class LoopBounds:
    max_requests: int  # per endpoint
    max_seconds: float
    think_s: float = 0.01  # one polling client, pausing briefly between requests


async def _timed_get(session: aiohttp.ClientSession, url: str) -> tuple[float, int, dict[str, object] | None]:
    started = time.perf_counter()
    async with session.get(url) as response:
        body = await response.json() if response.status == 200 else None
    return (time.perf_counter() - started) * 1000, response.status, body


async def _loop(
    session: aiohttp.ClientSession, base: str, import_id: int, phase: str, bounds: LoopBounds, until_finished: bool
) -> list[Latency]:
    images = Latency("GET /images?limit=100", phase, [])
    status = Latency("GET /imports/{id}", phase, [])
    deadline = time.monotonic() + bounds.max_seconds
    while len(images.samples_ms) < bounds.max_requests and time.monotonic() < deadline:
        for latency, url in ((images, f"{base}/images?limit=100"), (status, f"{base}/imports/{import_id}")):
            ms, code, body = await _timed_get(session, url)
            if code == 200:
                latency.samples_ms.append(ms)
            else:
                latency.errors += 1
            if until_finished and body is not None and body.get("finished_at"):
                return [images, status]
            await asyncio.sleep(bounds.think_s)
    return [images, status]


async def run_api_load(
    children: Children,
    stack: Stack,
    manifest: Manifest,
    *,
    during: LoopBounds,
    idle: LoopBounds,
    timeout_s: float,
    separate_workers: int = 0,
    overrides: dict[str, str] | None = None,
) -> ApiLoad:
    """`fotoowl serve` with embedded workers (or with `separate_workers` arq processes doing the import);
    latencies while it imports the folder, then idle (same data)."""
    database_url = await stack.fresh_database("api")
    redis_url = await stack.fresh_redis()
    port = free_port()
    env = stack.fotoowl_env(
        database_url=database_url,
        redis_url=redis_url,
        prefix="api/",
        source_env=manifest.source_env(),
        overrides={
            **(overrides or {}),
            "FOTOOWL_PORT": str(port),
            "FOTOOWL_EMBEDDED_WORKERS": "false" if separate_workers else "true",
        },
    )
    server = await children.spawn("api-serve", [FOTOOWL, "serve", "--port", str(port)], env)
    workers = [
        await children.spawn(f"api-worker-{n + 1}", [ARQ, "fotoowl.worker.Settings"], env)
        for n in range(separate_workers)
    ]
    base = f"http://127.0.0.1:{port}"
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample_peaks([server], stop))
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
            await _wait_healthy(session, base, server)
            for worker in workers:
                await wait_for_log(worker, "worker started", 120)
            async with session.post(
                f"{base}/import/google-drive", json={"folder_url": manifest.folder_link}
            ) as response:
                response.raise_for_status()
                import_id = int((await response.json())["import_id"])
            latencies = await _loop(session, base, import_id, "during import", during, until_finished=True)
            row = await wait_finished(pool, import_id, timeout_s, [server, *workers])
            # Idle means idle: the previews, which follow the import, are all made first.
            await wait_previews(pool, import_id, timeout_s, [server, *workers])
            latencies += await _loop(session, base, import_id, "idle", idle, until_finished=False)
        problem = await check_import(pool, row, manifest)
        seconds = (row["finished_at"] - row["created_at"]).total_seconds()
    finally:
        stop.set()
        await sampler
        await pool.close()
        for worker in workers:
            await children.stop(worker)
        await children.stop(server)
    where = f"{separate_workers} separate worker process(es)" if separate_workers else "embedded workers"
    import_row = Row(
        f"fotoowl serve, {where} (API load run)",
        len(manifest.files),
        manifest.total_bytes,
        seconds,
        ok=not problem,
        peak_rss_kib=[server.peak_rss_kib],
        note=problem,
        kind="fotoowl",
    )
    return ApiLoad(latencies, import_row, note=where)


async def _wait_healthy(session: aiohttp.ClientSession, base: str, server: object, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            async with session.get(f"{base}/healthz") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.2)
    raise TimeoutError(f"fotoowl serve did not become healthy: {server}")
