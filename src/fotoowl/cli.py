"""The `fotoowl` command: serve, worker, migrate, dev, import, drive-emulator."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import sys
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from aiohttp import web

from fotoowl.config import DEFAULT_DRIVE_API_URL, ConfigError, Secret, Settings
from fotoowl.logs import setup_logging

EXIT_OK, EXIT_FAILED_FILES, EXIT_BAD_INPUT, EXIT_IMPORT_FAILED, EXIT_UNAVAILABLE = 0, 1, 2, 3, 4
DEMO_API_KEY = "fotoowl-demo-key"



def main(argv: Sequence[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"fotoowl: configuration error: {exc}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    setup_logging(settings)
    sys.exit(args.func(settings, args) or 0)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fotoowl", description=__doc__)
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    p = sub.add_parser("serve", help="web app and API, with an embedded worker pool unless --no-worker")
    p.add_argument("--no-worker", action="store_true", help="serve the web app only")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("worker", help="a worker process (same as `arq fotoowl.worker.Settings`)")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("migrate", help="apply the SQL migrations")
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("dev", help="the whole system on embedded PostgreSQL, Valkey and SeaweedFS")
    p.add_argument("--port", type=int)
    p.add_argument("--demo-images", type=int, default=120, help="images in the built-in sample folder")
    p.set_defaults(func=cmd_dev)

    p = sub.add_parser("import", help="import a Google Drive folder")
    p.add_argument("url", help="a link to a public Google Drive folder, or its id")
    p.add_argument("--no-recursive", action="store_true", help="only the folder itself, not its subfolders")
    p.add_argument("--wait", action="store_true", help="show progress until the import ends")
    p.add_argument("--json", action="store_true", help="print the final summary as one JSON object")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("drive-emulator", help="serve the Drive v3 emulator with a generated sample folder")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--latency-ms", type=float, default=0.0)
    p.set_defaults(func=cmd_drive_emulator)
    return parser


# --- serve / worker / migrate ------------------------------------------------------------------

def _require_services(settings: Settings) -> None:
    missing = [name for name, value in (("FOTOOWL_DATABASE_URL", settings.database_url),
                                         ("FOTOOWL_REDIS_URL", settings.redis_url)) if not value]
    if missing:
        raise SystemExit(f"fotoowl: {' and '.join(missing)} must be set (or use `fotoowl dev`)")


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    from fotoowl.web.app import create_app

    _require_services(settings)
    settings = settings.replace(host=args.host or settings.host, port=args.port or settings.port,
                                embedded_workers=settings.embedded_workers and not args.no_worker)
    app = create_app(settings)
    web.run_app(app, host=settings.host, port=settings.port, access_log=None,
                print=lambda _: print(f"fotoowl serving on http://{settings.host}:{settings.port}/",
                                      flush=True))
    return EXIT_OK


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    from fotoowl.worker import run_worker_forever

    _require_services(settings)
    run_worker_forever()
    return EXIT_OK


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    from fotoowl.db import migrate_url

    _require_services(settings)
    applied = asyncio.run(migrate_url(settings.database_url))
    print("applied: " + ", ".join(applied) if applied else "the database is up to date")
    return EXIT_OK


# --- dev: the embedded stack -------------------------------------------------------------------

def cmd_dev(settings: Settings, args: argparse.Namespace) -> int:
    from fotoowl import embedded
    from fotoowl.storage import ensure_bucket
    from fotoowl.web.app import DEMO_FOLDER_URL, create_app

    data_dir = settings.data_dir.absolute()
    starters = []
    if not settings.database_url:
        starters.append(lambda: embedded.start_postgres(data_dir / "postgres"))
    if not settings.redis_url:
        starters.append(lambda: embedded.start_valkey(data_dir / "valkey"))
    key_id, secret = settings.aws_access_key_id, settings.aws_secret_access_key.get()
    if settings.storage == "s3" and not settings.s3_endpoint_url:
        key_id, secret = embedded.s3_credentials(data_dir)
        starters.append(lambda: embedded.start_seaweedfs(data_dir / "seaweedfs", bucket=settings.s3_bucket,
                                                         access_key_id=key_id, secret_access_key=secret))
    print(f"fotoowl dev: data in {data_dir}", flush=True)
    with embedded.running(*starters) as servers:
        urls = {s.name: s.url for s in servers}
        settings = settings.replace(
            database_url=urls.get("postgres", settings.database_url),
            redis_url=urls.get("valkey", settings.redis_url),
            s3_endpoint_url=urls.get("seaweedfs", settings.s3_endpoint_url),
            aws_access_key_id=key_id, aws_secret_access_key=Secret(secret),
            port=args.port or settings.port,
        )
        for server in servers:
            print(f"  {server.name:<10} {server.url}", flush=True)
        asyncio.run(ensure_bucket(settings))
        demo = not settings.google_api_key and settings.drive_api_url == DEFAULT_DRIVE_API_URL
        if demo:
            settings = settings.replace(google_api_key=Secret(DEMO_API_KEY))
        app = create_app(settings)
        if demo:
            app.cleanup_ctx.insert(0, _demo_emulator_ctx(args.demo_images))

        async def announce(app: web.Application) -> None:
            print(f"\nfotoowl is running: http://{settings.host}:{settings.port}/", flush=True)
            if demo:
                print("No Google API key is configured (FOTOOWL_GOOGLE_API_KEY), so imports use the built-in\n"
                      f"Drive emulator. Try its sample folder: {app[DEMO_FOLDER_URL]}", flush=True)
            print("Press Ctrl-C to stop.", flush=True)

        app.on_startup.append(announce)
        web.run_app(app, host=settings.host, port=settings.port, access_log=None, print=None)
    print("fotoowl dev: stopped", flush=True)
    return EXIT_OK


def _demo_emulator_ctx(n_images: int) -> Any:
    """Serve a sample folder from the Drive emulator in the app's own loop; point the app at it."""
    from fotoowl.testing.drive_emulator import DriveEmulator, build_demo_tree, start_emulator
    from fotoowl.web.app import DEMO_FOLDER_URL, SETTINGS

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        emu = DriveEmulator(api_keys={DEMO_API_KEY}, seed=7)
        tree = build_demo_tree(emu, n_images, seed=7)
        runner, api_url = await start_emulator(emu)
        app[SETTINGS] = app[SETTINGS].replace(drive_api_url=api_url)
        app[DEMO_FOLDER_URL] = tree.link
        yield
        await runner.cleanup()

    return ctx


