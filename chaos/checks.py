"""What is checked after every scenario, from the database and from the objects themselves.

Each check reads the real state (rows, objects, multipart uploads), never what fotoowl says about it,
and compares it with the emulator's manifest: the folder's own account of which files exist, their
sizes and MD5s.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from chaos.emulator import Folder
from fotoowl.storage import ObjectNotFound, Storage

READ_CONCURRENCY = 16
MULTIPART_BYTES = 8 * 1024 * 1024


@dataclass
class Verdict:
    images_expected: int = 0
    images_rows: int = 0
    missing: int = 0
    unexpected_rows: int = 0
    duplicate_rows: int = 0
    stray_objects: int = 0
    objects_missing: int = 0
    objects_read: int = 0
    bad_objects: int = 0
    open_multipart: list[str] = field(default_factory=list)
    counters_equal: bool = False
    counter_problems: list[str] = field(default_factory=list)
    failures_ok: bool = True
    failure_problems: list[str] = field(default_factory=list)

    @property
    def exactly_once(self) -> bool:
        return (
            self.images_rows == self.images_expected
            and not self.missing
            and not self.unexpected_rows
            and not self.duplicate_rows
            and not self.stray_objects
            and not self.objects_missing
        )

    def once_text(self) -> str:
        text = f"{self.images_rows}/{self.images_expected}"
        extra = [
            f"{n} {what}"
            for n, what in (
                (self.missing, "missing"),
                (self.unexpected_rows, "unexpected"),
                (self.duplicate_rows, "duplicate rows"),
                (self.objects_missing, "objects missing"),
                (self.stray_objects, "stray objects"),
            )
            if n
        ]
        return ("yes " if self.exactly_once else "**no** ") + text + (f" ({', '.join(extra)})" if extra else "")


async def verify(
    pool: asyncpg.Pool, storage: Storage, prefix: str, import_id: int, folder: Folder, *, sample: int | None
) -> Verdict:
    """Rows, objects and counters of a finished (or abandoned) import against the folder's manifest."""
    verdict = Verdict(images_expected=len(folder.files))
    expected = {f.id: f for f in folder.files}
    rows = await pool.fetch(
        "SELECT google_drive_id, storage_key, size, md5 FROM images WHERE import_id = $1", import_id
    )
    ids = [r["google_drive_id"] for r in rows]
    verdict.images_rows = len(rows)
    verdict.duplicate_rows = len(ids) - len(set(ids))
    verdict.missing = len(set(expected) - set(ids))
    verdict.unexpected_rows = len(set(ids) - set(expected))
    bad: set[str] = {
        r["google_drive_id"]
        for r in rows
        if r["google_drive_id"] in expected
        and (r["size"], r["md5"]) != (expected[r["google_drive_id"]].size, expected[r["google_drive_id"]].md5)
    }
    # Objects: exactly one per image under the import's key space, none left over by a retry.
    keys = {key async for key in storage.list_keys(f"{prefix}google_drive/")}
    row_keys = {r["storage_key"] for r in rows}
    # The prefix is the scenario's own; the probe import's objects are not strays.
    all_keys = {r["storage_key"] for r in await pool.fetch("SELECT storage_key FROM images")}
    verdict.stray_objects = len(keys - all_keys)
    verdict.objects_missing = len(row_keys - keys)
    to_read = [r for r in rows if r["google_drive_id"] in expected and r["storage_key"] in keys]
    if sample is not None and len(to_read) > sample:
        step = len(to_read) / sample
        chosen = {int(i * step) for i in range(sample)}
        # Every multipart object, and every file with an odd name, is read whatever the sample.
        to_read = [
            r
            for index, r in enumerate(to_read)
            if index in chosen
            or r["size"] > MULTIPART_BYTES
            or not re.fullmatch(r"IMG_\d+\.jpg", expected[r["google_drive_id"]].name)
        ]
    bad |= await _read_back(storage, to_read, expected)
    verdict.objects_read = len(to_read)
    verdict.bad_objects = len(bad)
    verdict.open_multipart = [u.key for u in await storage.open_uploads(prefix)]
    await _counters(pool, import_id, folder, verdict)
    await _failures(pool, import_id, folder, verdict)
    return verdict


