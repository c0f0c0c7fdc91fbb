"""`python -m bench [--quick]`: fotoowl against the transfer limit, a naive pipeline and rclone, in one run.

Starts embedded PostgreSQL, Valkey and SeaweedFS in a temp dir and the Drive emulator in its own
process, runs every contender on the same folder, and writes bench/RESULTS.md (RESULTS-quick.md
with --quick). See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import json
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import api_load, contenders, external, naive, procs, report
from bench.contenders import EmulatorSpec
from bench.manifest import Manifest
from bench.plan import DROPBOX_VARIANTS, DROPBOX_WORKERS, STEPS, VARIANTS, WARM_UP_FILES, Plan
from bench.procs import Children
from bench.results import Results, Row, from_json, to_json
from bench.stack import Stack, running_stack

HERE = Path(__file__).resolve().parent


def same_files(drive: Manifest, dropbox: Manifest) -> str:
    """'' when both manifests list the same files (path, size, MD5), else what differs."""

    def key(manifest: Manifest) -> list[tuple[str, int, str]]:
        return sorted((f.rel_path, f.size, f.md5) for f in manifest.files)

    if key(drive) == key(dropbox):
        return ""
    return (
        f"the Dropbox emulator serves other files than the Drive one ({len(dropbox.files)} files, "
        f"{dropbox.total_bytes:,} bytes vs {len(drive.files)}, {drive.total_bytes:,})"
    )


class Bench:
    def __init__(self, plan: Plan, stack: Stack, children: Children, work_dir: Path) -> None:
        self.plan = plan
        self.stack = stack
        self.children = children
        self.work_dir = work_dir
        self.results = Results()
        self.manifest: Manifest | None = None
        self.emulator_pid: int | None = None

    def say(self, text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)

    async def attempt(
        self, name: str, run: Callable[[], Awaitable[Row | None]], *, memory: bool = False, scaling: bool = False
    ) -> None:
        """Run one contender; a failure becomes a FAILED row and the run goes on."""
        self.say(f"{name} ...")
        before = self.cpu_snapshot()
        try:
            row = await run()
        except Exception as exc:
            traceback.print_exc()
            row = Row(name, 0, 0, 0, ok=False, note=f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}")
        if row is None:
            return
        after = self.cpu_snapshot()
        if not memory:
            row.cpu_s = {key: after[key] - before[key] for key in before if key in after}
        (self.results.memory if memory else self.results.scaling if scaling else self.results.rows).append(row)
        rss = f", peak RSS {row.peak_rss_mb:.0f} MB" if row.peak_rss_mb else ""
        if row.child_rss_kib:
            rss += f" (preview process {max(row.child_rss_kib) / 1024:.0f} MB)"
        self.say(
            f"  {row.contender}: {row.images:,} images in {row.seconds:.1f} s = {row.images_per_s:.1f} "
            f"images/s, {row.mb_per_s:.1f} MB/s{rss}{'' if row.ok else '  FAILED: ' + row.note}"
        )

    def cpu_snapshot(self) -> dict[str, float]:
        """CPU seconds so far: this process with its exited children (the contender), and each server."""
        pids = dict(self.stack.server_pids)
        if self.emulator_pid is not None:
            pids["emulator"] = self.emulator_pid
        snapshot = {"contender": procs.own_cpu_seconds()}
        machine = procs.machine_cpu_seconds()
        if machine is not None:
            snapshot[report.MACHINE] = machine
        for name, pid in pids.items():
            seconds = procs.tree_cpu_seconds(pid)
            if seconds is not None:
                snapshot[name] = seconds
        return snapshot

    def fotoowl_env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {**self.plan.fotoowl_env, **(extra or {})}

    async def run(self) -> None:
        plan, steps = self.plan, self.plan.steps
        emulator, manifest = await contenders.launch_emulator(
            self.children,
            "emulator",
            EmulatorSpec(
                "mixed",
                images=plan.images,
                seed=plan.seed,
                latency_s=plan.latency_s,
                bandwidth_bytes_per_s=plan.bandwidth_bytes_per_s,
            ),
        )
        self.manifest = manifest
        self.emulator_pid = emulator.pid
        self.say(f"workload: {len(manifest.files):,} images, {manifest.total_bytes / 1e6:,.1f} MB")
        await self.warm_up(manifest)
        if "fotoowl" in steps:
            for number, (variant, settings, worker_counts) in enumerate(VARIANTS if plan.variants else VARIANTS[:1]):
                for workers in worker_counts:
                    await self.attempt(
                        f"fotoowl, {workers} worker(s) {variant}",
                        functools.partial(
                            contenders.run_fotoowl,
                            self.children,
                            self.stack,
                            manifest,
                            label=f"fotoowl-v{number}-{workers}w",
                            workers=workers,
                            overrides=self.fotoowl_env(settings),
                            variant=variant,
                        ),
                    )
        if "dropbox" in steps:
            await self.run_dropbox(manifest)
        if "naive" in steps:
            await self.attempt("naive pipeline", self.run_naive)
        if "limit" in steps or "rclone" in steps:
            await self.run_limits(manifest)
        if "api" in steps:
            await self.run_api(manifest)
        await self.children.stop(emulator)
        self.emulator_pid = None
        if "scaling" in steps:
            await self.run_scaling()
        if "memory" in steps:
            await self.run_memory()

    async def warm_up(self, manifest: Manifest) -> None:
        """Untimed: SeaweedFS allocates its volumes on the first writes to the bucket, and the emulator
        fills its caches on the first reads; without this the first contender pays for both."""
        self.say(f"warm-up (untimed): bare copy of {WARM_UP_FILES} files ...")
        sample = dataclasses.replace(manifest, files=manifest.sample(WARM_UP_FILES))
        await contenders.bare_copy(self.stack, sample, concurrency=self.plan.in_flight, prefix="warm-up/")

    async def run_dropbox(self, drive: Manifest) -> None:
        """The same folder as a shared Dropbox link, from its own emulator process, imported as the Drive one is."""
        plan = self.plan
        spec = EmulatorSpec(
            "mixed",
            images=plan.images,
            seed=plan.seed,
            latency_s=plan.latency_s,
            bandwidth_bytes_per_s=plan.bandwidth_bytes_per_s,
            source="dropbox",
        )
        self.say("Dropbox emulator: the same folder as a shared link ...")
        emulator, manifest = await contenders.launch_emulator(self.children, "emulator-dropbox", spec)
        drive_emulator_pid, self.emulator_pid = self.emulator_pid, emulator.pid
        mismatch = same_files(drive, manifest)
        try:
            for number, (variant, settings) in enumerate(DROPBOX_VARIANTS if plan.variants else DROPBOX_VARIANTS[:1]):

                async def one(number: int = number, variant: str = variant, settings: dict[str, str] = settings) -> Row:
                    if mismatch:
                        raise RuntimeError(mismatch)
                    return await contenders.run_fotoowl(
                        self.children,
                        self.stack,
                        manifest,
                        label=f"dropbox-v{number}-{DROPBOX_WORKERS}w",
                        workers=DROPBOX_WORKERS,
                        overrides=self.fotoowl_env(settings),
                        variant=variant,
                    )

                await self.attempt(f"fotoowl, Dropbox, {DROPBOX_WORKERS} worker(s) {variant}", one)
        finally:
            await self.children.stop(emulator)
            self.emulator_pid = drive_emulator_pid

    async def run_naive(self) -> Row:
        assert self.manifest is not None
        manifest, stack = self.manifest, self.stack
        sample = manifest.sample(self.plan.naive_sample)
        result = await naive.run_naive(
            api_url=manifest.api_url,
            api_key=manifest.api_key,
            root_id=manifest.root_id,
            sample_ids=[f.id for f in sample],
            s3_endpoint_url=stack.s3_endpoint_url,
            bucket=stack.bucket,
            key_id=stack.s3_key_id,
            secret=stack.s3_secret,
            database_url=await stack.fresh_database("naive"),
            prefix="naive/",
        )
        note = (
            f"sampled: {result.copied} of {len(manifest.files):,} files; listing {result.listed:,} files took "
            f"{result.list_seconds:.1f} s more (not counted)"
        )
        if result.listed != len(manifest.files):
            note += f"; listed {result.listed} files, expected {len(manifest.files)}"
        return Row(
            f"naive pipeline (sequential, sampled {result.copied})",
            result.copied,
            result.copied_bytes,
            result.copy_seconds,
            ok=result.listed == len(manifest.files),
            note=note,
            kind="naive",
            in_flight=1,
        )

    async def run_limits(self, manifest: Manifest) -> None:
        plan, stack = self.plan, self.stack
        n, total = len(manifest.files), manifest.total_bytes
        if "limit" in plan.steps:
            for concurrency in (plan.in_flight, plan.in_flight * 2):
                await self.attempt(
                    f"bare copy {concurrency}",
                    functools.partial(
                        contenders.bare_copy, stack, manifest, concurrency=concurrency, prefix=f"bare-{concurrency}/"
                    ),
                )
            await self.attempt("raw download", lambda: contenders.raw_download(manifest, concurrency=plan.in_flight))
        local = self.work_dir / "local-copy"
        self.say("local copy of the folder for s5cmd and rclone (untimed) ...")
        await contenders.fetch_local_copy(manifest, local)
        if "limit" in plan.steps:
            await self.attempt(
                "s5cmd",
                lambda: external.s5cmd_upload(
                    self.children, stack, local, files=n, total_bytes=total, concurrency=plan.in_flight, prefix="s5cmd/"
                ),
            )
        if "rclone" in plan.steps:
            await self.attempt(
                "rclone",
                lambda: external.rclone_copy(
                    self.children, stack, local, files=n, total_bytes=total, latency_s=plan.latency_s, prefix="rclone/"
                ),
            )
        shutil.rmtree(local, ignore_errors=True)

    async def run_api(self, manifest: Manifest) -> None:
        self.say("API latency: fotoowl serve with embedded workers, during an import and idle ...")
        try:
            self.results.api = await api_load.run_api_load(
                self.children,
                self.stack,
                manifest,
                during=self.plan.api_during,
                idle=self.plan.api_idle,
                timeout_s=3600,
                separate_workers=self.plan.api_workers,
                overrides=self.fotoowl_env(),
            )
        except Exception as exc:
            traceback.print_exc()
            self.results.notes.append(f"API load run failed: {type(exc).__name__}: {exc}")
            return
        for lat in self.results.api.latencies:
            self.say(
                f"  {lat.endpoint} {lat.phase}: n={len(lat.samples_ms)} p50={lat.p50:.1f} ms "
                f"p99={lat.p99:.1f} ms errors={lat.errors}"
            )

    async def run_scaling(self) -> None:
        plan = self.plan
        spec = EmulatorSpec("tiny", images=plan.scaling_files, seed=plan.seed, latency_s=plan.scaling_latency_s)
        emulator, manifest = await contenders.launch_emulator(self.children, "emulator-scaling", spec)
        self.emulator_pid = emulator.pid
        try:
            for workers in (1, 2):

                async def one(workers: int = workers) -> Row:
                    row = await contenders.run_fotoowl(
                        self.children,
                        self.stack,
                        manifest,
                        label=f"scaling-{workers}w",
                        workers=workers,
                        overrides=self.fotoowl_env(),
                    )
                    row.kind = "scaling"
                    return row

                await self.attempt(f"scaling: {workers} worker(s)", one, scaling=True)
        finally:
            await self.children.stop(emulator)
            self.emulator_pid = None

    async def run_memory(self) -> None:
        plan = self.plan
        cases = [
            (
                "single",
                f"one {plan.big_file_bytes / 1e6:,.0f} MB file",
                EmulatorSpec("single", size_bytes=plan.big_file_bytes, seed=plan.seed, latency_s=plan.latency_s),
                {},
            ),
            (
                "tiny",
                f"{plan.tiny_files:,} tiny files (2-12 KiB), {plan.tiny_latency_s * 1000:.0f} ms latency",
                EmulatorSpec("tiny", images=plan.tiny_files, seed=plan.seed, latency_s=plan.tiny_latency_s),
                {"FOTOOWL_DRIVE_RATE_PER_S": "100000", "FOTOOWL_DRIVE_BURST": "1000"},
            ),
            # Not in the brief: files just under the 8 MiB part size are what fotoowl buffers most of.
            (
                "photos",
                f"{plan.photo_files:,} camera-size photos (7-8 MiB) [extra check]",
                EmulatorSpec("photos", images=plan.photo_files, seed=plan.seed, latency_s=plan.latency_s),
                {},
            ),
        ]
        for label, title, spec, extra in cases:

            async def one(
                label: str = label, title: str = title, spec: EmulatorSpec = spec, extra: dict[str, str] = extra
            ) -> Row:
                emulator, manifest = await contenders.launch_emulator(self.children, f"emulator-{label}", spec)
                try:
                    row = await contenders.run_fotoowl(
                        self.children,
                        self.stack,
                        manifest,
                        label=f"memory-{label}",
                        workers=1,
                        overrides=self.fotoowl_env(extra),
                    )
                finally:
                    await self.children.stop(emulator)
                row.contender = f"{title}, 1 worker"
                row.kind = "memory"
                return row

            await self.attempt(f"memory: {title}", one, memory=True)


def product_version() -> str:
    """The commit the run measured, and whether src/ or sql/ had uncommitted changes."""
    root = HERE.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src", "sql"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return f"commit {commit}" + (f" with {len(dirty)} uncommitted file(s) in src/ or sql/" if dirty else " (clean)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small workloads, < 3 minutes (CI smoke check)")
    parser.add_argument(
        "--scale",
        action="store_true",
        help="only the scale benchmark (bench/scale.py): 1,000,000 images, /images latencies, a 100,000-file import",
    )
    parser.add_argument("--scale-images", type=int, default=1_000_000, help="image rows seeded by --scale")
    parser.add_argument("--scale-files", type=int, default=100_000, help="files of the --scale big import")
    parser.add_argument("--scale-rounds", type=int, default=200, help="idle requests per case in --scale")
    parser.add_argument("--images", type=int, default=0, help="images in the main folder (10,000; quick 400)")
    parser.add_argument("--tiny-files", type=int, default=0, help="files in the memory test folder")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--latency-ms", type=float, default=50.0, help="added to every emulator request")
    parser.add_argument("--bandwidth-mb-s", type=float, default=0.0, help="per-connection limit; 0 = none")
    parser.add_argument(
        "--fotoowl-env",
        action="append",
        default=[],
        metavar="FOTOOWL_X=V",
        help="override a fotoowl setting in every fotoowl process (repeatable)",
    )
    parser.add_argument(
        "--api-workers",
        type=int,
        default=0,
        metavar="N",
        help="API run: N separate worker processes instead of embedded workers (a comparison)",
    )
    parser.add_argument(
        "--no-variants", action="store_true", help="skip the diagnostic fotoowl runs (pacer raised, thumbnails off)"
    )
    parser.add_argument("--only", default="", help=f"comma-separated steps: {','.join(STEPS)}")
    parser.add_argument(
        "--report-from",
        type=Path,
        default=None,
        metavar="RESULTS_JSON",
        help="only re-render the report from a run's bench/out/<date>/results.json",
    )
    parser.add_argument("--output", type=Path, default=None, help="the results file (default bench/RESULTS*.md)")
    return parser.parse_args(argv)


async def _main(bench: Bench) -> None:
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        await bench.run()
    finally:
        await bench.children.stop_all()


def write_report(results: Results, meta: dict[str, Any], output: Path) -> None:
    text = report.document(results, **meta)
    output.write_text(text)
    print("\n" + text, flush=True)
    print(f"written to {output}", flush=True)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.scale:
        from bench import scale

        scale_plan = scale.ScalePlan(
            images=args.scale_images,
            # Smaller galleries (a smoke run) get fewer imports and a smaller import during the second pass.
            imports=min(500, max(10, args.scale_images // 2000)),
            during_files=min(10_000, max(100, args.scale_images // 100)),
            big_files=args.scale_files,
            rounds=args.scale_rounds,
            latency_s=args.latency_ms / 1000,
            seed=args.seed,
        )
        scale.main(scale_plan, argv if argv is not None else sys.argv[1:], product_version(), args.output)
        return
    plan = Plan.from_args(args)
    output = args.output or HERE / ("RESULTS-quick.md" if plan.quick else "RESULTS.md")
    if args.report_from:
        results, meta = from_json(json.loads(args.report_from.read_text()))
        write_report(results, meta, output)
        return
    started, date = time.monotonic(), datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    version = product_version()
    log_dir = HERE / "out" / datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    work_dir = Path(tempfile.mkdtemp(prefix="fotoowl-bench-"))
    print(f"logs in {log_dir}, servers in {work_dir}", flush=True)
    try:
        with running_stack(work_dir / "servers") as stack:
            bench = Bench(plan, stack, Children(log_dir), work_dir)
            try:
                asyncio.run(_main(bench))
            except (KeyboardInterrupt, asyncio.CancelledError):
                print("interrupted: servers and child processes stopped; no results written", file=sys.stderr)
                sys.exit(130)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    wall_s = time.monotonic() - started
    command = ("python -m bench " + shlex.join(argv if argv is not None else sys.argv[1:])).strip()
    meta = {
        "title": "fotoowl benchmark" + (" (quick mode)" if plan.quick else ""),
        "command": command,
        "date": date,
        "wall_s": wall_s,
        "setup": plan.describe(bench.manifest),
        "version": version,
    }
    log_dir.mkdir(parents=True, exist_ok=True)
    (log_dir / "results.json").write_text(json.dumps(to_json(bench.results, **meta), indent=1))
    write_report(bench.results, meta, output)
    print(f"wall time {wall_s:.0f} s; raw results in {log_dir / 'results.json'}", flush=True)


if __name__ == "__main__":
    main()
