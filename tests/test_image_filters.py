"""GET /images: every filter alone and every combination of them, against rows chosen so that each
filter removes something the others keep (dropping any one filter from the code fails a case here)."""

from __future__ import annotations

import itertools
from typing import Any

import asyncpg
import pytest

from fotoowl.config import AppSettings
from fotoowl.web.app import create_app

# (name, source, folder_path, mime_type, import) for each image row.
ROWS = [
    ("IMG_0001.jpg", "google_drive", "", "image/jpeg", 1),
    ("IMG_0002.png", "google_drive", "Ceremony", "image/png", 1),
    ("IMG_0003.jpg", "google_drive", "Ceremony/Party", "image/jpeg", 1),
    ("ceremony_100%_done.jpg", "google_drive", "Ceremony_2", "image/jpeg", 2),
    ("IMG_0004.jpg", "dropbox", "Ceremony", "image/jpeg", 2),
    ("DSC_0005.png", "dropbox", "Ceremony/Party", "image/png", 2),
    ("dsc_img_0006.jpg", "dropbox", "Reception", "image/jpeg", 1),
]
FILTERS: dict[str, str] = {
    "source": "dropbox",
    "folder": "Ceremony",  # the folder and below, never the sibling "Ceremony_2"
    "mime_type": "image/jpeg",
    "q": "img_",  # case-insensitive substring, "_" literal
    "import_id": "",  # filled in with the second import's id
}


def expected(filters: dict[str, str], import_ids: list[int]) -> set[str]:
    def keep(row: tuple[str, str, str, str, int]) -> bool:
        name, source, folder, mime, imp = row
        return all(
            (
                "source" not in filters or source == filters["source"],
                "folder" not in filters or folder == filters["folder"] or folder.startswith(filters["folder"] + "/"),
                "mime_type" not in filters or mime == filters["mime_type"],
                "q" not in filters or filters["q"].lower() in name.lower(),
                "import_id" not in filters or import_ids[imp - 1] == int(filters["import_id"]),
            )
        )

    return {row[0] for row in ROWS if keep(row)}


@pytest.fixture
async def images_client(app_settings: AppSettings, aiohttp_client: Any) -> tuple[Any, list[int]]:
    client = await aiohttp_client(create_app(app_settings, run_worker=False))
    conn = await asyncpg.connect(app_settings.database_url)
    try:
        import_ids = [
            await conn.fetchval(
                "INSERT INTO imports (source, folder_id, folder_url, status) VALUES ($1, $2, $2, 'completed') "
                "RETURNING id",
                source,
                f"folder-{n}",
            )
            for n, source in ((1, "google_drive"), (2, "dropbox"))
        ]
        for n, (name, source, folder, mime, imp) in enumerate(ROWS):
            await conn.execute(
                """INSERT INTO images (source, source_id, google_drive_id, name, size, mime_type, storage_path,
                                       storage_key, folder_path, import_id)
                   VALUES ($1, $2, $3, $4, 1, $5, 's3://b/k', 'k', $6, $7)""",
                source,
                f"id-{n}",
                f"id-{n}" if source == "google_drive" else None,
                name,
                mime,
                folder,
                import_ids[imp - 1],
            )
    finally:
        await conn.close()
    return client, import_ids


COMBINATIONS = [combo for size in range(1, len(FILTERS) + 1) for combo in itertools.combinations(FILTERS, size)]


@pytest.mark.parametrize("names", COMBINATIONS, ids=lambda names: "+".join(names))
async def test_each_filter_and_every_combination(images_client: tuple[Any, list[int]], names: tuple[str, ...]) -> None:
    client, import_ids = images_client
    filters = {name: FILTERS[name] or str(import_ids[1]) for name in names}
    want = expected(filters, import_ids)
    if len(names) == 1:
        # Alone, each filter removes rows: an endpoint that ignored it would answer more.
        assert want != {row[0] for row in ROWS}
    resp = await client.get("/images", params={**filters, "limit": "100"})
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    got = [image["name"] for image in body["images"]]
    assert set(got) == want and len(got) == len(want)
    assert body["total"] is None  # counted only when asked
    # Asked, a total that few rows make is counted.
    counted = await (await client.get("/images", params={**filters, "limit": "1", "count": "true"})).json()
    assert counted["total"] == {"count": len(want), "exact": True}
    # The gallery pages take the same filters.
    page = await client.get("/ui/gallery/_grid", params=filters)
    assert page.status == 200


async def test_count_is_a_yes_or_no(images_client: tuple[Any, list[int]]) -> None:
    client, _ = images_client
    answer = await (await client.get("/images", params={"count": "1"})).json()
    assert answer["total"] == {"count": len(ROWS), "exact": True}
    resp = await client.get("/images", params={"count": "maybe"})
    assert resp.status == 400
    assert (await resp.json())["error"]["code"] == "invalid_parameter"
