"""The Drive emulator in its own process: `python -m bench.emulator_proc --manifest PATH [...]`.

Builds a deterministic folder tree from a seed (bench.workload), computes every file's size and
MD5 up front (so no contender pays for it), serves it on 127.0.0.1 with added latency per request
and an optional per-connection bandwidth limit, writes the manifest, and runs until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import time
from pathlib import Path

from bench import workload
from bench.manifest import Manifest, ManifestFile
from fotoowl.testing.drive_emulator import DriveEmulator, start_emulator
from fotoowl.testing.images import FORMAT_MIME_TYPES

API_KEY = "bench-key"


def build(emu: DriveEmulator, specs: list[workload.FileSpec], profile: workload.Profile) -> tuple[str, list[str]]:
    """Add the tree to the emulator; returns the root id and the file ids in spec order."""
    root = emu.add_folder(None, workload.ROOT_NAME)
    folder_ids = {"": root}

    def folder(path: str) -> str:
        if path not in folder_ids:
            parent, _, name = path.rpartition("/")
            folder_ids[path] = emu.add_folder(folder(parent), name)
        return folder_ids[path]

    ids = []
    for spec in specs:
        head = workload.head_spec(profile, spec.variant)
        ids.append(emu.add_image(folder(spec.folder), spec.name, fmt=head.fmt, width=head.width,
                                 height=head.height, size_bytes=spec.size_bytes, image_seed=head.image_seed))
    return root, ids


def manifest_files(emu: DriveEmulator, specs: list[workload.FileSpec], ids: list[str],
                   profile: workload.Profile) -> list[ManifestFile]:
    files = []
    for spec, file_id in zip(specs, ids, strict=True):
        content = emu.items[file_id].content
        assert content is not None
        fmt = workload.head_spec(profile, spec.variant).fmt
        # Computing the MD5 here caches it: listing the folder later costs the emulator nothing.
        files.append(ManifestFile(file_id, spec.name, spec.folder, content.size_bytes, content.md5_hex,
                                  FORMAT_MIME_TYPES[fmt]))
    return files


async def serve(args: argparse.Namespace) -> None:
    started = time.monotonic()
    specs = workload.plan(args.profile, n_images=args.images, seed=args.seed, size_bytes=args.size_bytes)
    bandwidth = args.bandwidth_bytes_per_s or None
    emu = DriveEmulator(api_keys={API_KEY}, seed=args.seed, latency_s=args.latency_s,
                        bandwidth_bytes_per_s=bandwidth)
    root, ids = build(emu, specs, args.profile)
    files = await asyncio.to_thread(manifest_files, emu, specs, ids, args.profile)
    runner, api_url = await start_emulator(emu, "127.0.0.1", args.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        Manifest(api_url=api_url, api_key=API_KEY, root_id=root,
                 folder_link=f"https://drive.google.com/drive/folders/{root}", latency_s=args.latency_s,
                 bandwidth_bytes_per_s=bandwidth, files=files).write(args.manifest)
        print(f"emulator: {len(files)} files, {sum(f.size for f in files):,} bytes, ready in "
              f"{time.monotonic() - started:.1f} s at {api_url}", flush=True)
        await stop.wait()
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--profile", choices=["mixed", "tiny", "single", "photos"], default="mixed")
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--size-bytes", type=int, default=0, help="the file size for --profile single")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--latency-s", type=float, default=0.05)
    parser.add_argument("--bandwidth-bytes-per-s", type=float, default=0.0, help="per connection; 0 = none")
    parser.add_argument("--port", type=int, default=0)
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
