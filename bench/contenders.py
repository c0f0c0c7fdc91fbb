"""fotoowl itself (arq worker processes) and the transfer limit (bare copy, raw download).

Every contender copies the same manifest's files; rows report wall seconds for the whole folder.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiofiles
import aiohttp
import asyncpg

from bench.manifest import Manifest, ManifestFile
from bench.procs import PYTHON, Child, Children, sample_peaks, wait_for_log
from bench.results import Row
from bench.stack import Stack
from fotoowl import statuses
from fotoowl.config import AppSettings
from fotoowl.pipeline import control
from fotoowl.sources.google_drive.client import DriveClient
from fotoowl.sources.links import parse_link
from fotoowl.storage_backends import open_storage
from fotoowl.worker import create_arq_pool

ARQ = str(Path(PYTHON).parent / "arq")
WORKER_SETTINGS = "fotoowl.worker.Settings"  # the arq worker class
SOURCE_TITLES = {"google_drive": "Drive", "dropbox": "Dropbox"}
VERIFY_SAMPLE = 40  # stored objects read back after each fotoowl import
VERIFY_MAX_BYTES = 64 * 1024 * 1024


# --- the emulator process ------------------------------------------------------------------------


@dataclass(frozen=True)
class EmulatorSpec:
    profile: str  # "mixed", "tiny", "single" or "photos"
    images: int = 0
    size_bytes: int = 0
    seed: int = 1
    latency_s: float = 0.05
    bandwidth_bytes_per_s: float = 0.0
    source: str = "google_drive"  # or "dropbox": the same files, served as a shared Dropbox folder


async def launch_emulator(children: Children, name: str, spec: EmulatorSpec) -> tuple[Child, Manifest]:
    path = children.log_dir / f"{name}-manifest.json"
    path.unlink(missing_ok=True)
    child = await children.spawn(
        name,
        [
            PYTHON,
            "-m",
            "bench.emulator_proc",
            "--manifest",
            str(path),
            "--source",
            spec.source,
            "--profile",
            spec.profile,
            "--images",
            str(spec.images),
            "--size-bytes",
            str(spec.size_bytes),
            "--seed",
            str(spec.seed),
            "--latency-s",
            str(spec.latency_s),
            "--bandwidth-bytes-per-s",
            str(spec.bandwidth_bytes_per_s),
        ],
    )
    deadline = time.monotonic() + 900
    while not path.exists():
        if child.proc.returncode is not None:
            raise RuntimeError(f"the emulator exited with {child.proc.returncode}:\n{child.tail()}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"the emulator wrote no manifest:\n{child.tail()}")
        await asyncio.sleep(0.1)
    return child, Manifest.read(path)


# --- fotoowl ------------------------------------------------------------------------------------


async def wait_finished(
    pool: asyncpg.Pool, import_id: int, timeout_s: float, watch: Sequence[Child] = ()
) -> asyncpg.Record:
    deadline = time.monotonic() + timeout_s
    while True:
        row = await pool.fetchrow("SELECT * FROM imports WHERE id = $1", import_id)
        assert row is not None
        if row["status"] in statuses.FINISHED:
            return row
        for child in watch:
            if child.proc.returncode is not None:
                raise RuntimeError(f"{child.name} exited with {child.proc.returncode}:\n{child.tail()}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"import {import_id} still {row['status']} after {timeout_s} s: {dict(row)}")
        await asyncio.sleep(0.2)


async def wait_previews(
    pool: asyncpg.Pool, import_id: int, timeout_s: float, watch: Sequence[Child] = ()
) -> tuple[float, asyncpg.Record]:
    """Seconds from the import's creation until none of its previews is pending (they follow the
    import), by the database's clock, and the import's row then."""
    deadline = time.monotonic() + timeout_s
    while True:
        row = await pool.fetchrow("SELECT *, now() - created_at AS age FROM imports WHERE id = $1", import_id)
        assert row is not None
        if row["previews_pending_count"] == 0:
            return row["age"].total_seconds(), row
        for child in watch:
            if child.proc.returncode is not None:
                raise RuntimeError(f"{child.name} exited with {child.proc.returncode}:\n{child.tail()}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"import {import_id}: previews still pending after {timeout_s} s: {dict(row)}")
        # Often: a late look would add its delay to the time measured.
        await asyncio.sleep(0.05)


async def check_import(pool: asyncpg.Pool, row: asyncpg.Record, manifest: Manifest) -> str:
    """'' when the import completed with every image (right source, size and MD5), else what is wrong."""
    problems = []
    if row["status"] != "completed":
        problems.append(f"status {row['status']} ({row['error_code']}: {row['error_message']})")
    # A workload may repeat a photo's bytes: those are copied inside storage (deduplicated), not downloaded.
    stored_count = row["imported_count"] + row["deduplicated_count"]
    if stored_count != len(manifest.files) or row["failed_count"]:
        problems.append(f"stored {stored_count}/{len(manifest.files)}, failed {row['failed_count']}")
    stored = {
        r["source_id"]: (r["source"], r["size"], r["md5"])
        for r in await pool.fetch("SELECT source, source_id, size, md5 FROM images WHERE import_id = $1", row["id"])
    }
    wrong = sum(1 for f in manifest.files if stored.get(f.id) != (manifest.source, f.size, f.md5))
    if wrong:
        problems.append(f"{wrong} images missing or with a wrong source/size/MD5")
    return "; ".join(problems)


async def check_stored_bytes(
    stack: Stack,
    pool: asyncpg.Pool,
    import_id: int,
    manifest: Manifest,
    *,
    count: int = VERIFY_SAMPLE,
    max_bytes: int = VERIFY_MAX_BYTES,
) -> str:
    """'' when a sample of the stored objects (every k-th file up to `max_bytes` each), read back from the
    bucket, has the manifest's MD5, else what is wrong. The rows' MD5s are what fotoowl computed itself while
    uploading; this reads the bytes S3 actually holds."""
    sample = [f for f in manifest.sample(count) if f.size <= max_bytes]
    keys = {
        r["source_id"]: r["storage_key"]
        for r in await pool.fetch(
            "SELECT source_id, storage_key FROM images WHERE import_id = $1 AND source_id = ANY($2::text[])",
            import_id,
            [f.id for f in sample],
        )
    }
    wrong = []
    async with open_storage(stack.settings()) as storage:
        for f in sample:
            key = keys.get(f.id)
            digest, size = hashlib.md5(usedforsecurity=False), 0
            if key is not None:
                async for chunk in storage.stream(key, chunk_size_bytes=1 << 20):
                    digest.update(chunk)
                    size += len(chunk)
            if key is None or (size, digest.hexdigest()) != (f.size, f.md5):
                wrong.append(f.rel_path)
    return f"{len(wrong)} of {len(sample)} objects read back differ: {', '.join(wrong[:3])}" if wrong else ""


async def run_fotoowl(
    children: Children,
    stack: Stack,
    manifest: Manifest,
    *,
    label: str,
    workers: int,
    overrides: dict[str, str] | None = None,
    variant: str = "",
    timeout_s: float = 3600,
) -> Row:
    """`workers` arq worker processes import the folder (from whichever source its manifest names);
    seconds = the import's finished_at - created_at. The row fails unless every image row is right and a
    sample of the stored objects reads back with the right bytes."""
    database_url = await stack.fresh_database(label)
    redis_url = await stack.fresh_redis()
    env = stack.fotoowl_env(
        database_url=database_url,
        redis_url=redis_url,
        prefix=f"{label}/",
        source_env=manifest.source_env(),
        overrides=overrides,
    )
    procs = [await children.spawn(f"{label}-worker-{n + 1}", [ARQ, WORKER_SETTINGS], env) for n in range(workers)]
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    redis = await create_arq_pool(stack.settings(redis_url=redis_url))
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample_peaks(procs, stop))
    try:
        for proc in procs:
            await wait_for_log(proc, "worker started", 120)
        created = await control.create_import(pool, redis, parse_link(manifest.folder_link))
        row = await wait_finished(pool, created["id"], timeout_s, procs)
        seconds = (row["finished_at"] - row["created_at"]).total_seconds()
        # The originals are done; their previews follow. Checks wait until the previews are done too, so
        # they do not take CPU from the previews being timed (and peak RSS includes making them).
        previews_seconds, after = await wait_previews(pool, created["id"], timeout_s, procs)
        problem = await check_import(pool, row, manifest)
        wanted = after["imported_count"] + after["deduplicated_count"]
        # `none`: a preview that will not be made, with its reason (a file over the preview size limit).
        finished = after["previews_done_count"] + after["previews_none_count"]
        if not problem and finished != wanted and "FOTOOWL_THUMBNAIL_PX" not in (overrides or {}):
            problem = f"previews: {after['previews_done_count']} made of {wanted} ({after['previews_none_count']} none)"
        if not problem and row["status"] == "completed":
            problem = await check_stored_bytes(stack, pool, row["id"], manifest)
    finally:
        stop.set()
        await sampler
        await redis.aclose()
        await pool.close()
        for proc in procs:
            await children.stop(proc)
    in_flight = int(env.get("FOTOOWL_FILES_IN_FLIGHT", str(AppSettings().files_in_flight))) * workers
    dropbox = manifest.source == "dropbox"
    name = (
        f"fotoowl, {'Dropbox, ' if dropbox else ''}{workers} worker{'s' if workers > 1 else ''} "
        f"({in_flight} files in flight)"
    )
    if variant:
        name += f" [{variant}]"
    return Row(
        name,
        len(manifest.files),
        manifest.total_bytes,
        seconds,
        ok=not problem,
        peak_rss_kib=[p.peak_rss_kib for p in procs],
        child_rss_kib=[p.peak_descendant_rss_kib for p in procs if p.peak_descendant_rss_kib],
        note=problem,
        kind="fotoowl-dropbox" if dropbox else "fotoowl",
        in_flight=in_flight,
        variant=variant,
        previews_seconds=previews_seconds,
        previews_with_originals=row["previews_done_count"] + row["previews_none_count"],
    )


# --- the transfer limit ---------------------------------------------------------------------------


async def _bounded(
    files: Sequence[ManifestFile], concurrency: int, work: Callable[[ManifestFile], Awaitable[None]]
) -> float:
    """Run `work` on every file with at most `concurrency` in flight; returns wall seconds."""
    semaphore = asyncio.Semaphore(concurrency)

    async def one(f: ManifestFile) -> None:
        async with semaphore:
            await work(f)

    started = time.monotonic()
    await asyncio.gather(*(one(f) for f in files))
    return time.monotonic() - started


def _session(concurrency: int) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=concurrency * 2 + 8),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=120),
    )


async def bare_copy(stack: Stack, manifest: Manifest, *, concurrency: int, prefix: str) -> Row:
    """fotoowl's own DriveClient.download + S3Storage.upload, nothing else: no DB, no queue, no thumbnails."""
    settings = stack.settings(prefix=prefix, files_in_flight=concurrency)
    async with _session(concurrency) as session, open_storage(settings) as storage:
        drive = DriveClient(session, api_url=manifest.api_url, api_key=manifest.api_key)

        async def copy(f: ManifestFile) -> None:
            download = drive.download(f.id, expected_size_bytes=f.size)
            try:
                stored = await storage.upload(
                    f"{prefix}{f.id}", download, content_type=f.mime_type, expected_md5=f.md5, size_hint_bytes=f.size
                )
            finally:
                await download.aclose()
            if stored.size_bytes != f.size:
                raise RuntimeError(f"{f.id}: {stored.size_bytes} bytes stored, {f.size} expected")

        seconds = await _bounded(manifest.files, concurrency, copy)
    return Row(
        f"(a) bare streaming copy, {concurrency} in flight",
        len(manifest.files),
        manifest.total_bytes,
        seconds,
        kind="limit",
        in_flight=concurrency,
    )


