"""The preview spool: a copy leaves its original on this machine, and its preview is made from there
instead of reading the original back from storage; every failure of the spool falls back to storage."""

from __future__ import annotations

import os
import time
from pathlib import Path

from conftest import RunningEmulator
from fotoowl.config import AppSettings
from fotoowl.metrics import preview_originals_read
from fotoowl.pipeline.preview_spool import PreviewSpool, open_spool
from fotoowl.testing.drive_emulator.faults import Fault
from test_previews_stage import import_by_hand, make_all_previews, process_without_lane


def shoot(drive: RunningEmulator, images: int) -> str:
    root = drive.emu.add_folder(None, "Shoot")
    for n in range(images):
        drive.emu.add_image(root, f"IMG_{n}.jpg", width=800, height=600)
    return root


def originals_read_since(before: dict[str, int]) -> tuple[int, int]:
    """(from the spool, from storage) since `before` (a preview_originals_read())."""
    after = preview_originals_read()
    return after["spool"] - before["spool"], after["storage"] - before["storage"]


def spool_files(settings: AppSettings) -> list[Path]:
    root = Path(settings.preview_spool_dir)
    return sorted(root.iterdir()) if root.exists() else []


# --- the copy hands its original over ---------------------------------------------------------------


async def test_a_preview_is_made_from_the_original_its_copy_left_not_from_storage(
    app_settings: AppSettings, drive: RunningEmulator
) -> None:
    """Before: every preview read its original back from storage, as much work again as storing it."""
    root = shoot(drive, 3)
    async with process_without_lane(app_settings) as deps:
        await import_by_hand(deps, root)
        images = await deps.pool.fetch("SELECT storage_key, size FROM images ORDER BY id")
        spooled = spool_files(app_settings)
        assert sorted(p.stat().st_size for p in spooled) == sorted(r["size"] for r in images)
        # Storage no longer has the originals: only the spool can make these previews.
        await deps.storage.delete_many([r["storage_key"] for r in images])
        before = preview_originals_read()
        assert await make_all_previews(deps) == 3
        assert originals_read_since(before) == (3, 0)
        rows = await deps.pool.fetch("SELECT preview_status, thumbnail_key FROM images")
        assert [r["preview_status"] for r in rows] == ["done"] * 3
        for row in rows:
            assert (await deps.storage.read_bytes(row["thumbnail_key"]))[:2] == b"\xff\xd8"
    assert spool_files(app_settings) == []  # taken, then deleted


async def test_a_spooled_original_gone_before_it_is_read_is_read_from_storage(
    app_settings: AppSettings, drive: RunningEmulator
) -> None:
    """Swept, or taken by another lane, between finding it and opening it: not a failed preview."""
    root = shoot(drive, 2)
    async with process_without_lane(app_settings) as deps:
        await import_by_hand(deps, root)
        assert deps.preview_spool is not None
        found = deps.preview_spool.take
        for path in spool_files(app_settings):
            path.unlink()
        # The spool answers as it did a moment before the files went.
        deps.preview_spool.take = lambda key, size: found(key, size) or deps.preview_spool.path(key)  # type: ignore[method-assign,union-attr]
        before = preview_originals_read()
        assert await make_all_previews(deps) == 2
        assert originals_read_since(before) == (0, 2)  # counted where they were read from in the end
        rows = await deps.pool.fetch("SELECT preview_status, preview_attempts FROM images")
        assert [(r["preview_status"], r["preview_attempts"]) for r in rows] == [("done", 1)] * 2


async def test_without_room_in_the_spool_previews_read_the_originals_back(
    app_settings: AppSettings, drive: RunningEmulator
) -> None:
    settings = app_settings.replace(preview_spool_bytes=1)
    root = shoot(drive, 3)
    async with process_without_lane(settings) as deps:
        await import_by_hand(deps, root)
        assert spool_files(settings) == []
        before = preview_originals_read()
        assert await make_all_previews(deps) == 3
        assert originals_read_since(before) == (0, 3)
        statuses = await deps.pool.fetch("SELECT preview_status FROM images")
        assert [r["preview_status"] for r in statuses] == ["done"] * 3


async def test_a_failed_copy_leaves_nothing_in_the_spool(app_settings: AppSettings, drive: RunningEmulator) -> None:
    settings = app_settings.replace(max_attempts=1, drive_max_tries=1)
    root = drive.emu.add_folder(None, "Shoot")
    good = drive.emu.add_image(root, "good.jpg", width=800, height=600)
    cut = drive.emu.add_image(root, "cut.jpg", width=800, height=600)
    drive.emu.inject(cut, Fault.reset(after_bytes=1000), times=None)
    async with process_without_lane(settings) as deps:
        import_id = await import_by_hand(deps, root)
        row = await deps.pool.fetchrow("SELECT imported_count, failed_count FROM imports WHERE id = $1", import_id)
        assert (row["imported_count"], row["failed_count"]) == (1, 1)
        size = await deps.pool.fetchval("SELECT size FROM images WHERE source_id = $1", good)
    assert [p.stat().st_size for p in spool_files(settings)] == [size]  # the good one only, no half file


