"""The naive pipeline, written the way most public implementations of this task are. Bench only.

List the folder (files.list per folder, recursively), then for each file, one after another:
download the whole body into memory with aiohttp, `put_object` it, INSERT one row with asyncpg.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import asyncpg
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

FOLDER = "application/vnd.google-apps.folder"


@dataclass(frozen=True)
class NaiveResult:
    listed: int
    list_seconds: float
    copied: int
    copied_bytes: int
    copy_seconds: float


async def list_files(
    session: aiohttp.ClientSession, api_url: str, api_key: str, folder_id: str, path: str = ""
) -> list[dict[str, Any]]:
    files: list[dict[str, Any]] = []
    token = None
    while True:
        params = {
            "q": f"'{folder_id}' in parents and trashed = false",
            "key": api_key,
            "pageSize": "1000",
            "fields": "nextPageToken,files(id,name,mimeType,size,md5Checksum)",
        }
        if token:
            params["pageToken"] = token
        async with session.get(f"{api_url}/files", params=params) as response:
            response.raise_for_status()
            page = await response.json()
        for item in page["files"]:
            if item["mimeType"] == FOLDER:
                files += await list_files(session, api_url, api_key, item["id"], f"{path}{item['name']}/")
            elif item["mimeType"].startswith("image/"):
                files.append({**item, "path": path})
        token = page.get("nextPageToken")
        if not token:
            return files


async def run_naive(
    *,
    api_url: str,
    api_key: str,
    root_id: str,
    sample_ids: list[str],
    s3_endpoint_url: str,
    bucket: str,
    key_id: str,
    secret: str,
    database_url: str,
    prefix: str,
) -> NaiveResult:
    """Copy the listed files whose ids are in `sample_ids` (in that order), one at a time."""
    conn = await asyncpg.connect(database_url)
    await conn.execute(
        """CREATE TABLE IF NOT EXISTS naive_images (
               id serial PRIMARY KEY, drive_id text UNIQUE, name text, path text, size bigint, s3_key text,
               created_at timestamptz DEFAULT now())"""
    )
    # The only non-default setting: SeaweedFS wants path-style URLs and no CRC trailers.
    config = AioConfig(
        s3={"addressing_style": "path"},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    try:
        async with (
            aiohttp.ClientSession() as session,
            get_session().create_client(
                "s3",
                endpoint_url=s3_endpoint_url,
                aws_access_key_id=key_id,
                aws_secret_access_key=secret,
                region_name="us-east-1",
                config=config,
            ) as s3,
        ):
            started = time.monotonic()
            listed = await list_files(session, api_url, api_key, root_id)
            list_seconds = time.monotonic() - started
            by_id = {f["id"]: f for f in listed}
            started = time.monotonic()
            copied_bytes = 0
            for file_id in sample_ids:
                f = by_id[file_id]
                async with session.get(
                    f"{api_url}/files/{file_id}", params={"alt": "media", "key": api_key}
                ) as response:
                    response.raise_for_status()
                    data = await response.read()
                key = f"{prefix}{f['path']}{f['name']}"
                await s3.put_object(Bucket=bucket, Key=key, Body=data, ContentType=f["mimeType"])
                await conn.execute(
                    "INSERT INTO naive_images (drive_id, name, path, size, s3_key) VALUES ($1, $2, $3, $4, $5)",
                    file_id,
                    f["name"],
                    f["path"],
                    len(data),
                    key,
                )
                copied_bytes += len(data)
            copy_seconds = time.monotonic() - started
    finally:
        await conn.close()
    return NaiveResult(len(listed), list_seconds, len(sample_ids), copied_bytes, copy_seconds)
