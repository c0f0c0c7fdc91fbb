"""An emulator in its own process: `python -m bench.emulator_proc --manifest PATH [--source dropbox] [...]`.

Builds a deterministic folder tree from a seed (bench.workload), computes every file's size and
checksums up front (so no contender pays for them), serves it on 127.0.0.1 with added latency per
request and an optional per-connection bandwidth limit, writes the manifest, and runs until SIGTERM/SIGINT.

`--source google_drive` (the default) serves it as a public Drive folder (fotoowl.testing.drive_emulator),
`--source dropbox` as a shared Dropbox folder link (fotoowl.testing.dropbox_emulator): the same names,
folders, sizes and bytes, so the two manifests list the same files with the same MD5s under each
source's own ids.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import signal
import time
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from bench import workload
from bench.manifest import Manifest, ManifestFile
from fotoowl.testing import drive_emulator, dropbox_emulator
from fotoowl.testing.drive_emulator import DriveEmulator
from fotoowl.testing.dropbox_emulator import DropboxEmulator, DropboxFault
from fotoowl.testing.images import FORMAT_MIME_TYPES, Content

API_KEY = "bench-key"
DROPBOX_APP_KEY = "bench-app-key"
DROPBOX_APP_SECRET = "bench-app-secret"
SOURCES = ("google_drive", "dropbox")
_HASH_BLOCK_BYTES = 4 * 1024 * 1024  # Dropbox's content_hash block


def build_tree(
    add_folder: Callable[[str | None, str], str],
    add_image: Callable[..., str],
    specs: list[workload.FileSpec],
    profile: workload.Profile,
) -> tuple[str, list[str]]:
    """Add the tree to an emulator (either source's add_folder/add_image); returns the root id and the
    file ids in spec order."""
    root = add_folder(None, workload.ROOT_NAME)
    folder_ids = {"": root}

    def folder(path: str) -> str:
        if path not in folder_ids:
            parent, _, name = path.rpartition("/")
            folder_ids[path] = add_folder(folder(parent), name)
        return folder_ids[path]

    ids = []
    for spec in specs:
        head = workload.head_spec(profile, spec.variant)
        ids.append(
            add_image(
                folder(spec.folder),
                spec.name,
                fmt=head.fmt,
                width=head.width,
                height=head.height,
                size_bytes=spec.size_bytes,
                image_seed=head.image_seed,
            )
        )
    return root, ids


def build(emu: DriveEmulator, specs: list[workload.FileSpec], profile: workload.Profile) -> tuple[str, list[str]]:
    """The tree in a Drive emulator (kept for chaos/emulator.py); returns the root id and the file ids."""
    return build_tree(emu.add_folder, emu.add_image, specs, profile)


def _manifest_file(
    spec: workload.FileSpec, file_id: str, size: int, md5: str, profile: workload.Profile
) -> ManifestFile:
    fmt = workload.head_spec(profile, spec.variant).fmt
    return ManifestFile(file_id, spec.name, spec.folder, size, md5, FORMAT_MIME_TYPES[fmt])


def drive_files(
    emu: DriveEmulator, specs: list[workload.FileSpec], ids: list[str], profile: workload.Profile
) -> list[ManifestFile]:
    files = []
    for spec, file_id in zip(specs, ids, strict=True):
        content = emu.items[file_id].content
        assert content is not None
        # Computing the MD5 here caches it: listing the folder later costs the emulator nothing.
        files.append(_manifest_file(spec, file_id, content.size_bytes, content.md5_hex, profile))
    return files


manifest_files = drive_files  # the name chaos/emulator.py imports


def md5_and_content_hash(content: Content) -> tuple[str, str]:
    """MD5 and Dropbox's content_hash (SHA-256 of the SHA-256s of each 4 MiB block) in one pass."""
    md5 = hashlib.md5(usedforsecurity=False)
    block_digests = []
    size = content.size_bytes
    for start in range(0, size, _HASH_BLOCK_BYTES):
        block = b"".join(content.iter_bytes(start, min(size, start + _HASH_BLOCK_BYTES), _HASH_BLOCK_BYTES))
        md5.update(block)
        block_digests.append(hashlib.sha256(block).digest())
    return md5.hexdigest(), hashlib.sha256(b"".join(block_digests)).hexdigest()


def dropbox_files(
    emu: DropboxEmulator, specs: list[workload.FileSpec], ids: list[str], profile: workload.Profile
) -> list[ManifestFile]:
    files = []
    for spec, file_id in zip(specs, ids, strict=True):
        node = emu.nodes[file_id]
        assert node.content is not None
        md5, node.content_hash = md5_and_content_hash(node.content)
        # With the content hash set, listing pages and downloads cost the emulator no hashing.
        files.append(_manifest_file(spec, file_id, node.content.size_bytes, md5, profile))
    return files


async def start_drive(
    args: argparse.Namespace, specs: list[workload.FileSpec], bandwidth: float | None
) -> tuple[web.AppRunner, Manifest]:
    emu = DriveEmulator(api_keys={API_KEY}, seed=args.seed, latency_s=args.latency_s, bandwidth_bytes_per_s=bandwidth)
    root, ids = build(emu, specs, args.profile)
    files = await asyncio.to_thread(drive_files, emu, specs, ids, args.profile)
    runner, api_url = await drive_emulator.start_emulator(emu, "127.0.0.1", args.port)
    return runner, Manifest(
        api_url=api_url,
        api_key=API_KEY,
        root_id=root,
        folder_link=f"https://drive.google.com/drive/folders/{root}",
        latency_s=args.latency_s,
        bandwidth_bytes_per_s=bandwidth,
        files=files,
    )


async def start_dropbox(
    args: argparse.Namespace, specs: list[workload.FileSpec], bandwidth: float | None
) -> tuple[web.AppRunner, Manifest]:
    # The latency is added to every request, as the Drive emulator's is: listing pages and downloads.
    emu = DropboxEmulator(
        app_key=DROPBOX_APP_KEY, app_secret=DROPBOX_APP_SECRET, seed=args.seed, latency_s=args.latency_s
    )
    if bandwidth:
        emu.inject(None, DropboxFault.slow(bandwidth), times=None, route="download")
    root, ids = build_tree(emu.add_folder, emu.add_image, specs, args.profile)
    link = emu.share(root)
    files = await asyncio.to_thread(dropbox_files, emu, specs, ids, args.profile)
    runner, base_url = await dropbox_emulator.start_emulator(emu, "127.0.0.1", args.port)
    return runner, Manifest(
        api_url=base_url,
        api_key=DROPBOX_APP_KEY,
        root_id=root,
        folder_link=link.url,
        latency_s=args.latency_s,
        bandwidth_bytes_per_s=bandwidth,
        files=files,
        source="dropbox",
        api_secret=DROPBOX_APP_SECRET,
    )


async def serve(args: argparse.Namespace) -> None:
    started = time.monotonic()
    specs = workload.plan(args.profile, n_images=args.images, seed=args.seed, size_bytes=args.size_bytes)
    bandwidth = args.bandwidth_bytes_per_s or None
    start = start_dropbox if args.source == "dropbox" else start_drive
    runner, manifest = await start(args, specs, bandwidth)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        manifest.write(args.manifest)
        print(
            f"{args.source} emulator: {len(manifest.files)} files, {manifest.total_bytes:,} bytes, ready in "
            f"{time.monotonic() - started:.1f} s at {manifest.api_url}",
            flush=True,
        )
        await stop.wait()
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--source", choices=SOURCES, default="google_drive")
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