async def _read_back(storage: Storage, rows: list[asyncpg.Record], expected: dict[str, Any]) -> set[str]:
    semaphore = asyncio.Semaphore(READ_CONCURRENCY)
    bad: set[str] = set()

    async def one(row: asyncpg.Record) -> None:
        async with semaphore:
            digest, size = hashlib.md5(), 0
            try:
                async for chunk in storage.stream(row["storage_key"], chunk_size_bytes=1 << 20):
                    digest.update(chunk)
                    size += len(chunk)
            except ObjectNotFound:
                bad.add(row["google_drive_id"])
                return
            want = expected[row["google_drive_id"]]
            if (size, digest.hexdigest()) != (want.size, want.md5):
                bad.add(row["google_drive_id"])

    await asyncio.gather(*(one(row) for row in rows))
    return bad


async def _counters(pool: asyncpg.Pool, import_id: int, folder: Folder, verdict: Verdict) -> None:
    """The import's counters against the rows they count, and `found` against the folder."""
    row = await pool.fetchrow("SELECT * FROM imports WHERE id = $1", import_id)
    items = await pool.fetchrow(
        """SELECT count(*) FILTER (WHERE status <> 'removed') AS found, count(*) FILTER (WHERE status = 'done') AS done,
                  count(*) FILTER (WHERE status = 'failed') AS failed,
                  count(*) FILTER (WHERE status = 'skipped') AS skipped
           FROM import_items WHERE import_id = $1""",
        import_id,
    )
    images = await pool.fetchrow(
        "SELECT count(*) AS n, coalesce(sum(size), 0) AS bytes FROM images WHERE import_id = $1", import_id
    )
    assert row is not None and items is not None and images is not None
    pairs = [
        ("found_count", row["found_count"], "import items", items["found"]),
        ("found_count", row["found_count"], "files in the folder", folder.found),
        # Copied inside storage (dedupe) or downloaded, each done item is one image row.
        ("imported + deduplicated", row["imported_count"] + row["deduplicated_count"], "image rows", images["n"]),
        ("imported + deduplicated", row["imported_count"] + row["deduplicated_count"], "items done", items["done"]),
        ("failed_count", row["failed_count"], "items failed", items["failed"]),
        ("skipped_count", row["skipped_count"], "items skipped", items["skipped"]),
        ("bytes_imported", row["bytes_imported"], "bytes of the image rows", images["bytes"]),
    ]
    verdict.counter_problems = [
        f"{name} {value} != {what} {actual}" for name, value, what, actual in pairs if value != actual
    ]
    verdict.counters_equal = not verdict.counter_problems


async def _failures(pool: asyncpg.Pool, import_id: int, folder: Folder, verdict: Verdict) -> None:
    """Only the folder's expected failures may fail, and each with a reason."""
    failed = await pool.fetch(
        "SELECT file_id, error_code, error_message FROM import_items WHERE import_id = $1 AND status = 'failed'",
        import_id,
    )
    expected = {f.id for f in folder.failing}
    got = {r["file_id"]: r for r in failed}
    for file_id in expected - set(got):
        verdict.failure_problems.append(f"the poison file {file_id} did not end failed")
    for file_id in expected & set(got):
        if not got[file_id]["error_code"] or not got[file_id]["error_message"]:
            verdict.failure_problems.append(f"the poison file {file_id} failed without a reason")
    unexpected = set(got) - expected
    if unexpected:
        verdict.failure_problems.append(f"{len(unexpected)} files failed that should have been imported")
    verdict.failures_ok = not verdict.failure_problems


# --- evidence for whoever has to fix a failure ---------------------------------------------------------


