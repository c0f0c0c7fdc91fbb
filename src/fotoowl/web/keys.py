"""The typed keys of everything the web app owns, in a module of their own so route modules need not
import `app.py` (which imports every route module)."""

from __future__ import annotations

import asyncpg
import jinja2
from aiohttp import web
from arq import ArqRedis

from fotoowl.config import AppSettings
from fotoowl.storage import Storage
from fotoowl.worker import EmbeddedWorker

SETTINGS = web.AppKey("settings", AppSettings)
DB = web.AppKey("db", asyncpg.Pool)
ARQ = web.AppKey("arq", ArqRedis)
STORAGE = web.AppKey("storage", Storage)
WORKER = web.AppKey("worker", EmbeddedWorker)
TEMPLATES = web.AppKey("templates", jinja2.Environment)
# Set only by `fotoowl dev` in demo mode: each built-in sample folder's link by the source it is on
# ("Google Drive", "Dropbox"), offered on the home page.
DEMO_FOLDERS = web.AppKey("demo_folders", dict[str, str])
