"""What a run measures: the steps, the workload sizes, the fotoowl settings, and the Setup section."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from bench import api_load
from bench.manifest import Manifest
from fotoowl.config import AppSettings

MiB = 1024 * 1024
WARM_UP_FILES = 300
STEPS = ("fotoowl", "dropbox", "naive", "limit", "rclone", "scaling", "api", "memory")
# Diagnostic fotoowl runs beside the product defaults: (label, settings, worker counts). Previews
# are CPU the bare copy does not spend; turning them off shows what the copy itself costs.
VARIANTS: tuple[tuple[str, dict[str, str], tuple[int, ...]], ...] = (
    ("", {}, (1, 2)),
    ("no thumbnails", {"FOTOOWL_THUMBNAIL_PX": "0"}, (1,)),
    # The product paces Drive requests at Google's documented quota (FOTOOWL_DRIVE_RATE_PER_S, listing
    # pages and downloads together); the bare copy is not paced. This row shows the pipeline without that ceiling.
    ("Drive pacer raised", {"FOTOOWL_DRIVE_RATE_PER_S": "100000", "FOTOOWL_DRIVE_BURST": "1000"}, (1,)),
)
# The same folder served as a shared Dropbox link, imported by one worker as the Drive one is. Dropbox's
# pacer ceiling is its own setting (lower than Drive's: Dropbox publishes no number); the diagnostic row
# raises it to Drive's, to compare the two sources with the same pace allowed.
_DEFAULTS = AppSettings()
DROPBOX_VARIANTS: tuple[tuple[str, dict[str, str]], ...] = (
    ("", {}),
    (
        f"pacer {_DEFAULTS.drive_rate_per_s:g}/s, as Drive's",
        {"FOTOOWL_DROPBOX_RATE_PER_S": f"{_DEFAULTS.drive_rate_per_s:g}"},
    ),
)
DROPBOX_WORKERS = 1


@dataclass(frozen=True)
class Plan:
    quick: bool
    images: int
    naive_sample: int
    big_file_bytes: int
    tiny_files: int
    tiny_latency_s: float
    photo_files: int
    scaling_files: int
    scaling_latency_s: float
    api_workers: int
    latency_s: float
    bandwidth_bytes_per_s: float
    seed: int
    # The product's default, so the bare copy runs at the same concurrency as fotoowl.
    in_flight: int = field(default_factory=lambda: AppSettings().files_in_flight)
    fotoowl_env: dict[str, str] = field(default_factory=dict)
    steps: tuple[str, ...] = STEPS
    variants: bool = True
    api_during: api_load.LoopBounds = field(default_factory=lambda: api_load.LoopBounds(3000, 900))
    api_idle: api_load.LoopBounds = field(default_factory=lambda: api_load.LoopBounds(300, 60))

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Plan:
        quick = bool(args.quick)
        overrides = dict(item.split("=", 1) for item in args.fotoowl_env)
        steps = tuple(args.only.split(",")) if args.only else STEPS
        unknown = set(steps) - set(STEPS)
        if unknown:
            raise SystemExit(f"unknown steps {sorted(unknown)}; choose from {', '.join(STEPS)}")
        return cls(
            quick=quick,
            images=args.images or (400 if quick else 10_000),
            naive_sample=60 if quick else 300,
            big_file_bytes=(200 if quick else 2048) * MiB,
            tiny_files=args.tiny_files or (5_000 if quick else 100_000),
            tiny_latency_s=0.005,
            photo_files=48 if quick else 160,
            scaling_files=400 if quick else 3_000,
            scaling_latency_s=0.25,
            api_workers=args.api_workers,
            latency_s=args.latency_ms / 1000,
            bandwidth_bytes_per_s=args.bandwidth_mb_s * 1_000_000,
            seed=args.seed,
            fotoowl_env=overrides,
            steps=steps,
            variants=not args.no_variants,
            api_during=api_load.LoopBounds(3000, 600 if quick else 1800, think_s=0.01 if quick else 0.05),
            api_idle=api_load.LoopBounds(150 if quick else 400, 20 if quick else 60),
        )

    def describe(self, manifest: Manifest | None) -> str:
        total = f"{manifest.total_bytes / 1e6:,.0f} MB" if manifest else "?"
        bandwidth = (
            f"{self.bandwidth_bytes_per_s / 1e6:.0f} MB/s per connection"
            if self.bandwidth_bytes_per_s
            else "no bandwidth limit"
        )
        env = ", ".join(f"{k}={v}" for k, v in self.fotoowl_env.items()) or "none (product defaults)"
        return "\n".join(
            [
                "## Setup",
                "",
                f"- Workload: {self.images:,} images, {total}, in nested folders (seed {self.seed}); "
                f"the Drive emulator runs in its own process with {self.latency_s * 1000:.0f} ms added to every "
                f"request, {bandwidth}.",
                f"- fotoowl: `arq fotoowl.worker.Settings` processes, {self.in_flight} files in flight each (default); "
                f"FOTOOWL_* overrides: {env}. The row marked [no thumbnails] sets FOTOOWL_THUMBNAIL_PX=0, the "
                "one marked [Drive pacer raised] FOTOOWL_DRIVE_RATE_PER_S=100000 (the product paces Drive requests "
                f"at {_DEFAULTS.drive_rate_per_s:g}/s, Google's documented quota, listing and downloads together; "
                "the bare copy is not paced): diagnostics; the targets are judged on the product defaults. Each "
                "import must end with every image row right (source id, size, MD5) and a sample of the stored "
                "objects reading back with the right MD5.",
                f"- Dropbox: the same {self.images:,} files (names, folders, sizes, bytes) served by the Dropbox "
                f"emulator in its own process as a shared folder link, with the same {self.latency_s * 1000:.0f} ms "
                f"on every request, imported by {DROPBOX_WORKERS} worker with the same settings as the Drive one. "
                "Dropbox lists each folder in pages of up to 2,000 entries and serves a file in one request "
                f"(Drive: a redirect, two round trips); fotoowl paces Dropbox at {_DEFAULTS.dropbox_rate_per_s:g} "
                f"requests/s by default, Drive at {_DEFAULTS.drive_rate_per_s:g}. The row marked "
                f"[{DROPBOX_VARIANTS[1][0]}] sets {', '.join(f'{k}={v}' for k, v in DROPBOX_VARIANTS[1][1].items())}: "
                "a diagnostic.",
                f"- Naive pipeline: sampled, {self.naive_sample} files spread over the folder (every k-th); "
                "its rate is sample files / sample seconds (listing time excluded, which flatters it).",
                f"- Memory: one {self.big_file_bytes / 1e6:,.0f} MB file; {self.tiny_files:,} tiny files with "
                f"{self.tiny_latency_s * 1000:.0f} ms emulator latency (lowered) and the Drive pacer raised "
                "(FOTOOWL_DRIVE_RATE_PER_S=100000) so the run ends in minutes; otherwise product defaults. An extra "
                f"check beyond the brief: {self.photo_files} photos of 7-8 MiB (just under the 8 MiB part size), "
                "50 ms latency, product defaults.",
                f"- Scaling: {self.scaling_files:,} small files (2-12 KiB) with {self.scaling_latency_s * 1000:.0f} ms "
                "per emulator request (a latency-bound workload, as Drive's own latency makes it), 1 and 2 worker "
                "processes, product defaults.",
                "- Servers: embedded PostgreSQL (fsync off), Valkey, SeaweedFS `weed mini`, in a temp dir, "
                "shared by every contender; each contender gets its own database, Redis db and key prefix. "
                f"An untimed warm-up first copies {WARM_UP_FILES} of the files, so that no contender pays for "
                "SeaweedFS allocating its volumes.",
            ]
        )