async def evidence(pool: asyncpg.Pool, import_id: int) -> list[str]:
    """Item states, error codes and stuck items of an import, as short lines."""
    lines = []
    row = await pool.fetchrow("SELECT * FROM imports WHERE id = $1", import_id)
    if row is not None:
        lines.append(
            f"import: status {row['status']}, found {row['found_count']}, imported {row['imported_count']}, "
            f"failed {row['failed_count']}, skipped {row['skipped_count']}"
            + (f", error {row['error_code']}: {row['error_message']}" if row["error_code"] else "")
        )
    states = await pool.fetch(
        """SELECT status, coalesce(error_code, '-') AS code, count(*) AS n, max(attempts) AS attempts
           FROM import_items WHERE import_id = $1 GROUP BY 1, 2 ORDER BY 3 DESC""",
        import_id,
    )
    if states:
        lines.append(
            "items: " + "; ".join(f"{s['status']}/{s['code']} x{s['n']} (max attempts {s['attempts']})" for s in states)
        )
    messages = await pool.fetch(
        """SELECT error_code, min(error_message) AS message, count(*) AS n FROM import_items
           WHERE import_id = $1 AND error_code IS NOT NULL GROUP BY 1 ORDER BY 3 DESC LIMIT 4""",
        import_id,
    )
    lines += [f"error {m['error_code']} x{m['n']}: {_short(m['message'])}" for m in messages]
    stuck = await pool.fetchrow(
        """SELECT count(*) AS n, min(lease_expires_at - now()) AS soonest, max(lease_expires_at - now()) AS latest
           FROM import_items WHERE import_id = $1 AND status = 'in_progress'""",
        import_id,
    )
    if stuck is not None and stuck["n"]:
        lines.append(
            f"{stuck['n']} items still in_progress; their leases expire in {stuck['soonest']} to {stuck['latest']}"
        )
    return lines


def _short(text: str | None, limit: int = 220) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[:limit] + "..."


def last_traceback(log_text: str, max_lines: int = 16) -> str:
    """The last traceback in a log: its frames in fotoowl's own code (where a fix would go), the
    innermost frame and the exception line, or ''."""
    lines = log_text.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("Traceback (most recent call last)")]
    if not starts:
        return ""
    block = lines[starts[-1] :]
    end = next(
        (
            i
            for i, line in enumerate(block[1:], 1)
            if line
            and not line.startswith((" ", "Traceback"))
            and not line.startswith(("During handling", "The above exception"))
        ),
        len(block) - 1,
    )
    block, exception = block[1:end], block[end]
    frames = [i for i, line in enumerate(block) if line.startswith('  File "')]
    keep = [i for i in frames if "/fotoowl/" in block[i]][-(max_lines // 2 - 1) :]
    if frames and frames[-1] not in keep:
        keep.append(frames[-1])
    shown = ["Traceback (most recent call last):"]
    for n, i in enumerate(keep):
        if n and keep[n - 1] != frames[frames.index(i) - 1]:
            shown.append("  ...")
        shown += [block[i]] + (
            [block[i + 1].rstrip()] if i + 1 < len(block) and not block[i + 1].startswith('  File "') else []
        )
    return "\n".join([*shown, exception])


def last_error_line(log_text: str) -> str:
    errors = [line for line in log_text.splitlines() if " ERROR " in line]
    return _short(errors[-1], 300) if errors else ""


async def odd_names(pool: asyncpg.Pool, import_id: int, folder: Folder) -> list[str]:
    """How files with unusual names (a NUL byte...) were recorded: the name may be cleaned, not lost."""
    odd = [f for f in folder.files + folder.failing if not re.fullmatch(r"[\w. -]+", f.name)]
    lines = []
    for f in odd:
        row = await pool.fetchrow(
            """SELECT i.status, i.name AS item_name, g.name AS image_name FROM import_items i
               LEFT JOIN images g ON g.google_drive_id = i.file_id WHERE i.import_id = $1 AND i.file_id = $2""",
            import_id,
            f.id,
        )
        where = (
            (
                f"item {row['status']}, named {row['item_name']!r}; image row "
                + (repr(row["image_name"]) if row["image_name"] is not None else "none")
            )
            if row
            else "no item row"
        )
        lines.append(f"file {f.name!r} ({f.id}): {where}")
    return lines