def cmd_drive_emulator(settings: Settings, args: argparse.Namespace) -> int:
    from fotoowl.testing.drive_emulator import serve_demo

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_demo(args.host, args.port, args.images, args.seed, latency_s=args.latency_ms / 1000))
    return EXIT_OK


# --- import ------------------------------------------------------------------------------------

def cmd_import(settings: Settings, args: argparse.Namespace) -> int:
    from fotoowl.drive import InvalidFolderLink, parse_folder_link

    try:
        ref = parse_folder_link(args.url)
    except InvalidFolderLink as exc:
        return _fail(args, EXIT_BAD_INPUT, "invalid_folder_url", str(exc))
    if not settings.google_api_key and settings.drive_api_url == DEFAULT_DRIVE_API_URL:
        return _fail(args, EXIT_BAD_INPUT, "no_api_key",
                     "No Google API key: set FOTOOWL_GOOGLE_API_KEY (see the README for how to get one).")
    _require_services(settings)
    return asyncio.run(_import(settings, args, ref))


def _fail(args: argparse.Namespace, code: int, error: str, message: str) -> int:
    if args.json:
        print(json.dumps({"status": "rejected", "error": {"code": error, "message": message}}))
    else:
        print(f"fotoowl: {message}", file=sys.stderr)
    return code


