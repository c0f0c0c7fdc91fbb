"""The SQL behind GET /images and the gallery: newest first, any mix of filters, fast at a million rows.

Rows come newest first (id DESC) below a keyset cursor. What makes that hard is the LIMIT: the
planner assumes the matches of a filter are spread evenly over the ids. For a type matching 3 % of
the rows it walks the id index backwards expecting a page within 3,000 rows, and when those 3 % are
all years old (one client's film scans) it walks the whole table; for a folder it estimates as rare
it fetches and sorts 40,000 wide rows that a short walk would have found among the newest. So the
statements for each mix of filters are chosen here, each bounded by what it reads:

- Equality filters only (import, source, type): the ids come from the index (…, id) that orders that
  mix (sql/001, sql/006), index-only, so no walk that checks each row can look cheaper to the
  planner; then their rows. Import + source is checked once against the import's own source (an
  image has its import's source), so a mismatch costs one lookup, not a walk through the import.
- With a folder or `q`: first the window of the newest `walk_rows` rows that the equality filters
  allow (its bounds read index-only), filtered: a filter common among recent rows ends there. Only
  when the window is full and holds less than a page, the same statement goes on below it:
  - folder: each distinct folder path of the subtree (found by one index probe each) is read newest
    first from (folder_path, id), and the pages are merged. The index carries import, source and
    type, so the other equality filters cost no visit to the rows;
  - `q` of 3+ characters with pg_trgm: the trigram index's candidates from the narrow search table
    (sql/009: id, import, source, type and name key), sorted, written `ORDER BY id + 0` so that the
    planner cannot turn them back into a walk.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import asyncpg

# Equality filter sets that one index (…, id) orders; the first that fits is the one walked.
ORDERED_INDEXES: tuple[tuple[str, ...], ...] = (
    ("import_id", "mime_type"),
    ("source", "mime_type"),
    ("import_id",),
    ("source",),
    ("mime_type",),
)
NAME_INDEX = "image_search_name_trgm_idx"
# pg_trgm splits a name into words at every character that is not a letter or digit, so
# "IMG_0123.JPG" would be the words img, 0123 and jpg, and `q=img jpg` would make every such name a
# candidate. The index is on images_name_key(name) (sql/006_scale.sql): the lowercased name with
# these separators turned into a letter, one word whose trigrams keep the separators' places.
_KEY_SEPARATORS = ("_", ".", "-", " ")
_KEY_LETTER = "q"
# Below this many, a name's trigram candidates are read and sorted (~1 µs each); above it, the walk by
# id soon finds a page (a name matching 5 % of all rows), so reading them all would cost more.
RARE_NAME_ROWS = 50_000
_TRIGRAM_CHARS = 3  # a shorter pattern has no trigram: the index would return every row
# A `q` without these characters matches a key exactly where it matches the name (ILIKE compares
# lowercased text too): the key changes only them, so the name needs no second look.
_KEY_CHANGES = frozenset((*_KEY_SEPARATORS, _KEY_LETTER))


@dataclass(frozen=True)
class ImageCriteria:
    import_id: int | None = None
    source: str | None = None
    mime_type: str | None = None
    folder: str | None = None  # without leading or trailing "/"
    q: str | None = None

    def equalities(self) -> dict[str, Any]:
        values = {"import_id": self.import_id, "source": self.source, "mime_type": self.mime_type}
        return {column: value for column, value in values.items() if value is not None}


def like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def name_key(text: str) -> str:
    """images_name_key() in Python, for lengths only: the SQL one makes the keys that are compared."""
    key = text.lower()
    for separator in _KEY_SEPARATORS:
        key = key.replace(separator, _KEY_LETTER)
    return key


def walk_rows(limit: int) -> int:
    """Rows in the window: a filter matching 1 row in 20 among recent rows ends there."""
    return min(10_000, max(1_000, 20 * limit))


class _Args:
    def __init__(self, *values: Any) -> None:
        self.values: list[Any] = list(values)

    def __call__(self, value: Any) -> str:
        self.values.append(value)
        return f"${len(self.values)}"


class ImageQuery:
    """The statements for one page of `filters`: `exact_query` alone, or `window_query` then `page_query`."""

    def __init__(self, filters: ImageCriteria) -> None:
        self.filters = filters
        self.equalities = filters.equalities()
        self.walked = next((cols for cols in ORDERED_INDEXES if set(cols) <= self.equalities.keys()), ())
        self.exact = filters.folder is None and not filters.q
        # `q` alone: answered from the narrow search table (sql/009) but for the page's own rows.
        self.name_only = bool(filters.q) and filters.folder is None and not self.equalities

    def exact_query(self, before_id: int, limit: int) -> tuple[str, list[Any]]:
        arg = _Args(before_id)
        where = ["id < $1"] + [f"{col} = {arg(value)}" for col, value in self.equalities.items()]
        if self.filters.import_id is not None and self.filters.source is not None:
            # A one-time filter, evaluated before the walk.
            import_id, source = arg(self.filters.import_id), arg(self.filters.source)
            where.append(f"EXISTS (SELECT 1 FROM imports WHERE id = {import_id} AND source = {source})")
        ids = f"SELECT id FROM images WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT {arg(limit)}"
        return f"SELECT * FROM images WHERE id = ANY(ARRAY({ids})) ORDER BY id DESC", arg.values

    def window_query(self, before_id: int, window: int) -> tuple[str, list[Any]]:
        """(lowest id, rows) of the newest `window` rows the walked equalities allow (index-only), and
        whether the trigram index exists (it needs pg_trgm, which not every PostgreSQL has)."""
        arg = _Args(before_id)
        where = ["id < $1"] + [f"{col} = {arg(self.equalities[col])}" for col in self.walked]
        ids = f"SELECT id FROM images WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT {arg(window)}"
        return f"SELECT min(id), count(*), to_regclass({arg(NAME_INDEX)}) IS NOT NULL FROM ({ids}) w", arg.values

    @property
    def name_pattern(self) -> str | None:
        """The ILIKE pattern of `q`, when the trigram index can find it (3+ characters)."""
        q = self.filters.q
        return "%" + like_escape(q) + "%" if q and len(name_key(q)) >= _TRIGRAM_CHARS else None

    def name_page_query(
        self, before_id: int, low_id: int, limit: int, *, older: bool, name_rows: int | None = None
    ) -> tuple[str, list[Any]]:
        """page_query for `q` alone, read from the search table: its ~60-byte rows hold the name key,
        so the window, a walk and the trigram candidates cost a fraction of reading images rows."""
        q = self.filters.q
        assert q
        arg = _Args(before_id, low_id)
        pattern = arg("%" + like_escape(q) + "%")
        key = f"name_key LIKE images_name_key({pattern})"
        if set(q.lower()) & _KEY_CHANGES:  # the key matches more names than `q` does: ask the name
            key += f" AND EXISTS (SELECT 1 FROM images i WHERE i.id = image_search.id AND i.name ILIKE {pattern})"
        page = arg(limit)
        ids = f"SELECT id FROM image_search WHERE id < $1 AND id >= $2 AND {key} ORDER BY id DESC"
        if older:
            if name_rows is not None and name_rows <= RARE_NAME_ROWS:
                below = f"SELECT id FROM image_search WHERE id < $2 AND {key} ORDER BY id + 0 DESC LIMIT {page}"
            else:  # a common name (a walk soon finds a page), one too short for trigrams, or no pg_trgm
                below = f"SELECT id FROM image_search WHERE id < $2 AND {key} ORDER BY id DESC"
            ids = f"SELECT id FROM (({ids}) UNION ALL ({below})) hits"
        return f"SELECT * FROM images WHERE id = ANY(ARRAY({ids} LIMIT {page})) ORDER BY id DESC", arg.values

    def page_query(
        self, before_id: int, low_id: int, limit: int, *, older: bool, name_rows: int | None = None
    ) -> tuple[str, list[Any]]:
        """The window's matches, then (`older`: the window was full) the matches below it.
        `name_rows`: how many rows the planner expects `q` to match, when the trigram index can find it."""
        arg = _Args(before_id, low_id)
        walked = [f"{col} = {arg(self.equalities[col])}" for col in self.walked]
        others = [f"{col} = {arg(value)}" for col, value in self.equalities.items() if col not in self.walked]
        folder, q = self.filters.folder, self.filters.q
        in_folder = name = trigram = ""
        if folder is not None:
            exact = arg(folder)
            in_folder = f"(folder_path = {exact} OR folder_path LIKE {arg(like_escape(folder) + '/%')})"
        if q:
            pattern = arg("%" + like_escape(q) + "%")
            name = f"name ILIKE {pattern}"
            if name_rows is not None and name_rows <= RARE_NAME_ROWS:
                # The key of the pattern is made by PostgreSQL's lower(), the one the keys were made with.
                trigram = f"name_key LIKE images_name_key({pattern})"
        matches = _all(*others, in_folder, name)
        if walked:  # the window's ids from the index that orders them, then their rows
            window = _all("id < $1", "id >= $2", *walked)
            newest = f"SELECT * FROM images WHERE id = ANY(ARRAY(SELECT id FROM images WHERE {window})) AND {matches}"
        else:  # OFFSET 0 keeps the filters out of the window: its bounds alone choose how it is read
            window = "SELECT * FROM images WHERE id < $1 AND id >= $2 ORDER BY id DESC OFFSET 0"
            newest = f"SELECT * FROM ({window}) newest WHERE {matches}"
        newest += " ORDER BY id DESC"
        page = arg(limit)
        if not older:
            return f"{newest} LIMIT {page}", arg.values
        below = _all("id < $2", *walked, *others)
        if trigram:
            # The candidates from the narrow search table (sql/009), which has the equality columns
            # too; the images rows are visited only for what the key cannot decide (a folder, a `q`
            # with the characters the key changes).
            exact_key = q is not None and not set(q.lower()) & _KEY_CHANGES
            ids = f"SELECT id FROM image_search WHERE {_all(below, trigram)}"
            on_rows = _all(in_folder, "" if exact_key else name)
            if on_rows:
                ids = f"SELECT id FROM images WHERE id = ANY(ARRAY({ids})) AND {on_rows}"
            ids += f" ORDER BY id + 0 DESC LIMIT {page}"
            older_sql = f"SELECT * FROM images WHERE id = ANY(ARRAY({ids})) ORDER BY id DESC"
        elif folder is not None:
            older_sql = _folder_merge(arg, (exact, folder), below, name, page)
        else:
            # A common name (a walk soon finds a page), one too short for trigrams, or no pg_trgm.
            older_sql = f"SELECT * FROM images WHERE {_all(below, name)} ORDER BY id DESC"
        return f"SELECT * FROM (({newest}) UNION ALL ({older_sql})) hits LIMIT {page}", arg.values


def _all(*conditions: str) -> str:
    return " AND ".join(c for c in conditions if c)


def _folder_merge(arg: _Args, folder: tuple[str, str], where: str, name: str, page: str) -> str:
    """The newest rows of each folder path of the subtree, merged. `folder`: (its argument, its value).
    The folder index answers `where` alone (index-only: it carries import, source and type); only the
    rows that pass it are read for `name`."""
    exact, value = folder
    first, after = arg(value + "/"), arg(value + "0")
    in_path = f"SELECT id FROM images WHERE folder_path = paths.path AND {where}"
    if name:
        in_path = f"SELECT id FROM images WHERE id = ANY(ARRAY({in_path})) AND {name}"
    # text_pattern_ops compares bytes: the paths below X/ run from "X/" up to "X0" ("0" follows "/").
    probe = (
        "SELECT folder_path FROM images WHERE folder_path {op} {value} AND folder_path ~<~ {after} "
        "ORDER BY folder_path USING ~<~ LIMIT 1"
    )
    return f"""WITH RECURSIVE below(path) AS (
        ({probe.format(op="~>=~", value=first, after=after)})
        UNION ALL
        SELECT ({probe.format(op="~>~", value="below.path", after=after)}) FROM below WHERE below.path IS NOT NULL
    ), paths AS (
        SELECT {exact}::text AS path UNION ALL SELECT path FROM below WHERE path IS NOT NULL
    ), ids AS (
        SELECT hit.id FROM paths CROSS JOIN LATERAL (
            {in_path} ORDER BY id DESC LIMIT {page}
        ) hit ORDER BY hit.id DESC LIMIT {page}
    )
    SELECT * FROM images WHERE id = ANY(ARRAY(SELECT id FROM ids)) ORDER BY id DESC"""


async def fetch_images(
    pool: asyncpg.Pool, filters: ImageCriteria, *, before_id: int, limit: int
) -> list[asyncpg.Record]:
    """One page of `filters` below the id `before_id`, newest first."""
    query = ImageQuery(filters)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(_PLANNING)
        if query.exact:
            sql, args = query.exact_query(before_id, limit)
            return list(await conn.fetch(sql, *args))
        window = walk_rows(limit)
        sql, args = query.window_query(before_id, window)
        low_id, rows, name_index = await conn.fetchrow(sql, *args)
        if not rows:
            return []
        older, name_rows = rows == window, None
        if older and name_index and query.name_pattern:
            name_rows = await _estimated_rows(conn, _NAME_ROWS, query.name_pattern)
        page_query = query.name_page_query if query.name_only else query.page_query
        sql, args = page_query(before_id, low_id, limit, older=older, name_rows=name_rows)
        return list(await conn.fetch(sql, *args))


_NAME_ROWS = "SELECT 1 FROM image_search WHERE name_key LIKE images_name_key($1)"

# A total is counted when the planner expects at most this many matches and counting takes at most
# this long; otherwise it is the planner's estimate (from the statistics ANALYZE keeps), said to be one.
EXACT_COUNT_ROWS = 10_000
EXACT_COUNT_MS = 50


@dataclass(frozen=True)
class ImageCount:
    count: int
    exact: bool


def matching_query(filters: ImageCriteria) -> tuple[str, list[Any]]:
    """Every image `filters` match, in one plain statement (no order, no page)."""
    arg = _Args()
    where = [f"{col} = {arg(value)}" for col, value in filters.equalities().items()]
    if filters.folder is not None:
        exact = arg(filters.folder)
        where.append(f"(folder_path = {exact} OR folder_path LIKE {arg(like_escape(filters.folder) + '/%')})")
    if filters.q:
        pattern = arg("%" + like_escape(filters.q) + "%")
        # Through the search table's trigram index, where there is one; the name decides.
        where.append(f"id IN (SELECT id FROM image_search WHERE name_key LIKE images_name_key({pattern}))")
        where.append(f"name ILIKE {pattern}")
    return f"SELECT 1 FROM images WHERE {_all(*where) or 'true'}", arg.values


async def count_images(pool: asyncpg.Pool, filters: ImageCriteria) -> ImageCount:
    """How many images `filters` match: exact where that is cheap, else estimated."""
    sql, args = matching_query(filters)
    async with pool.acquire() as conn:
        if filters.import_id is not None and filters.source is not None:
            # An image has its import's source: a mismatch is none at all, which no estimate knows.
            source = await conn.fetchval("SELECT source FROM imports WHERE id = $1", filters.import_id)
            if source != filters.source:
                return ImageCount(0, exact=True)
        async with conn.transaction():
            await conn.execute(_PLANNING)
            estimate = await _estimated_rows(conn, sql, *args)
        if estimate > EXACT_COUNT_ROWS:
            return ImageCount(estimate, exact=False)
        try:
            async with conn.transaction():
                await conn.execute(f"SET LOCAL statement_timeout = {EXACT_COUNT_MS}; {_PLANNING}")
                count = await conn.fetchval(f"SELECT count(*) FROM ({sql}) matches", *args)
        except asyncpg.QueryCanceledError:
            return ImageCount(estimate, exact=False)
        return ImageCount(int(count), exact=True)


async def _estimated_rows(conn: asyncpg.Connection, sql: str, *args: Any) -> int:
    """The planner's estimate (from the statistics ANALYZE keeps on the trigram index's expression)."""
    plan = json.loads(await conn.fetchval("EXPLAIN (FORMAT JSON) " + sql, *args))
    return int(plan[0]["Plan"]["Plan Rows"])


# For these statements only (SET LOCAL ends with the transaction). asyncpg keeps statements prepared,
# and after five runs PostgreSQL may switch one to a generic plan, made without the values: a type or
# folder matching three rows or 300,000 cannot share one plan (measured: 0.1 ms planned for the
# values, 250 ms generic). And a parallel plan's workers take longer to start than these queries run.
_PLANNING = "SET LOCAL plan_cache_mode = force_custom_plan; SET LOCAL max_parallel_workers_per_gather = 0"
