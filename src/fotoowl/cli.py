"""The `fotoowl` command: serve, worker, migrate, dev, import, imports, images, drive-emulator."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Sequence

from aiohttp import web

from fotoowl.cli_direct import direct_import
from fotoowl.cli_import import EXIT_BAD_INPUT, EXIT_OK, cmd_images, cmd_import, cmd_imports, redacted_url, uses_api
from fotoowl.cli_watch import cmd_watch, cmd_watches
from fotoowl.config import AppSettings, ConfigError, Secret
from fotoowl.logs import setup_logging

# The tests (and any older caller) know the redaction under this name.
_redacted_url = redacted_url


def _import(settings: AppSettings, args: argparse.Namespace) -> int:
    return cmd_import(settings, args) if uses_api(settings, args) else direct_import(settings, args)


def main(argv: Sequence[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        settings = AppSettings.from_env()
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

    p = sub.add_parser("import", help="import a Google Drive folder (through the server at FOTOOWL_URL)")
    p.add_argument("url", help="a link to a public Google Drive folder, or its id")
    p.add_argument("--no-recursive", action="store_true", help="only the folder itself, not its subfolders")
    p.add_argument("--wait", action="store_true", help="show progress until the import ends")
    p.add_argument("--prune", action="store_true", help="a sync: delete the images of files no longer in the folder")
    p.add_argument("--json", action="store_true", help="print the final summary as one JSON object")
    p.add_argument(
        "--direct", action="store_true", help="no server: write to FOTOOWL_DATABASE_URL and FOTOOWL_REDIS_URL directly"
    )
    p.set_defaults(func=_import)

    p = sub.add_parser("watch", help="keep a folder in step: sync it every --interval-s (through FOTOOWL_URL)")
    p.add_argument("url", help="a link to a shared Google Drive or Dropbox folder")
    p.add_argument("--interval-s", type=_positive, default=300, help="seconds between checks (default 300)")
    p.add_argument("--prune", action="store_true", help="delete the images of files removed from the folder")
    p.add_argument("--no-recursive", action="store_true", help="only the folder itself, not its subfolders")
    p.add_argument("--json", action="store_true", help="print the watch as JSON")
    p.set_defaults(func=cmd_watch)

    p = sub.add_parser("watches", help="list the watches (from the server at FOTOOWL_URL)")
    p.add_argument("--limit", type=_positive, default=50, help="at most this many (default 50)")
    p.add_argument("--json", action="store_true", help="one JSON object a line")
    p.set_defaults(func=cmd_watches)

    p = sub.add_parser("imports", help="list the imports, newest first (from the server at FOTOOWL_URL)")
    p.add_argument("--limit", type=_positive, default=20, help="at most this many (default 20)")
    p.add_argument("--json", action="store_true", help="one JSON object a line")
    p.set_defaults(func=cmd_imports)

    p = sub.add_parser("images", help="list imported images, newest first (from the server at FOTOOWL_URL)")
    p.add_argument("--import-id", type=_positive, help="only this import's")
    p.add_argument("--q", metavar="TEXT", help="only names containing TEXT")
    p.add_argument("--folder", help="only this folder (a path in the imported folder) and its subfolders")
    p.add_argument("--mime-type", help="only this type, e.g. image/jpeg")
    p.add_argument("--limit", type=_positive, default=100, help="at most this many (default 100)")
    p.add_argument("--json", action="store_true", help="one JSON object a line")
    p.set_defaults(func=cmd_images)

    p = sub.add_parser("drive-emulator", help="serve the Drive v3 emulator with a generated sample folder")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--latency-ms", type=float, default=0.0)
    p.set_defaults(func=cmd_drive_emulator)
    return parser


def _positive(raw: str) -> int:
    if not raw.isascii() or not raw.isdigit() or int(raw) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, not {raw!r}")
    return int(raw)


# --- serve / worker / migrate ------------------------------------------------------------------


def _require_services(settings: AppSettings) -> None:
    missing = [
        name
        for name, value in (("FOTOOWL_DATABASE_URL", settings.database_url), ("FOTOOWL_REDIS_URL", settings.redis_url))
        if not value
    ]
    if missing:
        raise SystemExit(f"fotoowl: {' and '.join(missing)} must be set (or use `fotoowl dev`)")


def cmd_serve(settings: AppSettings, args: argparse.Namespace) -> int:
    from fotoowl.web.app import create_app

    _require_services(settings)
    settings = settings.replace(
        host=args.host or settings.host,
        port=args.port or settings.port,
        embedded_workers=settings.embedded_workers and not args.no_worker,
    )
    app = create_app(settings)
    web.run_app(
        app,
        host=settings.host,
        port=settings.port,
        access_log=None,
        print=lambda _: print(f"fotoowl serving on http://{settings.host}:{settings.port}/", flush=True),
    )
    return EXIT_OK


def cmd_worker(settings: AppSettings, args: argparse.Namespace) -> int:
    from fotoowl.worker import run_worker_forever

    _require_services(settings)
    run_worker_forever()
    return EXIT_OK


def cmd_migrate(settings: AppSettings, args: argparse.Namespace) -> int:
    from fotoowl.db import migrate_url

    _require_services(settings)
    applied = asyncio.run(migrate_url(settings.database_url))
    print("applied: " + ", ".join(applied) if applied else "the database is up to date")
    return EXIT_OK


# --- dev: the embedded stack -------------------------------------------------------------------


def cmd_dev(settings: AppSettings, args: argparse.Namespace) -> int:
    from fotoowl import embedded
    from fotoowl.demo import demo_sources, drive_demo, dropbox_demo, with_demo_credentials
    from fotoowl.storage_backends import ensure_bucket
    from fotoowl.web.app import create_app
    from fotoowl.web.keys import DEMO_FOLDERS

    data_dir = settings.data_dir.absolute()
    starters = []
    if not settings.database_url:
        starters.append(lambda: embedded.start_postgres(data_dir / "postgres"))
    if not settings.redis_url:
        starters.append(lambda: embedded.start_valkey(data_dir / "valkey"))
    key_id, secret = settings.aws_access_key_id, settings.aws_secret_access_key.get()
    if settings.storage == "s3" and not settings.s3_endpoint_url:
        key_id, secret = embedded.s3_credentials(data_dir)
        starters.append(
            lambda: embedded.start_seaweedfs(
                data_dir / "seaweedfs", bucket=settings.s3_bucket, access_key_id=key_id, secret_access_key=secret
            )
        )
    print(f"fotoowl dev: data in {data_dir}", flush=True)
    with embedded.running(*starters) as servers:
        urls = {s.name: s.url for s in servers}
        settings = settings.replace(
            database_url=urls.get("postgres", settings.database_url),
            redis_url=urls.get("valkey", settings.redis_url),
            s3_endpoint_url=urls.get("seaweedfs", settings.s3_endpoint_url),
            aws_access_key_id=key_id,
            aws_secret_access_key=Secret(secret),
            port=args.port or settings.port,
        )
        for server in servers:
            print(f"  {server.name:<10} {server.url}", flush=True)
        asyncio.run(ensure_bucket(settings))
        demo = demo_sources(settings)
        settings = with_demo_credentials(settings, demo)
        app = create_app(settings)
        # Before the embedded workers start, which read the emulators' addresses from the settings.
        if "dropbox" in demo:
            app.cleanup_ctx.insert(0, dropbox_demo(args.demo_images))
        if "google_drive" in demo:
            app.cleanup_ctx.insert(0, drive_demo(args.demo_images))

        async def announce(app: web.Application) -> None:
            print(f"\nfotoowl is running: http://{settings.host}:{settings.port}/", flush=True)
            demo_folders: dict[str, str] = app[DEMO_FOLDERS] if DEMO_FOLDERS in app else {}  # noqa: SIM401
            for label, url in demo_folders.items():
                print(
                    f"No {label} credentials are configured, so imports use the built-in {label} emulator.\n"
                    f"  Try its sample folder: {url}",
                    flush=True,
                )
            print("Press Ctrl-C to stop.", flush=True)

        app.on_startup.append(announce)
        web.run_app(app, host=settings.host, port=settings.port, access_log=None, print=None)
    print("fotoowl dev: stopped", flush=True)
    return EXIT_OK


def cmd_drive_emulator(settings: AppSettings, args: argparse.Namespace) -> int:
    from fotoowl.testing.drive_emulator import serve_demo

    # As a container's main process it is stopped with SIGTERM: stop the same way as on Ctrl-C.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_demo(args.host, args.port, args.images, args.seed, latency_s=args.latency_ms / 1000))
    return EXIT_OK


if __name__ == "__main__":
    main()