class _Unavailable(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


_PASSWORD_PARAM_RE = re.compile(r"(?i)([?&]password=)[^&#]*")


def _redacted_url(url: str) -> str:
    """The URL with its password masked, both as user:password@ and as a ?password= parameter."""
    parts = urlsplit(url)
    if parts.password is not None:
        # Rebuilt rather than str.replace(password): a password equal to the user name must not survive.
        userinfo, _, hostport = parts.netloc.rpartition("@")
        url = urlunsplit(parts._replace(netloc=f"{userinfo.split(':', 1)[0]}:****@{hostport}"))
    return _PASSWORD_PARAM_RE.sub(r"\1****", url)


def _unavailable(service: str, code: str, url: str, exc: BaseException) -> _Unavailable:
    detail = " ".join(f"{type(exc).__name__}: {exc}".split())
    return _Unavailable(code, f"cannot connect to {service} at {_redacted_url(url)} ({detail})")


async def _import(settings: Settings, args: argparse.Namespace, ref: Any) -> int:
    try:
        return await _import_with_services(settings, args, ref)
    except _Unavailable as exc:
        return _fail(args, EXIT_UNAVAILABLE, exc.code, exc.message)


async def _import_with_services(settings: Settings, args: argparse.Namespace, ref: Any) -> int:
    import asyncpg
    import redis.asyncio as aioredis
    from redis.exceptions import RedisError

    from fotoowl import importer
    from fotoowl.db import create_pool, migrate
    from fotoowl.web.api import import_json
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
        row = await importer.create_import(pool, redis, ref, args.url.strip(), recursive=not args.no_recursive)
        import_id = row["id"]
        if not args.wait:
            summary = import_json(row)
            print(json.dumps(summary) if args.json else f"import {import_id} queued: fotoowl import status "
                  f"at /imports/{import_id}")
            return EXIT_OK
        row = await _wait(pool, import_id, show_progress=not args.json and sys.stderr.isatty())
        summary = import_json(row)
    finally:
        await redis.aclose()
        await pool.close()
    if args.json:
        print(json.dumps(summary))
    else:
        _print_summary(summary)
    return _exit_code(summary)


async def _wait(pool: Any, import_id: int, *, show_progress: bool) -> Any:
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    from fotoowl.importer import FINISHED

    progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[files]}"),
                        DownloadColumn(), TextColumn("{task.fields[rate]}"), TimeRemainingColumn(),
                        disable=not show_progress, transient=True)
    with progress:
        task = progress.add_task("listing", total=None, files="", rate="")
        started = time.monotonic()
        while True:
            row = await pool.fetchrow("SELECT * FROM imports WHERE id = $1", import_id)
            done = row["imported_count"] + row["skipped_count"] + row["failed_count"]
            elapsed_s = max(time.monotonic() - started, 0.001)
            progress.update(task, description=row["status"], total=row["bytes_found"] or None,
                            completed=row["bytes_imported"],
                            files=f"{done}/{row['found_count']} files",
                            rate=f"{row['imported_count'] / elapsed_s:.1f} img/s")
            if row["status"] in FINISHED:
                return row
            await asyncio.sleep(0.5)


def _print_summary(summary: dict[str, Any]) -> None:
    c = summary["counts"]
    print(f"import {summary['id']}: {summary['status']} - {c['imported']} imported, {c['skipped']} skipped, "
          f"{c['failed']} failed of {c['found']} found; {summary['bytes']['imported']:,} bytes")
    if summary["error"]:
        print(f"error: {summary['error']['message']}", file=sys.stderr)


def _exit_code(summary: dict[str, Any]) -> int:
    from fotoowl import importer

    status = summary["status"]
    if status == "failed":
        error = summary["error"] or {}
        bad_input = (importer.FOLDER_NOT_ACCESSIBLE, importer.DRIVE_CONFIGURATION_ERROR)
        return EXIT_BAD_INPUT if error.get("code") in bad_input else EXIT_IMPORT_FAILED
    if status == "cancelled":
        return EXIT_IMPORT_FAILED
    return EXIT_FAILED_FILES if summary["counts"]["failed"] else EXIT_OK


if __name__ == "__main__":
    main()
