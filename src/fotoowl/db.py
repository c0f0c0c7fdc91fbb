"""PostgreSQL: the connection pool and the numbered migrations in `sql/`."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass
from importlib.resources.abc import Traversable
from pathlib import Path

import asyncpg

from fotoowl import resources
from fotoowl.config import AppSettings

log = logging.getLogger("fotoowl.db")

# Any constant works: it only has to be the same in every process that migrates.
_MIGRATION_LOCK_ID = 0x466F746F4F776C  # "FotoOwl"
_MIGRATION_NAME = re.compile(r"^(\d{3,})_[a-z0-9_]+\.sql$")


def sql_dir() -> Path:
    """The migrations: `fotoowl/sql/` in an installed wheel, `sql/` of the checkout in development."""
    return resources.folder("sql")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def load_migrations(folder: Traversable | None = None) -> list[Migration]:
    folder = folder or sql_dir()
    migrations = []
    for path in sorted(folder.iterdir(), key=lambda entry: entry.name):
        match = _MIGRATION_NAME.match(path.name)
        if match:
            migrations.append(Migration(int(match.group(1)), path.name, path.read_text(encoding="utf-8")))
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise ValueError(f"two migrations share a number in {folder}")
    return migrations


async def migrate(conn: asyncpg.Connection, folder: Traversable | None = None) -> list[str]:
    """Apply pending migrations in order, each in its own transaction; returns their names.

    A session advisory lock serialises concurrent callers (several workers starting at once):
    the second one waits, then finds nothing left to do.
    """
    await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK_ID)
    try:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version    integer PRIMARY KEY,
                   name       text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now()
               )"""
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        applied = []
        for migration in load_migrations(folder):
            if migration.version in done:
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                    migration.version,
                    migration.name,
                )
            log.info("applied migration", extra={"migration": migration.name})
            applied.append(migration.name)
        return applied
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK_ID)


async def migrate_url(database_url: str, *, wait_s: float = 60.0) -> list[str]:
    """Migrate, waiting up to `wait_s` for a database that is still starting (containers start together)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            conn = await asyncpg.connect(database_url)
            break
        except (OSError, asyncpg.CannotConnectNowError, asyncpg.PostgresConnectionError) as exc:
            if time.monotonic() >= deadline:
                raise
            log.warning("the database is not ready (%s); trying again", type(exc).__name__)
            await asyncio.sleep(1.0)
    try:
        return await migrate(conn)
    finally:
        await conn.close()


async def create_pool(settings: AppSettings, *, min_size: int = 1) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        settings.database_url,
        min_size=min_size,
        max_size=settings.db_pool_size,
        command_timeout=60,
    )
    assert pool is not None
    return pool
