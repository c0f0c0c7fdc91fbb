"""What the import and home pages (views.py) share with the pages of keeping folders in step
(views_sync.py): the watch fields of a form, and the list of files removed from a synced folder.

A module of its own because views_sync builds on views: views importing views_sync would be a circle.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg
from aiohttp import web

from fotoowl.models import MAX_URL_CHARS
from fotoowl.models_sync import MAX_INTERVAL_S
from fotoowl.pipeline import removal
from fotoowl.pipeline.removal import PRUNED
from fotoowl.web import api_sync
from fotoowl.web.errors import ApiError
from fotoowl.web.keys import DB, SETTINGS
from fotoowl.web.params import decode_cursor, encode_cursor, parse_count

DEFAULT_INTERVAL_S = 300
REMOVED_PAGE = 50
# A typed interval is shown again after an error; anything longer is no interval anyway.
_SHOWN_INTERVAL_CHARS = 20


@dataclass(frozen=True, slots=True)
class WatchFields:
    """A watch as a form sends it: text as typed, so an error can show it again."""

    url: str
    interval: str
    recursive: bool
    prune: bool

    @classmethod
    def from_form(cls, form: Mapping[str, str]) -> WatchFields:
        return cls(
            url=form.get("folder_url", ""),
            interval=form.get("interval_s", "").strip(),
            recursive=_ticked(form.get("recursive")),
            prune=_ticked(form.get("prune")),
        )


def _ticked(value: str | None) -> bool:
    return value in ("on", "1", "true")


def form_interval(request: web.Request, typed: str) -> int:
    least_s = request.app[SETTINGS].watch_min_interval_s
    value = parse_count(typed)
    if value is None or not least_s <= value <= MAX_INTERVAL_S:
        raise ApiError(
            422,
            "invalid_field",
            f"Check the folder every {least_s} to {MAX_INTERVAL_S} seconds: a whole number of seconds, "
            f"at least {least_s} on this server.",
        )
    return value


async def create_watch(request: web.Request, fields: WatchFields) -> int:
    """A watch from a form; its first check, and so its first sync, starts at once. 422 on bad input."""
    interval_s = form_interval(request, fields.interval)
    return await api_sync.add_watch(request, fields.url, interval_s, recursive=fields.recursive, prune=fields.prune)


def watch_form_context(request: web.Request, fields: WatchFields | None = None) -> dict[str, Any]:
    """What a form with watch fields shows: as typed after an error, the defaults otherwise."""
    if fields is None:
        fields = WatchFields(url="", interval=str(DEFAULT_INTERVAL_S), recursive=True, prune=False)
    return {
        # Shown again as typed, less what no page can hold.
        "url": fields.url[:MAX_URL_CHARS].replace("\x00", "").encode("utf-8", "replace").decode(),
        "interval": fields.interval[:_SHOWN_INTERVAL_CHARS].replace("\x00", "").encode("utf-8", "replace").decode(),
        "recursive": fields.recursive,
        "prune": fields.prune,
        "min_interval": request.app[SETTINGS].watch_min_interval_s,
        "max_interval": MAX_INTERVAL_S,
    }


async def removed_list(request: web.Request, imp: Mapping[str, Any], cursor: str | None) -> dict[str, Any]:
    """One page of the files an import found gone from its folder (kept, or pruned with their image)."""
    if not imp["counts"]["removed"]:
        return {"files": [], "next_cursor": None, "cursor": cursor}
    after = decode_cursor(cursor) if cursor else 0
    # One row more than shown tells whether a next page exists.
    rows = await removal.removed_files(request.app[DB], imp["id"], after, REMOVED_PAGE + 1)
    page: list[asyncpg.Record] = list(rows[:REMOVED_PAGE])
    files = [dict(r, pruned=r["error_code"] == PRUNED) for r in page]
    next_cursor = encode_cursor(page[-1]["id"]) if len(rows) > REMOVED_PAGE else None
    return {"files": files, "next_cursor": next_cursor, "cursor": cursor}
