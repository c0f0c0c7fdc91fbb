"""`fotoowl import --direct`: record the import in PostgreSQL and queue it on Redis, no server needed."""

from __future__ import annotations

import argparse
import asyncio

from fotoowl.cli_import import (
    EXIT_BAD_INPUT,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    _fail,
    _finish,
    _print_queued,
    _progress_wanted,
    redacted_url,
    watch,
)
from fotoowl.config import DEFAULT_DRIVE_API_URL, AppSettings
from fotoowl.models import Import
from fotoowl.sources.base import FolderLink


def direct_import(settings: AppSettings, args: argparse.Namespace) -> int:
    from fotoowl.sources.base import InvalidLink
    from fotoowl.sources.links import parse_link

    try:
        link = parse_link(args.url)
    except InvalidLink as exc:
        return _fail(args, EXIT_BAD_INPUT, "invalid_folder_url", str(exc))
    no_drive_key = not settings.google_api_key and settings.drive_api_url == DEFAULT_DRIVE_API_URL
    if link.source == "google_drive" and no_drive_key:
        return _fail(
            args,
            EXIT_BAD_INPUT,
            "no_api_key",
            "No Google API key: set FOTOOWL_GOOGLE_API_KEY (see the README for how to get one).",
        )
    missing = [
        name
        for name, value in (("FOTOOWL_DATABASE_URL", settings.database_url), ("FOTOOWL_REDIS_URL", settings.redis_url))
        if not value
    ]
    if missing:
        return _fail(
            args,
            EXIT_BAD_INPUT,
            "missing_setting",
            f"`fotoowl import --direct` needs {' and '.join(missing)}; without --direct it asks the "
            "server at FOTOOWL_URL instead",
        )
    try:
        return asyncio.run(_direct(settings, args, link))
    except _Unavailable as exc:
        return _fail(args, EXIT_UNAVAILABLE, exc.code, exc.message)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


class _Unavailable(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _unavailable(service: str, code: str, url: str, exc: BaseException) -> _Unavailable:
    detail = " ".join(f"{type(exc).__name__}: {exc}".split())
    return _Unavailable(code, f"cannot connect to {service} at {redacted_url(url)} ({detail})")


async def _direct(settings: AppSettings, args: argparse.Namespace, link: FolderLink) -> int:
    import asyncpg
    import redis.asyncio as aioredis
    from redis.exceptions import RedisError

    from fotoowl.db import create_pool, migrate
    from fotoowl.pipeline import control
    from fotoowl.worker import create_arq_pool

    try:
        pool = await create_pool(settings, min_size=1)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise _unavailable("the database", "database_unavailable", settings.database_url, exc) from None
    try:
        # arq's own connect retries for seconds, logging a warning each time; a one-shot command
        # answers at once and leaves retrying to the caller, which the distinct exit code allows.
        probe = aioredis.Redis.from_pool(aioredis.ConnectionPool.from_url(settings.redis_url))
        try:
            await probe.ping()
            redis = await create_arq_pool(settings)
        except (OSError, TimeoutError, RedisError) as exc:
            raise _unavailable("Redis", "redis_unavailable", settings.redis_url, exc) from None
        finally:
            await probe.aclose()
    except BaseException:
        await pool.close()
        raise
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
        reader = settings.drive_reader_in_use() if link.source == "google_drive" else None
        row = await control.create_import(
            pool, redis, link, recursive=not args.no_recursive, reader=reader, prune=args.prune
        )
        import_id = row["id"]
        if not args.wait:
            _print_queued(Import.from_row(row), args, f"/imports/{import_id}")
            return EXIT_OK

        async def fetch() -> Import:
            return Import.from_row(await pool.fetchrow("SELECT * FROM imports WHERE id = $1", import_id))

        info = await watch(
            fetch, show_progress=_progress_wanted(args), watching=f"import {import_id} goes on in the workers"
        )
    finally:
        await redis.aclose()
        await pool.close()
    return _finish(info, args, failures=info.urls.failures)
