"""The servers every contender shares: embedded PostgreSQL, Valkey and SeaweedFS in a temp dir.

Each contender gets its own database (same server), its own Redis database number (flushed) and its
own key prefix in the one bucket, so runs cannot see each other's rows, jobs or objects.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import secrets
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import redis.asyncio as aioredis

from fotoowl import embedded
from fotoowl.config import AppSettings, Secret
from fotoowl.db import migrate_url

BUCKET = "bench"
S3_KEY_ID = "bench"


@dataclass
class Stack:
    postgres_admin_url: str
    redis_base_url: str  # redis://127.0.0.1:PORT
    s3_endpoint_url: str
    s3_secret: str
    server_pids: dict[str, int] = field(default_factory=dict)
    bucket: str = BUCKET
    s3_key_id: str = S3_KEY_ID
    _numbers: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def database_url(self, name: str) -> str:
        return self.postgres_admin_url.rsplit("/", 1)[0] + "/" + name

    async def fresh_database(self, label: str) -> str:
        """A new, migrated database for one contender; returns its URL."""
        name = f"bench_{next(self._numbers)}_{label}".replace("-", "_")
        conn = await asyncpg.connect(self.postgres_admin_url)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        url = self.database_url(name)
        await migrate_url(url)
        return url

    async def fresh_redis(self) -> str:
        """A flushed Redis database number of its own (Valkey has 16; runs cycle through 1-15)."""
        url = f"{self.redis_base_url}/{1 + next(self._numbers) % 15}"
        client = aioredis.Redis.from_url(url)
        try:
            await client.flushdb()
        finally:
            await client.aclose()
        return url

    def settings(
        self, *, database_url: str = "", redis_url: str = "", prefix: str = "images/", files_in_flight: int = 16
    ) -> AppSettings:
        return AppSettings(
            database_url=database_url,
            redis_url=redis_url,
            s3_endpoint_url=self.s3_endpoint_url,
            s3_bucket=self.bucket,
            s3_prefix=prefix,
            aws_access_key_id=self.s3_key_id,
            aws_secret_access_key=Secret(self.s3_secret),
            files_in_flight=files_in_flight,
        )

    def s3_env(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": self.s3_key_id, "AWS_SECRET_ACCESS_KEY": self.s3_secret, "AWS_REGION": "us-east-1"}

    def fotoowl_env(
        self,
        *,
        database_url: str,
        redis_url: str,
        prefix: str,
        source_env: Mapping[str, str],
        overrides: dict[str, str] | None = None,
    ) -> dict[str, str]:
        """The environment of a fotoowl process: defaults for every tuning knob unless overridden.
        `source_env` points it at the emulator (Manifest.source_env)."""
        env = {key: value for key, value in os.environ.items() if not key.startswith("FOTOOWL_")}
        env.update(self.s3_env())
        env.update(
            {
                "FOTOOWL_DATABASE_URL": database_url,
                "FOTOOWL_REDIS_URL": redis_url,
                "FOTOOWL_S3_ENDPOINT_URL": self.s3_endpoint_url,
                "FOTOOWL_S3_BUCKET": self.bucket,
                "FOTOOWL_S3_PREFIX": prefix,
                "FOTOOWL_LOG_FORMAT": "text",
            }
        )
        env.update(source_env)
        env.update(overrides or {})
        return env


@contextlib.contextmanager
def running_stack(data_dir: Path) -> Iterator[Stack]:
    """Start the three servers (non-durable, in data_dir) and stop them on the way out, whatever happens."""
    secret = secrets.token_urlsafe(18)
    with embedded.running(
        lambda: embedded.start_postgres(data_dir / "postgres", durable=False, database="bench"),
        lambda: embedded.start_valkey(data_dir / "valkey", durable=False),
        lambda: embedded.start_seaweedfs(
            data_dir / "seaweedfs", bucket=BUCKET, access_key_id=S3_KEY_ID, secret_access_key=secret
        ),
    ) as servers:
        by_name = {server.name: server for server in servers}
        yield Stack(
            postgres_admin_url=by_name["postgres"].extra["admin_url"],
            redis_base_url=by_name["valkey"].url.rsplit("/", 1)[0],
            s3_endpoint_url=by_name["seaweedfs"].url,
            s3_secret=secret,
            server_pids={server.name: server.proc.pid for server in servers},
        )