async def test_a_spool_unusable_as_configured_costs_no_copy_and_no_preview(
    app_settings: AppSettings, drive: RunningEmulator, tmp_path: Path
) -> None:
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("a file where the spool directory should be")
    settings = app_settings.replace(preview_spool_dir=str(blocked))
    root = shoot(drive, 1)
    async with process_without_lane(settings) as deps:
        import_id = await import_by_hand(deps, root)
        assert await deps.pool.fetchval("SELECT imported_count FROM imports WHERE id = $1", import_id) == 1
        assert await make_all_previews(deps) == 1
        assert await deps.pool.fetchval("SELECT preview_status FROM images") == "done"


# --- the spool itself -------------------------------------------------------------------------------


def spool(tmp_path: Path, *, limit_bytes: int = 1000, max_file_bytes: int = 600) -> PreviewSpool:
    return PreviewSpool(tmp_path / "spool", limit_bytes=limit_bytes, max_file_bytes=max_file_bytes, namespace="ns")


def test_a_committed_original_is_taken_whole_and_an_abandoned_one_leaves_nothing(tmp_path: Path) -> None:
    s = spool(tmp_path)
    writer = s.writer("a/key.jpg", 6)
    assert writer is not None
    writer.write(b"abc")
    assert s.take("a/key.jpg", 6) is None  # not committed yet: never half an original
    writer.write(b"def")
    writer.commit()
    taken = s.take("a/key.jpg", 6)
    assert taken is not None and taken.read_bytes() == b"abcdef"
    assert s.take("a/key.jpg", 7) is None  # another size: not this original
    other = s.writer("b.jpg", 3)
    assert other is not None
    other.write(b"xyz")
    other.abandon()
    assert [p.name for p in (tmp_path / "spool").iterdir()] == [taken.name]


def test_the_spool_keeps_to_its_room(tmp_path: Path) -> None:
    s = spool(tmp_path, limit_bytes=1000, max_file_bytes=600)
    assert s.writer("too-big.jpg", 601) is None
    first = s.writer("first.jpg", 0)  # size not known: given up once it outgrows the room
    assert first is not None
    first.write(b"x" * 500)
    first.write(b"x" * 200)
    first.commit()
    assert s.take("first.jpg", 0) is None
    kept = s.writer("kept.jpg", 600)
    assert kept is not None
    kept.write(b"k" * 600)
    kept.commit()
    assert s.writer("no-room.jpg", 500) is None  # 600 of 1,000 held: the scan of the directory says so
    s.discard("kept.jpg")
    time.sleep(1.05)  # the directory is rescanned at most once a second
    assert s.writer("room-again.jpg", 500) is not None


def test_the_sweep_deletes_what_nobody_took(tmp_path: Path) -> None:
    s = spool(tmp_path)
    for name in ("old.jpg", "new.jpg"):
        writer = s.writer(name, 1)
        assert writer is not None
        writer.write(b"x")
        writer.commit()
    stale = s.writer("half.jpg", 2)  # left half-written by a killed process
    assert stale is not None
    stale.write(b"x")
    old_s = time.time() - 3600
    for path in (s.path("old.jpg"), *(tmp_path / "spool").glob("*.part")):
        os.utime(path, (old_s, old_s))
    assert s.sweep(max_age_s=600) == 2
    assert [p.name for p in (tmp_path / "spool").iterdir()] == [s.path("new.jpg").name]


def test_a_spool_directory_others_can_reach_is_not_used(tmp_path: Path) -> None:
    """In a shared tmpfs another local user could make the directory first: to read the originals,
    or to plant files that would become previews."""
    root = tmp_path / "spool"
    root.mkdir(mode=0o777)
    root.chmod(0o777)
    planted = PreviewSpool(root, limit_bytes=100, max_file_bytes=100, namespace="ns")
    planted.path("x.jpg").write_bytes(b"planted")
    assert planted.take("x.jpg", 7) is None
    assert planted.writer("y.jpg", 1) is None
    root.chmod(0o700)
    assert PreviewSpool(root, limit_bytes=100, max_file_bytes=100, namespace="ns").take("x.jpg", 7) is not None


def test_deployments_sharing_a_machine_do_not_share_originals(tmp_path: Path) -> None:
    first = PreviewSpool(tmp_path, limit_bytes=100, max_file_bytes=100, namespace="http://s3-a/bucket")
    second = PreviewSpool(tmp_path, limit_bytes=100, max_file_bytes=100, namespace="http://s3-b/bucket")
    assert first.path("images/x.jpg") != second.path("images/x.jpg")


def test_no_spool_when_previews_or_the_spool_are_off(app_settings: AppSettings) -> None:
    assert open_spool(app_settings) is not None
    assert open_spool(app_settings.replace(thumbnail_px=0)) is None
    assert open_spool(app_settings.replace(preview_spool_bytes=0)) is None
