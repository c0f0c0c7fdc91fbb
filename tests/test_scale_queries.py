"""GET /images at scale, pinned cheaply: on 30,000 image rows COPYed in clusters (imports of one camera
and one folder tree each, film scans only in the oldest), every statement web/image_query.py runs
must read an index, never the whole images table; its pages must equal the plain query's for any
mix of filters, cursor and page size; and lease renewal must find its items by lease token.

Plans come from EXPLAIN with ANALYZE statistics, as the server would choose them; nothing is timed
(bench/scale.py measures a million rows). The trigram assertions need pg_trgm, which the embedded
PostgreSQL lacks: run with FOTOOWL_TEST_DATABASE_URL pointing at a server that has it to include them.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from fotoowl.web import image_query
from fotoowl.web.image_query import ImageCriteria, ImageQuery, fetch_images, walk_rows

IMPORTS = 60
IMAGES_PER_IMPORT = 500  # 30,000 rows: the planner reads indexes as it would at a million
CAMERAS = ("IMG_{:04d}.JPG", "DSC_{:04d}.NEF", "DSCF{:04d}.JPG", "IMG_{:04d}.HEIC", "Export-{:04d}.png")
MIMES = {"JPG": "image/jpeg", "NEF": "image/x-nikon-nef", "HEIC": "image/heic", "png": "image/png"}
TREES = (
    ("Ceremony", "Ceremony/Camera A", "Reception", "Ceremony_2"),
    ("Day 1", "Day 1/Keynote", "Day 2"),
    ("", "Selects", "Selects/Retouched"),
)


def _image_rows() -> Iterator[tuple[Any, ...]]:
    rng = random.Random(7)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    for imp in range(1, IMPORTS + 1):
        source = "dropbox" if imp % 4 == 0 else "google_drive"
        camera = "Scan_{:05d}.tif" if imp <= 4 else CAMERAS[imp % len(CAMERAS)]
        if imp in (21, 45):  # "IMG-0123": the name key of IMG_0123, a candidate that `q=IMG_01` must drop
            camera = "IMG-{:04d}.JPG"
        tree = ("Film Scans", "Film Scans/Roll 01") if imp <= 4 else TREES[imp % len(TREES)]
        own = f"Job {imp:03d}"
        for n in range(IMAGES_PER_IMPORT):
            name = camera.format(n + 1)
            if imp == 33 and n == 5:
                name = "Kyoto_sunset_panorama.jpg"
            mime = "image/tiff" if imp <= 4 else MIMES.get(name.rsplit(".", 1)[1], "image/jpeg")
            folder = rng.choice(tree)
            if imp % 5 == 0:
                folder = f"{own}/{folder}" if folder else own
            sid = f"{imp}-{n}"
            drive_id = sid if source == "google_drive" else None
            at = start + timedelta(minutes=imp, seconds=n)
            yield (source, sid, drive_id, name, 1000, mime, f"s3://b/{sid}", sid, folder, imp, at)


@pytest.fixture(scope="module")
async def gallery(servers: Any) -> AsyncIterator[str]:
    """One seeded database for the module (copied from the migrated template, dropped after)."""
    name = f"fotoowl_scale_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(servers.pg_admin_url)
    await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{servers.template_db}"')
    url = servers.pg_admin_url.rsplit("/", 1)[0] + "/" + name
    conn = await asyncpg.connect(url)
    try:
        await conn.copy_records_to_table(
            "imports",
            records=[("google_drive", f"f{n}", f"https://drive.google.com/drive/folders/f{n}") for n in range(IMPORTS)],
            columns=["source", "folder_id", "folder_url"],
        )
        await conn.execute("UPDATE imports SET source = 'dropbox' WHERE id % 4 = 0")
        columns = "source source_id google_drive_id name size mime_type storage_path storage_key folder_path"
        await conn.copy_records_to_table(
            "images", records=_image_rows(), columns=[*columns.split(), "import_id", "imported_at"]
        )
        await conn.execute("VACUUM (ANALYZE) images, image_search, imports")
        yield url
    finally:
        await conn.close()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture
async def pool(gallery: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(gallery, min_size=1, max_size=2)
    assert pool is not None
    yield pool
    await pool.close()


async def _has_trigram_index(pool: asyncpg.Pool) -> bool:
    return bool(await pool.fetchval("SELECT to_regclass('image_search_name_trgm_idx') IS NOT NULL"))


# Each (label, filters): common and rare values, old-only ones, values that match nothing.
CASES: list[tuple[str, ImageCriteria]] = [
    ("nothing", ImageCriteria()),
    ("import", ImageCriteria(import_id=7)),
    ("source", ImageCriteria(source="dropbox")),
    ("type, common", ImageCriteria(mime_type="image/jpeg")),
    ("type, oldest imports only", ImageCriteria(mime_type="image/tiff")),
    ("type, none", ImageCriteria(mime_type="image/bmp")),
    ("import + source, mismatch", ImageCriteria(import_id=7, source="dropbox")),
    ("import + type", ImageCriteria(import_id=7, mime_type="image/heic")),
    ("source + type", ImageCriteria(source="dropbox", mime_type="image/tiff")),
    ("folder, common", ImageCriteria(folder="Ceremony")),
    ("folder, oldest imports only", ImageCriteria(folder="Film Scans")),
    ("folder, one import's own", ImageCriteria(folder="Job 035")),
    ("folder, none", ImageCriteria(folder="Nowhere")),
    ("folder + type + source", ImageCriteria(folder="Day 1", mime_type="image/jpeg", source="google_drive")),
    ("q, common", ImageCriteria(q="img")),
    ("q, one row", ImageCriteria(q="sunset_panorama")),
    ("q, oldest imports only", ImageCriteria(q="scan_0001")),
    ("q, none, every word common", ImageCriteria(q="img jpg")),
    ("q + import", ImageCriteria(q="dsc_01", import_id=12)),
    ("q + folder", ImageCriteria(q="img_01", folder="Ceremony")),
    ("all five", ImageCriteria(import_id=9, source="google_drive", mime_type="image/jpeg", folder="Day 1", q="01")),
]


class Recorder:
    """Every statement fetch_images runs, with its arguments."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.statements: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.conn, name)

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        self.statements.append((sql, args))
        return list(await self.conn.fetch(sql, *args))

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        self.statements.append((sql, args))
        return await self.conn.fetchrow(sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await self.conn.fetchval(sql, *args)


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


async def _plans(pool: asyncpg.Pool, filters: ImageCriteria, limit: int) -> list[dict[str, Any]]:
    """The plans of the statements fetch_images runs for this page, as the server makes them."""
    async with pool.acquire() as conn:
        recorder = Recorder(conn)
        await fetch_images(_PoolOf(recorder), filters, before_id=2**62, limit=limit)  # type: ignore[arg-type]
        plans = []
        async with conn.transaction():
            await conn.execute(image_query._PLANNING)
            for sql, args in recorder.statements:
                if sql.startswith("SET"):
                    continue
                text = await conn.fetchval("EXPLAIN (FORMAT JSON) " + sql, *args)
                plans.append(json.loads(text)[0]["Plan"])
    return plans


class _PoolOf:
    """A pool of one connection (the recorder), for fetch_images."""

    def __init__(self, conn: Recorder) -> None:
        self.conn = conn

    def acquire(self) -> _PoolOf:
        return self

    async def __aenter__(self) -> Recorder:
        return self.conn

    async def __aexit__(self, *exc: object) -> None:
        return None


@pytest.mark.parametrize(("label", "filters"), CASES, ids=[label for label, _ in CASES])
@pytest.mark.parametrize("limit", [100, 10])
async def test_no_statement_reads_the_whole_images_table(
    pool: asyncpg.Pool, label: str, filters: ImageCriteria, limit: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A q below the window is read through its trigram candidates or walked: pin the candidates here
    # (a walk is a planner's choice that a plan cannot tell from a bounded one).
    monkeypatch.setattr(image_query, "RARE_NAME_ROWS", 10**9)
    trigram = await _has_trigram_index(pool)
    short_or_unindexed = filters.q is not None and (not trigram or len(filters.q) < 3)
    for plan in await _plans(pool, filters, limit):
        scanned = [
            n
            for n in _nodes(plan)
            if n["Node Type"] == "Seq Scan" and n.get("Relation Name") in ("images", "image_search")
        ]
        if short_or_unindexed and filters.folder is None and filters.import_id is None:
            continue  # no index finds a substring without pg_trgm: the one case that may scan
        assert not scanned, f"{label}: {json.dumps(plan, indent=1)[:3000]}"


async def test_the_search_table_follows_every_write_of_images(gallery: str) -> None:
    """sql/009's triggers: inserts (COPY too), a renamed or retyped image, an import's deletion
    (its images keep their rows, import_id NULL), image deletions."""
    conn = await asyncpg.connect(gallery)
    writes = conn.transaction()  # rolled back: the gallery is shared by the module's tests
    await writes.start()
    try:
        same = "SELECT count(*) FROM images i FULL JOIN image_search s USING (id) WHERE s.id IS NULL OR i.id IS NULL"
        same += " OR s.name_key IS DISTINCT FROM images_name_key(i.name) OR (s.import_id, s.source, s.mime_type)"
        same += " IS DISTINCT FROM (i.import_id, i.source, i.mime_type)"
        assert await conn.fetchval("SELECT count(*) FROM image_search") == IMPORTS * IMAGES_PER_IMPORT
        assert await conn.fetchval(same) == 0
        await conn.execute("UPDATE images SET name = 'Renamed_Beach.JPG', mime_type = 'image/png' WHERE id = 5")
        await conn.execute("UPDATE images SET size = size + 1, thumbnail_key = 'x' WHERE id = 6")
        await conn.execute("DELETE FROM imports WHERE id = 2")
        await conn.execute("DELETE FROM images WHERE id IN (7, 8, 9)")
        await conn.execute(
            """INSERT INTO images (source, source_id, name, size, mime_type, storage_path, storage_key)
               VALUES ('dropbox', 'new-1', 'Fresh Start.jpg', 1, 'image/jpeg', 's3://b/n', 'n')"""
        )
        assert await conn.fetchval(same) == 0
        assert await conn.fetchval("SELECT name_key FROM image_search WHERE id = 5") == "renamedqbeachqjpg"
        assert await conn.fetchval("SELECT count(*) FROM image_search WHERE import_id = 2") == 0
        assert await conn.fetchval("SELECT count(*) FROM image_search WHERE id IN (7, 8, 9)") == 0
    finally:
        await writes.rollback()
        await conn.close()


async def test_totals_are_counted_when_few_and_estimated_when_many(pool: asyncpg.Pool) -> None:
    everything = await image_query.count_images(pool, ImageCriteria())
    assert not everything.exact  # 30,000 rows: more than is counted
    assert abs(everything.count - IMPORTS * IMAGES_PER_IMPORT) < IMPORTS * IMAGES_PER_IMPORT / 10
    for filters in (
        ImageCriteria(import_id=7),
        ImageCriteria(mime_type="image/tiff", folder="Film Scans/Roll 01"),
        ImageCriteria(q="sunset_panorama"),
        ImageCriteria(q="IMG_01", import_id=21),  # IMG-01.. names share the key, not the name
        ImageCriteria(source="dropbox", mime_type="image/bmp"),
        ImageCriteria(import_id=7, source="dropbox"),  # import 7 is Drive's: none, whatever the estimate
    ):
        sql, args = image_query.matching_query(filters)
        plain, plain_args = _plain(filters, 2**62, 1)
        want = await pool.fetchval("SELECT count(*) FROM (" + plain.rsplit(" ORDER BY", 1)[0] + ") m", *plain_args[:-1])
        assert await pool.fetchval(f"SELECT count(*) FROM ({sql}) m", *args) == want, filters
        assert await image_query.count_images(pool, filters) == image_query.ImageCount(want, exact=True), filters


async def test_a_rare_name_is_found_through_the_trigram_index(pool: asyncpg.Pool) -> None:
    if not await _has_trigram_index(pool):
        pytest.skip("this PostgreSQL has no pg_trgm: names are found by walking")
    plans = await _plans(pool, ImageCriteria(q="sunset_panorama"), 10)
    used = {n.get("Index Name") for plan in plans for n in _nodes(plan)}
    assert "image_search_name_trgm_idx" in used


async def test_the_folder_filter_reads_the_folder_index_below_the_window(pool: asyncpg.Pool) -> None:
    plans = await _plans(pool, ImageCriteria(folder="Film Scans"), 10)
    nodes = [n for plan in plans for n in _nodes(plan)]
    assert any(n.get("Index Name") == "images_folder_tree_idx" and "Only" in n["Node Type"] for n in nodes)


def _plain(filters: ImageCriteria, before_id: int, limit: int) -> tuple[str, list[Any]]:
    """The query as it was before image_query: one statement, the planner's choice."""
    where, args = ["id < $1"], [before_id]
    for column, value in filters.equalities().items():
        args.append(value)
        where.append(f"{column} = ${len(args)}")
    if filters.folder is not None:
        args += [filters.folder, image_query.like_escape(filters.folder) + "/%"]
        where.append(f"(folder_path = ${len(args) - 1} OR folder_path LIKE ${len(args)})")
    if filters.q:
        args.append("%" + image_query.like_escape(filters.q) + "%")
        where.append(f"name ILIKE ${len(args)}")
    args.append(limit)
    return f"SELECT id FROM images WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT ${len(args)}", args


VALUES: dict[str, list[Any]] = {
    "import_id": [1, 3, 7, 12, 33, 59, 60, 999],
    "source": ["google_drive", "dropbox", "other"],
    "mime_type": ["image/jpeg", "image/tiff", "image/heic", "image/png", "image/bmp"],
    "folder": ["Ceremony", "Ceremony/Camera A", "Film Scans", "Job 035", "Job 040/Day 1", "", "Nowhere", "Day"],
    "q": [
        "img",
        "IMG_01",
        "IMG-012",
        "sunset_panorama",
        "scan_00",
        "img jpg",
        "g",
        "01",
        "%",
        "_",
        "dsc_0123",
        "zebra",
        "Q",
    ],
}


@pytest.mark.parametrize("rare_rows", [image_query.RARE_NAME_ROWS, 0])
async def test_every_page_equals_the_plain_query(
    pool: asyncpg.Pool, rare_rows: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Both ways of reading a name below the window: its trigram candidates, or the planner's walk.
    monkeypatch.setattr(image_query, "RARE_NAME_ROWS", rare_rows)
    rng = random.Random(11 + rare_rows)
    top = await pool.fetchval("SELECT max(id) FROM images")
    for _ in range(150):
        chosen = rng.sample(sorted(VALUES), rng.randint(1, 3))
        filters = ImageCriteria(**{name: rng.choice(VALUES[name]) for name in chosen})
        limit = rng.choice([1, 7, 60])
        before_id = rng.choice([2**62, top, rng.randint(1, top)])
        rows = await fetch_images(pool, filters, before_id=before_id, limit=limit)
        want = [r["id"] for r in await pool.fetch(*_plain_call(filters, before_id, limit))]
        assert [r["id"] for r in rows] == want, (filters, before_id, limit)


def _plain_call(filters: ImageCriteria, before_id: int, limit: int) -> tuple[Any, ...]:
    sql, args = _plain(filters, before_id, limit)
    return (sql, *args)


async def test_pages_follow_each_other_without_gaps(pool: asyncpg.Pool) -> None:
    """Paging a filter whose matches straddle the window boundary returns each match once, in order."""
    filters = ImageCriteria(folder="Ceremony")
    want = [r["id"] for r in await pool.fetch(*_plain_call(filters, 2**62, 100_000))]
    got: list[int] = []
    before_id = 2**62
    while True:
        page = await fetch_images(pool, filters, before_id=before_id, limit=70)
        got += [r["id"] for r in page]
        if len(page) < 70:
            break
        before_id = page[-1]["id"]
    assert got == want
    assert len(want) > walk_rows(70)


def test_the_window_grows_with_the_page_within_bounds() -> None:
    assert walk_rows(1) == 1_000 and walk_rows(100) == 2_000 and walk_rows(500) == 10_000


def test_equality_filters_alone_take_one_statement() -> None:
    assert ImageQuery(ImageCriteria(import_id=1, source="dropbox", mime_type="image/png")).exact
    assert not ImageQuery(ImageCriteria(import_id=1, folder="")).exact


async def test_lease_renewal_finds_its_items_by_lease_token(gallery: str) -> None:
    """transfer.py's renewal, with 20,000 pending items of the import, plans through the lease index."""
    conn = await asyncpg.connect(gallery)
    try:
        token = uuid.uuid4()
        async with conn.transaction():
            await conn.copy_records_to_table(
                "import_items",
                records=[(5, f"item-{n}", f"n{n}.jpg", "image/jpeg") for n in range(20_000)],
                columns=["import_id", "file_id", "name", "mime_type"],
            )
            await conn.execute(
                """UPDATE import_items SET status = 'in_progress', lease_token = $1
                   WHERE id IN (SELECT id FROM import_items WHERE import_id = 5 ORDER BY id LIMIT 32)""",
                token,
            )
            await conn.execute("ANALYZE import_items")
            renewal = """UPDATE import_items SET lease_expires_at = now() + make_interval(secs => $2)
                         WHERE import_id = $3 AND lease_token = $1 AND status = 'in_progress'"""
            # As asyncpg runs it: prepared, so planned for its values or, after five runs, generically.
            await conn.execute(f"PREPARE renew(uuid, float8, bigint) AS {renewal}")
            for mode in ("force_custom_plan", "force_generic_plan"):
                await conn.execute(f"SET LOCAL plan_cache_mode = {mode}")
                text = await conn.fetchval(f"EXPLAIN (FORMAT JSON) EXECUTE renew('{token}', 120, 5)")
                plan = json.loads(text)[0]["Plan"]
                used = {n.get("Index Name") for n in _nodes(plan)}
                assert "import_items_lease_idx" in used, (mode, plan)
            raise _Rollback
    except _Rollback:
        pass
    finally:
        await conn.close()


class _Rollback(Exception):
    pass
