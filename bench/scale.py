"""`python -m bench --scale` (`make bench-scale`): a gallery of a million images, measured in one run.

1. PostgreSQL: the machine's at 127.0.0.1:5432 when it answers (it has pg_trgm), in a database of
   the run's own, with a collation that is not C (as docker-compose's postgres:16's is not; see
   create_database), dropped at the end; else the embedded one, which has no
   pg_trgm (searching by name then walks). Valkey and SeaweedFS embedded, in a temp dir.
2. 1,000,000 image rows across 500 imports, COPYed (bench/scale_seed.py), then VACUUM ANALYZE.
3. `fotoowl serve --no-worker` on that database; one client times every case of bench/scale_cases.py
   over HTTP, one request at a time, in rounds: idle, then while one `arq` worker process imports
   10,000 photos (~2 GB) from the Drive emulator (50 ms added to every request).
4. A 100,000-file import end to end into the same database, by a fresh worker process: its listing
   time against (listing requests x emulator latency), its total time, the worker's peak RSS.

Figures go to bench/out/<date>/scale.json and to the Scale section of bench/RESULTS.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shlex
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from bench import scale_report, scale_seed
from bench.contenders import ARQ, WORKER_SETTINGS, EmulatorSpec, launch_emulator, wait_finished
from bench.emulator_proc import API_KEY
from bench.manifest import Manifest
from bench.procs import PYTHON, Child, Children, sample_peaks, wait_for_log
from bench.scale_cases import image_cases, page_cases
from bench.scale_load import CaseLatency, drive_list_requests, measure
from bench.stack import Stack
from fotoowl import embedded
from fotoowl.db import migrate_url
from fotoowl.embedded import free_port

HERE = Path(__file__).resolve().parent
FOTOOWL = str(Path(PYTHON).parent / "fotoowl")
MACHINE_PG = "postgresql://postgres@127.0.0.1:5432/postgres"
# The 100,000-file import: the pacer raised as in the main benchmark's memory step, so 200,000
# requests take minutes, not 17 of them at 200 a second; listing pages are paced by latency alone.
FAST_PACER = {"FOTOOWL_DRIVE_RATE_PER_S": "100000", "FOTOOWL_DRIVE_BURST": "1000"}


@dataclass(frozen=True)
class ScalePlan:
    images: int = 1_000_000
    imports: int = 500
    during_files: int = 10_000
    big_files: int = 100_000
    latency_s: float = 0.05
    rounds: int = 200
    seed: int = 1


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


async def machine_postgres() -> str | None:
    with contextlib.suppress(OSError, asyncpg.PostgresError, TimeoutError):
        conn = await asyncpg.connect(MACHINE_PG, timeout=3)
        await conn.close()
        return MACHINE_PG
    return None


async def create_database(admin_url: str, name: str) -> tuple[str, str]:
    """(URL, collation) of a new database, whose collation is not C where the server allows: to
    PostgreSQL only "C" and "POSIX" are C, under which a plain text index serves LIKE 'x%' (a libc
    "C.UTF-8" or "en_US.utf8", docker-compose's postgres:16 default, is not). The server's default
    when it is not C; else ICU en-US, whose lower() (ILIKE, the name key) costs about twice libc's."""
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        default = str(await conn.fetchval("SELECT datcollate FROM pg_database WHERE datname = 'template1'"))
        icu = await conn.fetchval(
            "SELECT current_setting('server_version_num')::int >= 150000 "
            "AND EXISTS (SELECT 1 FROM pg_collation WHERE collname = 'en-US-x-icu')"
        )
        if default in ("C", "POSIX") and icu:
            locale = "LOCALE_PROVIDER icu ICU_LOCALE 'en-US'"
            await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0 {locale}')
            collation = "ICU en-US"
        else:
            await conn.execute(f'CREATE DATABASE "{name}"')
            collation = f"{default} (libc; {'C' if default in ('C', 'POSIX') else 'not C'} to PostgreSQL)"
    finally:
        await conn.close()
    return admin_url.rsplit("/", 1)[0] + "/" + name, collation


async def drop_database(admin_url: str, name: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def wait_healthy(session: aiohttp.ClientSession, base: str, child: Child, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if child.proc.returncode is not None:
            raise RuntimeError(f"{child.name} exited:\n{child.tail()}")
        with contextlib.suppress(aiohttp.ClientError):
            async with session.get(f"{base}/healthz") as response:
                if response.status == 200:
                    return
        await asyncio.sleep(0.3)
    raise TimeoutError(f"{child.name} did not become healthy:\n{child.tail()}")


async def wait_quiet(max_load: float = 1.0, timeout_s: float = 1200) -> float:
    """Wait (up to `timeout_s`) for the machine's 1-minute load average to fall to `max_load`: on two
    shared cores, other processes' work would be timed as fotoowl's. Returns the load at the start."""
    deadline = time.monotonic() + timeout_s
    while (load := os.getloadavg()[0]) > max_load and time.monotonic() < deadline:
        say(f"  waiting for a quiet machine (load average {load:.1f}) ...")
        await asyncio.sleep(30)
    return load


async def check_images(pool: asyncpg.Pool, row: asyncpg.Record, manifest: Manifest) -> str:
    """'' when the import completed with an image row of the right size and MD5 for every file, else what
    is wrong. (Files with the same bytes are deduplicated, so imported_count alone can be lower.)"""
    stored = {
        r["source_id"]: (r["size"], r["md5"])
        for r in await pool.fetch("SELECT source_id, size, md5 FROM images WHERE import_id = $1", row["id"])
    }
    wrong = sum(1 for f in manifest.files if stored.get(f.id) != (f.size, f.md5))
    problems = [f"status {row['status']}"] if row["status"] != "completed" else []
    problems += [f"{wrong} of {len(manifest.files)} files without their image"] if wrong else []
    return "; ".join(problems)


def logged_pages(worker: Child) -> int | None:
    """The listing's page count, as the worker logged it ("listing finished ... pages=N")."""
    found = re.findall(r"listing finished .*?pages=(\d+)", worker.log_text())
    return int(found[-1]) if found else None


async def start_import(session: aiohttp.ClientSession, base: str, manifest: Manifest) -> int:
    async with session.post(f"{base}/imports", json={"folder_url": manifest.folder_link}) as response:
        if response.status != 202:
            raise RuntimeError(f"POST /imports answered {response.status}: {await response.text()}")
        return int((await response.json())["import_id"])


class ScaleRun:
    def __init__(self, plan: ScalePlan, stack: Stack, children: Children, database_url: str) -> None:
        self.plan, self.stack, self.children, self.database_url = plan, stack, children, database_url
        self.out: dict[str, Any] = {"plan": asdict(plan)}

    def env(self, source_env: dict[str, str], redis_url: str, extra: dict[str, str] | None = None) -> dict[str, str]:
        # No worker HTTP port: two workers of this run on one machine would both want 9100.
        overrides = {"FOTOOWL_WORKER_HTTP_PORT": "0", **(extra or {})}
        return self.stack.fotoowl_env(
            database_url=self.database_url,
            redis_url=redis_url,
            prefix="scale/",
            source_env=source_env,
            overrides=overrides,
        )

    async def seed(self) -> scale_seed.SeedFacts:
        plan = self.plan
        say(f"seeding {plan.images:,} images across {plan.imports} imports (COPY) ...")
        conn = await asyncpg.connect(self.database_url)
        try:
            started = time.monotonic()
            facts = await scale_seed.seed(conn, n_images=plan.images, n_imports=plan.imports, seed=plan.seed)
            seconds = time.monotonic() - started
            sizes = await conn.fetchrow(
                "SELECT pg_table_size('images') AS table_bytes, pg_indexes_size('images') AS index_bytes, "
                "to_regclass('image_search_name_trgm_idx') IS NOT NULL AS trigram, version() AS version"
            )
            assert sizes is not None
        finally:
            await conn.close()
        described = scale_seed.describe(scale_seed.plan_imports(plan.images, plan.imports, plan.seed))
        self.out["seed"] = {"seconds": seconds, "facts": asdict(facts), "described": described, **dict(sizes)}
        say(f"  seeded in {seconds:.0f} s: {described}; pg_trgm index: {sizes['trigram']}")
        return facts

    async def latencies(self, session: aiohttp.ClientSession, base: str, facts: scale_seed.SeedFacts) -> None:
        cases = image_cases(facts) + page_cases(facts)
        await measure(session, base, cases, "warm-up", rounds=1, max_s=600)
        self.out["idle_load_before"] = await wait_quiet()
        say(f"idle: {len(cases)} cases x {self.plan.rounds} rounds ...")
        idle, rounds = await measure(session, base, cases, "idle", rounds=self.plan.rounds, max_s=1800)
        # Other processes on the machine slow the "idle" pass too: the 1-minute load average says how much.
        self.out["idle_rounds"], self.out["idle_load"] = rounds, os.getloadavg()[0]
        self._print(idle)
        self.out["latencies"] = [r.to_json() for r in idle]

    async def during_import(
        self, session: aiohttp.ClientSession, base: str, facts: scale_seed.SeedFacts, redis_url: str
    ) -> None:
        plan = self.plan
        spec = EmulatorSpec("mixed", images=plan.during_files, seed=plan.seed, latency_s=plan.latency_s)
        emulator, manifest = await launch_emulator(self.children, "scale-emulator-during", spec)
        worker = await self.children.spawn(
            "scale-worker-during", [ARQ, WORKER_SETTINGS], self.env(manifest.source_env(), redis_url)
        )
        pool = await asyncpg.create_pool(self.database_url, min_size=1, max_size=2)
        try:
            await wait_for_log(worker, "worker started", 120)
            import_id = await start_import(session, base, manifest)
            finished = asyncio.Event()
            watcher = asyncio.create_task(self._watch(pool, import_id, finished))
            say(f"during a {plan.during_files:,}-image import (import {import_id}) ...")
            cases = image_cases(facts) + page_cases(facts)
            during, rounds = await measure(
                session, base, cases, "during import", rounds=10**9, max_s=3600, until=finished.is_set
            )
            await watcher
            row = await wait_finished(pool, import_id, 600, [worker])
            problem = await check_images(pool, row, manifest)
        finally:
            await pool.close()
            await self.children.stop(worker)
            await self.children.stop(emulator)
        seconds = (row["finished_at"] - row["created_at"]).total_seconds()
        self.out["during"] = {"import_id": import_id, "seconds": seconds, "rounds": rounds, "problem": problem}
        self.out["latencies"] += [r.to_json() for r in during]
        say(f"  the import took {seconds:.0f} s ({rounds} rounds){'; ' + problem if problem else ''}")
        self._print(during)

    @staticmethod
    async def _watch(pool: asyncpg.Pool, import_id: int, finished: asyncio.Event) -> None:
        while True:
            if await pool.fetchval("SELECT finished_at IS NOT NULL FROM imports WHERE id = $1", import_id):
                finished.set()
                return
            await asyncio.sleep(0.5)

    async def big_import(self, session: aiohttp.ClientSession, base: str, redis_url: str) -> None:
        plan = self.plan
        # Another seed than the first emulator's: the same seed would give the same file ids.
        spec = EmulatorSpec("tiny", images=plan.big_files, seed=plan.seed + 1, latency_s=plan.latency_s)
        say(f"a {plan.big_files:,}-file import end to end ...")
        emulator, manifest = await launch_emulator(self.children, "scale-emulator-big", spec)
        worker = await self.children.spawn(
            "scale-worker-big", [ARQ, WORKER_SETTINGS], self.env(manifest.source_env(), redis_url, FAST_PACER)
        )
        stop = asyncio.Event()
        sampler = asyncio.create_task(sample_peaks([worker], stop))
        pool = await asyncpg.create_pool(self.database_url, min_size=1, max_size=2)
        try:
            await wait_for_log(worker, "worker started", 120)
            import_id = await start_import(session, base, manifest)
            row = await wait_finished(pool, import_id, 3600, [worker])
            problem = await check_images(pool, row, manifest)
        finally:
            stop.set()
            await sampler
            await pool.close()
            await self.children.stop(worker)
            await self.children.stop(emulator)
        requests = drive_list_requests(manifest)
        self.out["big"] = {
            "import_id": import_id,
            "files": len(manifest.files),
            "bytes": manifest.total_bytes,
            "listing_s": (row["listed_at"] - row["started_at"]).total_seconds(),
            "list_requests": requests,
            "latency_s": manifest.latency_s,
            "total_s": (row["finished_at"] - row["created_at"]).total_seconds(),
            "peak_rss_mb": worker.peak_rss_kib / 1024,
            "preview_process_rss_mb": worker.peak_descendant_rss_kib / 1024,
            "problem": problem,
            "logged_pages": logged_pages(worker),
            "counts": {k: v for k, v in dict(row).items() if k.endswith("_count")},
        }
        big = self.out["big"]
        say(
            f"  listing {big['listing_s']:.1f} s for {requests} requests x {manifest.latency_s * 1000:.0f} ms; "
            f"total {big['total_s']:.0f} s; worker peak RSS {big['peak_rss_mb']:.0f} MB "
            f"(its preview process {big['preview_process_rss_mb']:.0f} MB)"
            f"{'; ' + problem if problem else ''}"
        )

    @staticmethod
    def _print(results: list[CaseLatency]) -> None:
        for r in results:
            say(f"  {r.case.label}: n={len(r.samples_ms)} p50={r.p50:.1f} ms p99={r.p99:.1f} ms errors={r.errors}")

    async def run(self, redis_url: str) -> None:
        facts = await self.seed()
        port = free_port()
        # The API key makes imports read Drive through the API (the emulators'), as with a real key.
        env = self.env({"FOTOOWL_GOOGLE_API_KEY": API_KEY}, redis_url, {"FOTOOWL_PORT": str(port)})
        server = await self.children.spawn("scale-serve", [FOTOOWL, "serve", "--no-worker", "--port", str(port)], env)
        base = f"http://127.0.0.1:{port}"
        stop = asyncio.Event()
        sampler = asyncio.create_task(sample_peaks([server], stop))
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
                await wait_healthy(session, base, server)
                await self.latencies(session, base, facts)
                await self.during_import(session, base, facts, redis_url)
                await self.big_import(session, base, redis_url)
        finally:
            stop.set()
            await sampler
            await self.children.stop(server)
        self.out["server_peak_rss_mb"] = server.peak_rss_kib / 1024


def main(plan: ScalePlan, argv: list[str], version: str, output: Path | None = None) -> None:
    """Run the scale benchmark; writes its raw figures and the Scale section of bench/RESULTS.md."""
    started, date = time.monotonic(), datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    log_dir = HERE / "out" / (datetime.now(UTC).strftime("%Y%m%d-%H%M%S") + "-scale")
    work_dir = Path(tempfile.mkdtemp(prefix="fotoowl-scale-"))
    admin_url = asyncio.run(machine_postgres())
    say(f"logs in {log_dir}; PostgreSQL: {'127.0.0.1:5432' if admin_url else 'embedded (no pg_trgm)'}")
    starters: list[Callable[[], embedded.Server]] = [
        lambda: embedded.start_valkey(work_dir / "valkey", durable=False),
        lambda: embedded.start_seaweedfs(
            work_dir / "s3", bucket="bench", access_key_id="bench", secret_access_key="bench-scale-secret"
        ),
    ]
    if admin_url is None:
        starters.insert(0, lambda: embedded.start_postgres(work_dir / "pg", durable=False, database="postgres"))
    name = f"fotoowl_scale_{int(time.time())}"
    try:
        with embedded.running(*starters) as servers:
            by_name = {server.name: server for server in servers}
            admin = admin_url or by_name["postgres"].extra["admin_url"]
            stack = Stack(
                postgres_admin_url=admin,
                redis_base_url=by_name["valkey"].url.rsplit("/", 1)[0],
                s3_endpoint_url=by_name["seaweedfs"].url,
                s3_secret="bench-scale-secret",
                server_pids={server.name: server.proc.pid for server in servers},
            )
            out = asyncio.run(_run(plan, stack, Children(log_dir), admin, name, machine=admin_url is not None))
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    command = "python -m bench " + shlex.join(argv)
    out.update(command=command, date=date, wall_s=time.monotonic() - started, version=version)
    log_dir.mkdir(parents=True, exist_ok=True)
    (log_dir / "scale.json").write_text(json.dumps(out, indent=1, default=str))
    section = scale_report.section(out)
    print("\n" + section, flush=True)
    target = output or HERE / "RESULTS.md"
    scale_report.write_section(target, section)
    say(f"written to {target} (Scale section); raw figures in {log_dir / 'scale.json'}")


async def _run(
    plan: ScalePlan, stack: Stack, children: Children, admin: str, name: str, *, machine: bool
) -> dict[str, Any]:
    database_url, collation = await create_database(admin, name)
    run: ScaleRun | None = None
    try:
        await migrate_url(database_url)
        redis_url = await stack.fresh_redis()
        run = ScaleRun(plan, stack, children, database_url)
        run.out["postgres"] = {"where": "machine (127.0.0.1:5432)" if machine else "embedded", "collation": collation}
        await run.run(redis_url)
        return run.out
    finally:
        await children.stop_all()
        await drop_database(admin, name)
