"""A gallery of a million images, COPYed into a fresh, migrated database in a minute or two.

Imports are photo shoots of very different sizes (log-normal, a few of 20,000+), from two sources,
each with its own camera (file names like IMG_1234.JPG, DSC01234.ARW, DSCF1234.RAF, 6-digit
Lightroom exports) and a folder tree from a few templates (weddings, conferences, sports, studio
work), half of them under a folder of their own ("2023-06-17 Okafor-Lindqvist Wedding/Ceremony"):
some folder names recur in hundreds of imports, thousands occur once. Film scans (TIFF) exist only
in the oldest imports, so some filters match many rows that are all far from the newest ids: the
case that walking the id index backwards handles worst. A few rows are planted for the query cases
(one unique name, three GIFs). Every image has its import item (done) and some imports have
failures, as an import leaves them.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import asyncpg

UNIQUE_NAME = "Kyoto_sunset_panorama_final.jpg"  # the one row `q=sunset_panorama` finds
GIF_ROWS = 3
OLD_IMPORTS = 40  # film scans (image/tiff, folder "Film Scans") only among these
_START = datetime(2024, 1, 1, tzinfo=UTC)
_SPAN = timedelta(days=700)

_TREES: dict[str, tuple[str, ...]] = {
    "wedding": (
        "Getting Ready",
        "Ceremony",
        "Ceremony/Camera A",
        "Ceremony/Camera B",
        "Portraits",
        "Portraits/Family",
        "Reception",
        "Reception/Speeches",
        "Reception/Dance Floor",
    ),
    "conference": ("Day 1", "Day 1/Keynote", "Day 1/Sessions", "Day 2", "Day 2/Sessions", "Day 2/Expo", "Headshots"),
    "sports": ("Warm-up", "First Half", "Second Half", "Celebrations", "Team Photos"),
    "studio": ("", "Raw", "Selects", "Selects/Retouched", "Exports/Web", "Exports/Print"),
    "scans": ("Film Scans", *(f"Film Scans/Roll {n:02d}" for n in range(1, 13))),
}
_KINDS = (("wedding", 40), ("conference", 20), ("sports", 15), ("studio", 25))
_NAMES = """
Okafor Lindqvist Tanaka Moreau Silva Kowalski Nguyen Haddad Fischer Rossi Kaur Murphy Novak Costa Ivanova
Mensah Larsen Duarte Sato Brennan Achebe Varga Quispe Holm
""".split()  # noqa: SIM905
_EVENTS = ("Wedding", "Summit", "Cup Final", "Lookbook", "Gala", "Retreat", "Launch", "Reunion")
# (camera, weight): how its files are named and typed.
_CAMERAS = (("canon", 30), ("nikon", 15), ("sony", 15), ("fuji", 10), ("iphone", 10), ("export", 15), ("lr", 5))
_RAW = {
    "canon": ("CR2", "image/x-canon-cr2"),
    "nikon": ("NEF", "image/x-nikon-nef"),
    "sony": ("ARW", "image/x-sony-arw"),
    "fuji": ("RAF", "image/x-fuji-raf"),
}


@dataclass
class ImportPlan:
    number: int  # its id in a fresh database (imports are COPYed in this order)
    source: str
    size: int  # images
    failed: int  # failed items on top of the images
    kind: str
    camera: str
    title: str  # "2023-06-17 Okafor-Lindqvist Wedding"
    nested: bool  # every folder under `title`
    created: datetime
    folders: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class SeedFacts:
    """What the query cases need to know about the seeded data."""

    images: int
    imports: int
    biggest_import: int  # id of the import with the most images
    newest_import: int
    old_small_import: int  # an old import of a few hundred images
    rare_folder: str  # one import's own folder (a few hundred to a few thousand rows)
    first_id: int
    last_id: int


def _choose(rng: random.Random, weighted: tuple[tuple[str, int], ...]) -> str:
    return rng.choices([name for name, _ in weighted], weights=[w for _, w in weighted])[0]


def plan_imports(n_images: int, n_imports: int, seed: int) -> list[ImportPlan]:
    rng = random.Random(seed)
    weights = [rng.lognormvariate(0.0, 1.0) for _ in range(n_imports)]
    scale = n_images / sum(weights)
    sizes = [max(20, int(w * scale)) for w in weights]
    sizes[-1] += n_images - sum(sizes)  # exact total; the last import absorbs the rounding
    if sizes[-1] < 20:  # pragma: no cover - only with absurd arguments
        raise ValueError("too few images for that many imports")
    plans = []
    for number, size in enumerate(sizes, start=1):
        kind = "scans" if number <= OLD_IMPORTS and rng.random() < 0.5 else _choose(rng, _KINDS)
        day = _START + _SPAN * (number / n_imports)
        a, b = rng.sample(_NAMES, 2)
        title = f"{day:%Y-%m-%d} {a}-{b} {rng.choice(_EVENTS)}"
        nested = rng.random() < 0.5
        tree = _TREES[kind]
        folders = [f"{title}/{f}" if f else title for f in tree] if nested else list(tree)
        plans.append(
            ImportPlan(
                number=number,
                source="dropbox" if rng.random() < 0.25 else "google_drive",
                size=size,
                failed=rng.randint(1, 12) if rng.random() < 0.3 else 0,
                kind=kind,
                camera="scanner" if kind == "scans" else _choose(rng, _CAMERAS),
                title=title,
                nested=nested,
                created=day,
                folders=folders,
            )
        )
    return plans


def _file_name(camera: str, counter: int, slug: str, rng: random.Random) -> tuple[str, str]:
    """(name, mime type) of one file from this camera, the `counter`-th of its import."""
    if camera == "scanner":
        return f"Scan_{counter:05d}.tif", "image/tiff"
    if camera == "lr":
        return f"IMG_{counter:06d}.jpg", "image/jpeg"
    if camera == "export":
        if rng.random() < 0.03:
            return f"{slug}-{counter:04d}.webp", "image/webp"
        return f"{slug}-{counter:04d}.jpg", "image/jpeg"
    number = (counter - 1) % 9999 + 1  # camera counters wrap at 9999
    if camera == "iphone":
        if rng.random() < 0.04:
            return f"IMG_{number:04d}.PNG", "image/png"
        return f"IMG_{number:04d}.HEIC", "image/heic"
    stem = {"canon": f"IMG_{number:04d}", "nikon": f"DSC_{number:04d}", "sony": f"DSC{number:05d}"}.get(
        camera, f"DSCF{number:04d}"
    )
    if rng.random() < 0.12:
        ext, mime = _RAW[camera]
        return f"{stem}.{ext}", mime
    return f"{stem}.JPG", "image/jpeg"


@dataclass(frozen=True)
class _File:
    source_id: str
    name: str
    mime_type: str
    folder_path: str
    size: int
    md5: str
    width: int
    height: int
    at: datetime


def _files(plan: ImportPlan, rng: random.Random) -> Iterator[_File]:
    folder_weights = [rng.random() + 0.2 for _ in plan.folders]
    slug = plan.title.split(" ", 1)[1].replace(" ", "_")
    first = 1 if plan.camera in ("lr", "export", "scanner") else rng.randint(1, 9999)
    for n in range(plan.size):
        name, mime = _file_name(plan.camera, first + n, slug, rng)
        if plan.number == 250 and n == 7:
            name, mime = UNIQUE_NAME, "image/jpeg"
        if plan.number in (3, 170, 420) and n == 11:
            name, mime = f"animation_{plan.number}.gif", "image/gif"
        width, height = (6000, 4000) if rng.random() < 0.7 else (4000, 6000)
        yield _File(
            source_id=f"{plan.source[0]}{plan.number:04d}{n:06d}{rng.getrandbits(40):010x}",
            name=name,
            mime_type=mime,
            folder_path=rng.choices(plan.folders, weights=folder_weights)[0],
            size=rng.randint(2_000_000, 30_000_000),
            md5=f"{rng.getrandbits(128):032x}",
            width=width,
            height=height,
            at=plan.created + timedelta(seconds=n * 0.05),
        )


_IMPORT_COLUMNS = """
source folder_id folder_url folder_name recursive status found_count imported_count failed_count bytes_found
bytes_imported created_at started_at listed_at finished_at updated_at reader
""".split()  # noqa: SIM905
_IMAGE_COLUMNS = """
source source_id google_drive_id name size mime_type storage_path storage_key thumbnail_key md5 checksum
checksum_kind width height folder_path import_id imported_at
""".split()  # noqa: SIM905
_ITEM_COLUMNS = """
import_id file_id name folder_path mime_type size_bytes md5 checksum checksum_kind width height status attempts
error_code error_message updated_at
""".split()  # noqa: SIM905


def _import_row(plan: ImportPlan) -> tuple[object, ...]:
    created = plan.created
    finished = created + timedelta(seconds=plan.size * 0.05 + 30)
    folder_id = f"folder{plan.number:05d}"
    url = (
        f"https://www.dropbox.com/scl/fo/{folder_id}/shared"
        if plan.source == "dropbox"
        else f"https://drive.google.com/drive/folders/{folder_id}"
    )
    found = plan.size + plan.failed
    status = "completed_with_errors" if plan.failed else "completed"
    bytes_total = plan.size * 16_000_000
    reader = "api" if plan.source == "google_drive" else None
    return (
        plan.source,
        folder_id,
        url,
        plan.title,
        True,
        status,
        found,
        plan.size,
        plan.failed,
        bytes_total,
        bytes_total,
        created,
        created,
        created + timedelta(seconds=20),
        finished,
        finished,
        reader,
    )


def _import_files(plan: ImportPlan, seed: int) -> Iterator[_File]:
    # Seeded per import: the image rows and the item rows regenerate the same files.
    return _files(plan, random.Random(seed * 1_000_003 + plan.number))


def _checksum(plan: ImportPlan, f: _File) -> tuple[str, str]:
    return (f.md5, "md5") if plan.source == "google_drive" else (f.md5 * 2, "dropbox_content_hash")


def _image_rows(plans: list[ImportPlan], seed: int) -> Iterator[tuple[object, ...]]:
    for plan in plans:
        for f in _import_files(plan, seed):
            key = f"images/{plan.source}/{f.source_id}"
            checksum, kind = _checksum(plan, f)
            drive_id = f.source_id if plan.source == "google_drive" else None
            yield (plan.source, f.source_id, drive_id, f.name, f.size, f.mime_type, f"s3://fotoowl/{key}", key,
                   f"thumbnails/{f.source_id}.jpg", f.md5, checksum, kind, f.width, f.height, f.folder_path,
                   plan.number, f.at)  # fmt: skip


def _item_rows(plans: list[ImportPlan], seed: int) -> Iterator[tuple[object, ...]]:
    for plan in plans:
        for f in _import_files(plan, seed):
            checksum, kind = _checksum(plan, f)
            yield (plan.number, f.source_id, f.name, f.folder_path, f.mime_type, f.size, f.md5, checksum, kind,
                   f.width, f.height, "done", 1, None, None, f.at)  # fmt: skip
        for n in range(plan.failed):
            yield (plan.number, f"failed{plan.number:05d}{n:03d}", f"broken_{n:03d}.jpg", plan.folders[0],
                   "image/jpeg", 1000, None, None, None, None, None, "failed", 3, "checksum_mismatch",
                   "The bytes did not match the listed checksum after 3 tries.", plan.created)  # fmt: skip


async def seed(conn: asyncpg.Connection, *, n_images: int, n_imports: int, seed: int = 1) -> SeedFacts:
    """COPY the gallery into an empty, migrated database, build its indexes afterwards, VACUUM ANALYZE."""
    plans = plan_imports(n_images, n_imports, seed)
    await conn.execute("SET maintenance_work_mem = '512MB'; SET synchronous_commit = off")
    # Secondary indexes are dropped for the COPY and rebuilt from their own definitions: many times
    # faster than maintaining them row by row, and whatever the migrations define is what is measured.
    indexes = await conn.fetch(
        """SELECT i.indexname, i.indexdef FROM pg_indexes i
           WHERE i.schemaname = current_schema() AND i.tablename IN ('images', 'image_search', 'import_items')
             AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)"""
    )
    for index in indexes:
        await conn.execute(f'DROP INDEX "{index["indexname"]}"')
    await conn.copy_records_to_table("imports", records=[_import_row(p) for p in plans], columns=_IMPORT_COLUMNS)
    numbers = [r["id"] for r in await conn.fetch("SELECT id FROM imports ORDER BY id")]
    if numbers != list(range(1, len(plans) + 1)):
        raise RuntimeError("the scale seed needs an empty database (import ids 1..N)")
    await conn.copy_records_to_table("images", records=_image_rows(plans, seed), columns=_IMAGE_COLUMNS)
    await conn.copy_records_to_table("import_items", records=_item_rows(plans, seed), columns=_ITEM_COLUMNS)
    for index in indexes:
        await conn.execute(index["indexdef"])
    await conn.execute("VACUUM (ANALYZE) imports, images, image_search, import_items")
    biggest = max(plans, key=lambda p: p.size)
    # An old import of a few hundred images, and a third of the way in, one with a folder of its own.
    old_small = next((p for p in plans if p.size < 600 and p.number > OLD_IMPORTS), min(plans, key=lambda p: p.size))
    later = plans[len(plans) // 3 :]
    rare = next(
        (p for p in later if p.nested and 500 <= p.size <= 3000), next((p for p in later if p.nested), plans[0])
    )
    first_id, last_id = await conn.fetchrow("SELECT min(id), max(id) FROM images")
    return SeedFacts(
        images=n_images,
        imports=len(plans),
        biggest_import=biggest.number,
        newest_import=plans[-1].number,
        old_small_import=old_small.number,
        rare_folder=rare.title,
        first_id=first_id,
        last_id=last_id,
    )


def describe(plans: list[ImportPlan]) -> str:
    sizes = sorted(p.size for p in plans)
    folders = {f for p in plans for f in p.folders}
    median = sizes[len(sizes) // 2]
    spread = f"{sizes[0]:,}-{sizes[-1]:,} images (median {median:,}, geometric mean {_gmean(sizes):,.0f})"
    return f"{len(plans)} imports of {spread}, {len(folders):,} distinct folders"


def _gmean(values: list[int]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))
