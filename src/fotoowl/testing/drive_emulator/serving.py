"""Running it: serving an emulator over HTTP, and a ready-made demo tree (`fotoowl dev`)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from aiohttp import web

from fotoowl.testing.drive_emulator.app import API_PREFIX, DriveEmulator
from fotoowl.testing.drive_emulator.model import _EPOCH, DOCUMENT_MIME_TYPE, SPREADSHEET_MIME_TYPE

DEMO_API_KEY = "emulator-key"


async def start_emulator(emu: DriveEmulator, host: str = "127.0.0.1", port: int = 0) -> tuple[web.AppRunner, str]:
    """Serve `emu`; returns the runner (call `cleanup()`) and the api_url for DriveClient."""
    # No access log: request lines carry the API key.
    runner = web.AppRunner(emu.make_app(), access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound_port = runner.addresses[0][1]
    shown_host = f"[{host}]" if ":" in host else host
    return runner, f"http://{shown_host}:{bound_port}{API_PREFIX}"


@asynccontextmanager
async def running_emulator(emu: DriveEmulator, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
    runner, api_url = await start_emulator(emu, host, port)
    try:
        yield api_url
    finally:
        await runner.cleanup()


# ---------------------------------------------------------------------------------------------------
# A ready-made tree
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DemoTree:
    root_id: str
    link: str
    expected_image_ids: frozenset[str]  # what a recursive walk yields as DriveFile
    expected_skipped: Mapping[str, str]  # item id -> reason code, for a recursive walk
    special: Mapping[str, str]  # role -> item id, for tests that need one particular item


_CAMERAS = (("Canon", "Canon EOS R5"), ("NIKON CORPORATION", "NIKON Z 6_2"), ("SONY", "ILCE-7M4"), (None, None))
_FORMATS = (("jpeg", "jpg", 0.7), ("png", "png", 0.15), ("webp", "webp", 0.15))


def _pick_size(rng: random.Random, size_mix: Sequence[tuple[float, int | None]]) -> int | None:
    weights = [weight for weight, _ in size_mix]
    return rng.choices([size for _, size in size_mix], weights=weights)[0]


def build_demo_tree(
    emu: DriveEmulator,
    n_images: int,
    *,
    seed: int = 0,
    nested: bool = True,
    size_mix: Sequence[tuple[float, int | None]] = ((1.0, None),),
) -> DemoTree:
    """A folder with `n_images` generated images plus every awkward case an import meets.

    `size_mix` is (weight, padded size in bytes or None for the natural image size) pairs, e.g.
    ((0.95, None), (0.05, 30 * 2**20)) pads one image in twenty to 30 MiB.
    Besides the images: duplicate, unicode and hostile names, a zero-byte file, a "JPEG" that is
    text, RAW and HEIC types, Google-native and non-image files, trashed items, shortcuts to files
    inside and outside the tree, a dangling shortcut and, when nested, subfolders, a folder needing
    its resource key, a folder shortcut to a folder outside the tree and one looping back to the root.
    """
    rng = random.Random(seed)
    images: set[str] = set()
    skipped: dict[str, str] = {}
    special: dict[str, str] = {}
    root = emu.add_folder(None, "Fotoowl demo shoot")
    folders = [root]
    regular: list[str] = []

    def image(parent: str, name: str, **kwargs: Any) -> str:
        fmt = kwargs.pop("fmt", "jpeg")
        make, model = rng.choice(_CAMERAS)
        taken = (_EPOCH + timedelta(seconds=rng.randrange(86400 * 30))).strftime("%Y:%m:%d %H:%M:%S")
        item_id = emu.add_image(
            parent,
            name,
            fmt=fmt,
            taken_time=taken,
            camera_make=make,
            camera_model=model,
            image_seed=rng.getrandbits(32),
            **kwargs,
        )
        images.add(item_id)
        return item_id

    if nested:
        day1 = emu.add_folder(root, "Day 1 (Ceremony)")
        portraits = emu.add_folder(day1, "Portraits")
        day2 = emu.add_folder(root, "Day 2", resource_key=True)
        unicode_folder = emu.add_folder(root, "Фото 写真 📷")
        hostile_folder = emu.add_folder(root, "../escape")
        folders += [day1, portraits, day2, unicode_folder, hostile_folder]
        special.update(day1=day1, portraits=portraits, day2=day2, keyed_folder=day2)
        trashed_folder = emu.add_folder(root, "Old stuff")
        emu.add_image(trashed_folder, "forgotten.jpg")
        emu.trash(trashed_folder)
        outside = emu.add_folder(None, "Shared elsewhere")
        special["outside_image"] = image(outside, "from-elsewhere.jpg")
        special["folder_shortcut"] = emu.add_shortcut(day2, "Shared elsewhere (shortcut)", outside)
        special["cycle_shortcut"] = emu.add_shortcut(portraits, "Back to the start", root)

    fmt_choices = [(fmt, ext) for fmt, ext, _ in _FORMATS]
    fmt_weights = [weight for _, _, weight in _FORMATS]
    for index in range(n_images):
        fmt, ext = rng.choices(fmt_choices, weights=fmt_weights)[0]
        regular.append(
            image(
                folders[index % len(folders)],
                f"IMG_{index + 1:04d}.{ext}",
                fmt=fmt,
                size_bytes=_pick_size(rng, size_mix),
            )
        )

    special["duplicate_name"] = image(root, "IMG_0001.jpg")
    for name in ("../x.jpg", "<script>alert(1)</script>.png", 'it\'s "quoted" & more.jpg', "\u202egpj.exe"):
        image(root, name, fmt="png" if name.endswith(".png") else "jpeg")
    special["unicode_name"] = image(root, "Café ☕ été.jpg")
    image(root, "写真.webp", fmt="webp")
    special["raw_by_type"] = image(root, "DSC_0001.NEF", mime_type="image/x-nikon-nef")
    special["raw_by_extension"] = image(root, "IMG_0002.CR2", mime_type="application/octet-stream")
    special["heic"] = image(root, "IMG_0003.HEIC", mime_type="image/heic")
    special["keyed_image"] = image(root, "old-link-share.jpg", resource_key=True)
    special["zero_byte"] = emu.add_file(root, "empty.jpg", "image/jpeg", b"")
    special["not_really_image"] = emu.add_file(root, "not-really.jpg", "image/jpeg", b"This is text, not a JPEG.\n")
    images.update((special["zero_byte"], special["not_really_image"]))

    for name, mime_type in (("Shot list", DOCUMENT_MIME_TYPE), ("Invoices", SPREADSHEET_MIME_TYPE)):
        skipped[emu.add_native(root, name, mime_type)] = "google_native"
    skipped[emu.add_file(root, "notes.txt", "text/plain", b"Bring spare batteries.\n")] = "not_image"
    skipped[emu.add_file(root, "clip.mp4", "video/mp4", b"\x00\x00\x00\x18ftypmp42")] = "not_image"

    trashed_image = emu.add_image(root, "deleted.jpg")
    emu.trash(trashed_image)
    special["trashed_image"] = trashed_image

    # The target is listed (in Day 1) before the folder holding the shortcut: it keeps its own path.
    inside_target = regular[1] if len(regular) > 1 else special["duplicate_name"]
    shortcut_parent = folders[-1]
    special["file_shortcut_inside"] = emu.add_shortcut(shortcut_parent, "shortcut-to-inside.jpg", inside_target)
    loose = emu.add_image(None, "loose-outside.jpg", image_seed=rng.getrandbits(32))
    images.add(loose)
    special["file_shortcut_outside"] = emu.add_shortcut(shortcut_parent, "shortcut-to-outside.jpg", loose)
    gone = emu.add_image(None, "gone.jpg")
    dangling = emu.add_shortcut(root, "dangling.jpg", gone)
    emu.remove(gone)
    skipped[dangling] = "dangling_shortcut"
    special["dangling_shortcut"] = dangling

    link = f"https://drive.google.com/drive/folders/{root}?usp=sharing"
    return DemoTree(root, link, frozenset(images), skipped, special)


async def serve_demo(
    host: str = "127.0.0.1",
    port: int = 8765,
    n_images: int = 200,
    seed: int = 0,
    *,
    api_key: str = DEMO_API_KEY,
    latency_s: float = 0.0,
) -> None:
    """Serve a demo tree until cancelled, printing what to configure."""
    emu = DriveEmulator(api_keys=frozenset({api_key}), seed=seed, latency_s=latency_s)
    tree = build_demo_tree(emu, n_images, seed=seed)
    runner, api_url = await start_emulator(emu, host, port)
    try:
        print(f"Drive emulator serving {len(tree.expected_image_ids)} images", flush=True)
        print(f"  API URL:     {api_url}", flush=True)
        print(f"  API key:     {api_key}", flush=True)
        print(f"  Folder link: {tree.link}", flush=True)
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
