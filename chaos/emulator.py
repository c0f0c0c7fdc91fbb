"""The Drive emulator of the chaos suite, in its own process: `python -m chaos.emulator --manifest PATH`.

Serves three public folders from one DriveEmulator and writes a JSON manifest of them:

- `main`: N small images (a few tens of KiB) in nested folders, plus a few over the 8 MiB part size
  so that multipart uploads happen (and can be left open by a fault);
- `nasty`: the same mix (other ids), plus a poison file whose every download fails (answered 500 or
  reset before the first byte) and a file whose name holds a NUL byte;
- `probe`: a small folder imported after each fault to show the workers still take work.

A control API beside the Drive API switches random faults on and off at run time:
`POST /chaos/faults {"rate": 0.05}` (0 = off) and `GET /chaos/stats`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from bench import workload
from bench.emulator_proc import build, manifest_files
from bench.manifest import ManifestFile

from fotoowl.testing.drive_emulator import API_PREFIX, DriveEmulator, Fault, start_emulator

API_KEY = "chaos-key"
KIB = 1024
MIB = 1024 * KIB
HEADS: workload.Profile = "tiny"  # small generated JPEG heads: cheap to serve and to thumbnail
POISON_NAME = "POISON_never_downloads.jpg"
NUL_NAME = "IMG_with_\x00_NUL.jpg"
FOLDERS = ("", "Day 1", "Day 1/Camera A", "Day 1/Camera B", "Day 2", "Day 2/Camera A")

# Random faults of every kind at once. A request meets at most one fault per stage: request-stage
# faults (answered before any byte) apply to list, get and media calls; body faults to downloads.
REQUEST_FAULTS: tuple[tuple[str, Fault], ...] = (
    ("http 500", Fault.http(500)),
    ("http 503", Fault.http(503)),
    ("429 rateLimitExceeded", Fault.rate_limited()),
    ("403 userRateLimitExceeded", Fault.rate_limited(403, "userRateLimitExceeded")),
    ("drop", Fault.drop()),
    ("latency 2 s", Fault.latency(2.0)),
)
BODY_FAULTS: tuple[tuple[str, Fault], ...] = (
    ("reset after 16 KiB", Fault.reset(16 * KIB)),
    ("truncate after 16 KiB", Fault.truncate(16 * KIB)),
    ("ignore_range", Fault.ignore_range()),
    ("slow 256 KiB/s", Fault.slow(256 * KIB)),
)
_LABELS = {fault: label for label, fault in REQUEST_FAULTS + BODY_FAULTS}


@dataclass(frozen=True)
class Folder:
    root_id: str
    link: str
    files: list[ManifestFile]  # every file that must end up imported
    failing: list[ManifestFile] = field(default_factory=list)  # files that must end `failed`

    @property
    def found(self) -> int:
        return len(self.files) + len(self.failing)


@dataclass(frozen=True)
class DriveManifest:
    api_url: str
    api_key: str
    control_url: str
    latency_s: float
    folders: dict[str, Folder]

    def source_env(self) -> dict[str, str]:
        """The FOTOOWL_* settings that point a fotoowl process at this emulator."""
        return {"FOTOOWL_GOOGLE_API_KEY": self.api_key, "FOTOOWL_DRIVE_API_URL": self.api_url}

    def write(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self)))
        tmp.replace(path)

    @classmethod
    def read(cls, path: Path) -> DriveManifest:
        data = json.loads(path.read_text())
        folders = {
            name: Folder(
                f["root_id"],
                f["link"],
                [ManifestFile(**m) for m in f["files"]],
                [ManifestFile(**m) for m in f["failing"]],
            )
            for name, f in data.pop("folders").items()
        }
        return cls(folders=folders, **data)


def plan(n_images: int, n_big: int, seed: int) -> list[workload.FileSpec]:
    """Small photos of 20-60 KiB with `n_big` of 9-12 MiB (two 8 MiB parts each) spread among them."""
    rng = random.Random(seed)
    big = set(rng.sample(range(n_images), min(n_big, n_images)))
    specs = []
    for index in range(n_images):
        size = rng.randint(9 * MIB, 12 * MIB) if index in big else rng.randint(20 * KIB, 60 * KIB)
        specs.append(
            workload.FileSpec(
                FOLDERS[index % len(FOLDERS)], f"IMG_{index + 1:05d}.jpg", size, rng.randrange(workload.HEAD_VARIANTS)
            )
        )
    return specs


class ChaosEmulator(DriveEmulator):
    """The Drive emulator with a control API and a count of the faults it served."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.faults_served: Counter[str] = Counter()
        self.poison_ids: list[str] = []
        self.rate = 0.0

    def make_app(self) -> web.Application:
        app = super().make_app()
        app.router.add_post("/chaos/faults", self._set_faults)
        app.router.add_get("/chaos/stats", self._stats)
        return app

    def _take_fault(self, kind: str, item_id: str, *, body_stage: bool) -> Fault | None:
        fault = super()._take_fault(kind, item_id, body_stage=body_stage)
        if fault is not None:
            label = "poison" if item_id in self.poison_ids else _LABELS.get(fault, fault.kind)
            self.faults_served[label] += 1
        return fault

    def poison(self, file_id: str) -> None:
        self.poison_ids.append(file_id)
        self.apply_faults(self.rate)

    def apply_faults(self, rate: float) -> None:
        """The poison rules first (they always win for their file), then `rate` spread over every kind."""
        self.clear_faults()
        self.rate = rate
        for file_id in self.poison_ids:
            self.inject_random(Fault.http(500), rate=0.5, on="media", target_id=file_id)
            self.inject(file_id, Fault.reset(0), times=None, on="media")
        if rate > 0:
            for _, fault in REQUEST_FAULTS:
                self.inject_random(fault, rate=rate / len(REQUEST_FAULTS), on="any")
            for _, fault in BODY_FAULTS:
                self.inject_random(fault, rate=rate / len(BODY_FAULTS), on="media")

    async def _set_faults(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.apply_faults(float(body.get("rate", 0.0)))
        return await self._stats(request)

    async def _stats(self, request: web.Request) -> web.Response:
        calls: Counter[str] = Counter()
        for (kind, _), count in self.requests.items():
            calls[kind] += count
        return web.json_response({"rate": self.rate, "faults": dict(self.faults_served), "requests": dict(calls)})


def _extra_file(emu: DriveEmulator, parent: str, name: str, seed: int) -> ManifestFile:
    file_id = emu.add_image(parent, name, fmt="jpeg", width=64, height=48, size_bytes=30 * KIB, image_seed=seed)
    content = emu.items[file_id].content
    assert content is not None
    return ManifestFile(file_id, name, "", content.size_bytes, content.md5_hex, "image/jpeg")


def _folder(emu: DriveEmulator, name: str, specs: list[workload.FileSpec]) -> tuple[str, list[ManifestFile]]:
    root, ids = build(emu, specs, HEADS)
    emu.items[root].name = name
    return root, manifest_files(emu, specs, ids, HEADS)


def _link(root: str) -> str:
    return f"https://drive.google.com/drive/folders/{root}"


def build_folders(emu: ChaosEmulator, args: argparse.Namespace) -> dict[str, Folder]:
    specs = plan(args.images, args.big, args.seed)
    main_root, main_files = _folder(emu, "Chaos main", specs)
    nasty_root, nasty_files = _folder(emu, "Chaos nasty", specs)
    poison = _extra_file(emu, nasty_root, POISON_NAME, seed=11)
    nul = _extra_file(emu, nasty_root, NUL_NAME, seed=12)
    emu.poison(poison.id)
    probe_root, probe_files = _folder(emu, "Chaos probe", plan(args.probe_images, 0, args.seed + 1))
    return {
        "main": Folder(main_root, _link(main_root), main_files),
        "nasty": Folder(nasty_root, _link(nasty_root), [*nasty_files, nul], [poison]),
        "probe": Folder(probe_root, _link(probe_root), probe_files),
    }


async def serve(args: argparse.Namespace) -> None:
    started = time.monotonic()
    emu = ChaosEmulator(api_keys={API_KEY}, seed=args.seed, latency_s=args.latency_s)
    folders = await asyncio.to_thread(build_folders, emu, args)
    runner, api_url = await start_emulator(emu, "127.0.0.1", args.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        control_url = api_url.removesuffix(API_PREFIX) + "/chaos"
        DriveManifest(api_url, API_KEY, control_url, args.latency_s, folders).write(args.manifest)
        sizes = {name: len(f.files) + len(f.failing) for name, f in folders.items()}
        print(f"chaos emulator: folders {sizes}, ready in {time.monotonic() - started:.1f} s at {api_url}", flush=True)
        await stop.wait()
    finally:
        await runner.cleanup()


# --- the harness side ------------------------------------------------------------------------------


async def set_faults(control_url: str, rate: float) -> dict[str, object]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
        session.post(f"{control_url}/faults", json={"rate": rate}) as response,
    ):
        response.raise_for_status()
        answer: dict[str, object] = await response.json()
        return answer


async def stats(control_url: str) -> dict[str, object]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
        session.get(f"{control_url}/stats") as response,
    ):
        response.raise_for_status()
        answer: dict[str, object] = await response.json()
        return answer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--big", type=int, default=4, help="files over the 8 MiB part size among --images")
    parser.add_argument("--probe-images", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--latency-s", type=float, default=0.03)
    parser.add_argument("--port", type=int, default=0)
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