async def raw_download(manifest: Manifest, *, concurrency: int) -> Row:
    """Plain aiohttp GETs (alt=media, redirect followed), bytes read and thrown away."""
    async with _session(concurrency) as session:

        async def fetch(f: ManifestFile) -> None:
            url = f"{manifest.api_url}/files/{f.id}"
            async with session.get(
                url, params={"alt": "media", "key": manifest.api_key}, headers={"Accept-Encoding": "identity"}
            ) as response:
                response.raise_for_status()
                got = 0
                async for chunk in response.content.iter_chunked(1 << 20):
                    got += len(chunk)
            if got != f.size:
                raise RuntimeError(f"{f.id}: {got} bytes read, {f.size} expected")

        seconds = await _bounded(manifest.files, concurrency, fetch)
    return Row(
        f"(b) raw download, read and discard, {concurrency} in flight",
        len(manifest.files),
        manifest.total_bytes,
        seconds,
        kind="limit",
        in_flight=concurrency,
    )


async def fetch_local_copy(manifest: Manifest, dest: Path, *, concurrency: int = 32) -> None:
    """Untimed: the folder's files on local disk (checked by MD5), for s5cmd and rclone."""
    async with _session(concurrency) as session:

        async def fetch(f: ManifestFile) -> None:
            path = dest / f.rel_path
            path.parent.mkdir(parents=True, exist_ok=True)
            digest = hashlib.md5()
            url = f"{manifest.api_url}/files/{f.id}"
            async with (
                session.get(url, params={"alt": "media", "key": manifest.api_key}) as response,
                aiofiles.open(path, "wb") as out,
            ):
                response.raise_for_status()
                async for chunk in response.content.iter_chunked(1 << 20):
                    digest.update(chunk)
                    await out.write(chunk)
            if digest.hexdigest() != f.md5:
                raise RuntimeError(f"{f.rel_path}: MD5 mismatch in the local copy")

        await _bounded(manifest.files, concurrency, fetch)


async def count_objects(stack: Stack, prefix: str) -> tuple[int, int]:
    """(objects, bytes) under a prefix of the bench bucket."""
    async with open_storage(stack.settings()) as storage:
        client = storage.client  # type: ignore[attr-defined]
        count = size = 0
        paginator = client.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=stack.bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                count += 1
                size += int(obj["Size"])
    return count, size
