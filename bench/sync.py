"""`python -m bench.sync [--quick]`: a second import of an unchanged folder, and a folder of copies.

Against the Drive emulator (in this process, so its own counters say what was downloaded) with a
latency on every request, on embedded PostgreSQL, Valkey and SeaweedFS and an embedded worker pool:

1. import a folder of N images (the baseline);
2. import it again, nothing changed: bytes downloaded (the emulator's counter) and the time from the
   start of its listing to its end, against the listing alone (target: at most 1.5x);
3. import a second folder holding the same photos under other ids: bytes downloaded (target: 0),
   files deduplicated, time against the baseline.

Writes bench/RESULTS-sync.md (RESULTS-sync-quick.md with --quick).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from bench.stack import running_stack
from fotoowl.config import Secret
from fotoowl.pipeline import control
from fotoowl.sources.links import parse_link
from fotoowl.testing.drive_emulator import DriveEmulator, start_emulator
from fotoowl.worker import EmbeddedWorker, create_arq_pool

HERE = Path(__file__).resolve().parent
API_KEY = "bench-key"


def build_folders(emu: DriveEmulator, n_images: int) -> tuple[str, str, list[str], list[str]]:
    """The shoot (N images in ten day folders) and an agency's folder with the same photos under other ids."""
    shoot, agency = emu.add_folder(None, "Shoot"), emu.add_folder(None, "Agency selection")
    days = [emu.add_folder(shoot, f"Day {d + 1}") for d in range(10)]
    originals, copies = [], []
    for n in range(n_images):
        file_id = emu.add_image(days[n % 10], f"IMG_{n:06d}.jpg", width=96, height=64)
        originals.append(file_id)
        content = emu.items[file_id].content
        assert content is not None
        copies.append(emu.add_file(agency, f"selected_{n:06d}.jpg", "image/jpeg", content=content))
    return shoot, agency, originals, copies


async def run_import(pool: asyncpg.Pool, redis: object, url: str, timeout_s: float) -> asyncpg.Record:
    row = await control.create_import(pool, redis, parse_link(url))  # type: ignore[arg-type]
    deadline = time.monotonic() + timeout_s
    while True:
        got = await pool.fetchrow("SELECT * FROM imports WHERE id = $1", row["id"])
        assert got is not None
        if got["finished_at"] is not None:
            return got
        if time.monotonic() > deadline:
            raise TimeoutError(f"import {row['id']} did not finish in {timeout_s} s ({got['status']})")
        await asyncio.sleep(0.1)


def seconds(start: datetime, end: datetime) -> float:
    return (end - start).total_seconds()


async def bench(n_images: int, latency_s: float) -> tuple[bool, list[str]]:
    emu = DriveEmulator(api_keys={API_KEY}, seed=7, latency_s=latency_s)
    shoot, agency, originals, copies = build_folders(emu, n_images)
    runner, api_url = await start_emulator(emu)
    with tempfile.TemporaryDirectory(prefix="fotoowl-bench-sync-") as tmp, running_stack(Path(tmp)) as stack:
        settings = stack.settings(
            database_url=await stack.fresh_database("sync"), redis_url=await stack.fresh_redis(), files_in_flight=32
        ).replace(drive_api_url=api_url, google_api_key=Secret(API_KEY))
        worker = EmbeddedWorker(settings)
        await asyncio.to_thread(worker.start)
        pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=4)
        redis = await create_arq_pool(settings)
        timeout_s = 60 + n_images * 0.2
        try:
            first = await run_import(pool, redis, f"https://drive.google.com/drive/folders/{shoot}", timeout_s)
            served_first = sum(emu.bytes_served[i] for i in originals)
            lists_before = emu.list_calls
            second = await run_import(pool, redis, f"https://drive.google.com/drive/folders/{shoot}", timeout_s)
            # The listing requests of a sync; the sync's own check of the folder (one files.get) aside.
            pages = emu.list_calls - lists_before
            served_second = sum(emu.bytes_served[i] for i in originals) - served_first
            third = await run_import(pool, redis, f"https://drive.google.com/drive/folders/{agency}", timeout_s)
            served_copies = sum(emu.bytes_served[i] for i in copies)
        finally:
            await redis.aclose()
            await pool.close()
            await asyncio.to_thread(worker.stop)
            await runner.cleanup()
    first_s = seconds(first["started_at"], first["finished_at"])
    listing_s = seconds(second["started_at"], second["listed_at"])
    sync_s = seconds(second["started_at"], second["finished_at"])
    copies_s = seconds(third["started_at"], third["finished_at"])
    sync_ok = served_second == 0 and second["unchanged_count"] == n_images and sync_s <= 1.5 * listing_s
    dedupe_ok = served_copies == 0 and third["deduplicated_count"] == n_images
    lines = [
        "# Sync and dedupe benchmark",
        "",
        f"`python -m bench.sync{' --quick' if n_images < 10_000 else ''}` on "
        f"{datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}: {n_images:,} images in ten folders, "
        f"{latency_s * 1000:.0f} ms emulator latency per request, embedded PostgreSQL/Valkey/SeaweedFS, "
        "one embedded worker pool (32 files in flight). The emulator runs in the benchmark's process and "
        "counts the bytes it serves.",
        "",
        "| import | files | downloaded bytes | time | against |",
        "|---|---:|---:|---:|---|",
        f"| first import of the shoot | {first['imported_count']:,} imported | {served_first:,} | "
        f"{first_s:.1f} s | baseline |",
        f"| the same folder again, nothing changed | {second['unchanged_count']:,} unchanged | "
        f"{served_second:,} | {sync_s:.1f} s | {sync_s / listing_s:.2f}x its listing ({listing_s:.1f} s; "
        f"{pages} list requests x {latency_s * 1000:.0f} ms = {pages * latency_s:.1f} s) |",
        f"| another folder, the same photos under other ids | {third['deduplicated_count']:,} deduplicated, "
        f"{third['imported_count']:,} imported | {served_copies:,} | {copies_s:.1f} s | "
        f"{copies_s / first_s:.2f}x the first import |",
        "",
        f"- Second import: {'met' if sync_ok else 'MISSED'} (0 bytes downloaded, at most 1.5x its listing time).",
        f"- Folder of copies: {'met' if dedupe_ok else 'MISSED'} (0 bytes downloaded; copied inside storage).",
        "",
    ]
    # The exit status judges what is exact (bytes and counts); the time is reported, not judged here,
    # so a slow machine cannot fail CI's quick run.
    exact = served_second == 0 and second["unchanged_count"] == n_images and dedupe_ok
    return exact, lines


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.sync")
    parser.add_argument("--quick", action="store_true", help="500 images instead of 10,000")
    parser.add_argument("--images", type=int)
    parser.add_argument("--latency-s", type=float, default=0.05)
    args = parser.parse_args()
    n_images = args.images or (500 if args.quick else 10_000)
    out = HERE / ("RESULTS-sync-quick.md" if args.quick else "RESULTS-sync.md")
    ok, lines = asyncio.run(bench(n_images, args.latency_s))
    out.write_text("\n".join(lines))
    print("\n".join(lines))
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
