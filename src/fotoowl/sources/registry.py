"""Every source a process can read, built from the settings: the one module that knows them all.

The pipeline, the worker, the API and the pages know sources only through sources/base.py; this
module (with sources/links.py for links) is where a new source is added.
"""

from __future__ import annotations

import hashlib

import aiohttp
from arq import ArqRedis

from fotoowl.config import AppSettings
from fotoowl.pacer import PriorityLane, RedisPacer
from fotoowl.sources.base import Source
from fotoowl.sources.dropbox.source import DropboxSource
from fotoowl.sources.google_drive.client import DriveClient
from fotoowl.sources.google_drive.source import DriveSource
from fotoowl.sources.google_drive_public.source import DrivePublicSource, public_pacer

# The most of the Drive request quota listing pages may take.
LISTING_SHARE = 0.1


def drive_client(settings: AppSettings, session: aiohttp.ClientSession, redis: ArqRedis) -> DriveClient:
    key = settings.google_api_key.get()
    # One bucket per API key, shared by every worker process on every machine.
    bucket = "fotoowl:pacer:" + hashlib.sha256(key.encode()).hexdigest()[:16]
    # Listing pages (a few a second at most) never queue behind downloads: they go ahead in a lane of
    # their own and the downloads wait for what they took, so the downloads have the whole quota
    # whenever nothing is being listed (a fixed split left the listing's share idle).
    listing_rate_per_s = max(1.0, settings.drive_rate_per_s * LISTING_SHARE)
    pacer = RedisPacer(redis, bucket, settings.drive_rate_per_s, settings.drive_burst)
    listing_pacer = PriorityLane(
        RedisPacer(redis, bucket + ":listing", listing_rate_per_s, max(1, int(listing_rate_per_s))), pacer
    )
    return DriveClient(
        session,
        api_url=settings.drive_api_url,
        api_key=key or None,
        pacer=pacer,
        listing_pacer=listing_pacer,
        read_timeout_s=settings.drive_read_timeout_s,
        max_tries=settings.drive_max_tries,
        folders_at_once=settings.listing_folders_at_once,
    )


def open_sources(settings: AppSettings, session: aiohttp.ClientSession, redis: ArqRedis) -> dict[str, Source]:
    """Every source this process can read, by name (Dropbox only with an app key and secret)."""
    sources: dict[str, Source] = {}
    drive = DriveSource(drive_client(settings, session, redis))
    sources[drive.name] = drive
    # Drive without a key, for imports recorded with the public_page reader.
    pacer_public = public_pacer(
        redis, rate_per_s=settings.drive_public_rate_per_s, burst=max(1, int(2 * settings.drive_public_rate_per_s))
    )
    sources[f"{drive.name}:public_page"] = DrivePublicSource(
        session,
        pacer=pacer_public,
        page_url=settings.drive_public_page_url,
        download_url=settings.drive_public_download_url,
        folders_at_once=settings.listing_folders_at_once,
    )
    if settings.dropbox_app_key and settings.dropbox_app_secret:
        key = settings.dropbox_app_key
        bucket = "fotoowl:pacer:dropbox:" + hashlib.sha256(key.encode()).hexdigest()[:16]
        pacer = RedisPacer(redis, bucket, settings.dropbox_rate_per_s, max(1, int(settings.dropbox_rate_per_s)))
        dropbox = DropboxSource(
            session,
            app_key=key,
            app_secret=settings.dropbox_app_secret.get(),
            api_url=settings.dropbox_api_url,
            content_url=settings.dropbox_content_url,
            pacer=pacer,
            max_tries=settings.drive_max_tries,
        )
        sources[dropbox.name] = dropbox
    return sources
