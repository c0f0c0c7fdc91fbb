"""`fotoowl import`, `fotoowl imports`, `fotoowl images`: the command line as a client of the running server.

They talk to the JSON API at FOTOOWL_URL (default: where `fotoowl serve` / `make run` listen), with
FOTOOWL_API_TOKEN when set. `fotoowl import --direct` instead records the import in PostgreSQL and
queues it on Redis itself, for scripts that have no server; it is also what `fotoowl import` does when
FOTOOWL_DATABASE_URL is set and FOTOOWL_URL is not, as it always did there.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from urllib.parse import urlsplit, urlunsplit

from rich.console import Console
from rich.filesize import decimal
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

from fotoowl.client import (
    DRIVE_CONFIGURATION_ERROR,
    FOLDER_NOT_ACCESSIBLE,
    ApiFailure,
    FotoowlClient,
    ImageFilters,
    ServiceUnreachable,
)
from fotoowl.config import AppSettings
from fotoowl.models import Import
from fotoowl.statuses import FINISHED, ImportStatus

EXIT_OK, EXIT_FAILED_FILES, EXIT_BAD_INPUT, EXIT_IMPORT_FAILED, EXIT_UNAVAILABLE = 0, 1, 2, 3, 4
EXIT_INTERRUPTED = 130  # what shells report for Ctrl-C
POLL_S = 0.5
# Polling rides out a server restart or a proxy's 502 this long before giving up on it.
POLL_GRACE_S = 30.0
_GATEWAY_STATUSES = (502, 503, 504)


_PASSWORD_PARAM_RE = re.compile(r"(?i)([?&]password=)[^&#]*")


def redacted_url(url: str) -> str:
    """The URL with its password masked, both as user:password@ and as a ?password= parameter."""
    parts = urlsplit(url)
    if parts.password is not None:
        # Rebuilt rather than str.replace(password): a password equal to the user name must not survive.
        userinfo, _, hostport = parts.netloc.rpartition("@")
        url = urlunsplit(parts._replace(netloc=f"{userinfo.split(':', 1)[0]}:****@{hostport}"))
    return _PASSWORD_PARAM_RE.sub(r"\1****", url)


def server_url(settings: AppSettings) -> str:
    """FOTOOWL_URL, or where a server started with the same FOTOOWL_HOST / FOTOOWL_PORT listens."""
    url = os.environ.get("FOTOOWL_URL", "").strip()
    if url:
        return url
    host = settings.host
    if host in ("", "0.0.0.0", "::"):  # listening everywhere includes loopback
        host = "127.0.0.1"
    return f"http://{f'[{host}]' if ':' in host else host}:{settings.port}"


def uses_api(settings: AppSettings, args: argparse.Namespace) -> bool:
    if args.direct:
        return False
    # Scripts written before the client mode set FOTOOWL_DATABASE_URL and no FOTOOWL_URL: they keep
    # writing to the database directly, as they did, and need no server.
    return bool(os.environ.get("FOTOOWL_URL", "").strip()) or not settings.database_url


# --- the commands -------------------------------------------------------------------------------


def cmd_import(settings: AppSettings, args: argparse.Namespace) -> int:
    """Through the API; cli.py sends `--direct` (and old-style scripts) to fotoowl.cli_direct instead."""
    return _with_api(settings, args, _api_import, direct_hint=True)


def cmd_imports(settings: AppSettings, args: argparse.Namespace) -> int:
    return _with_api(settings, args, _list_imports)


def cmd_images(settings: AppSettings, args: argparse.Namespace) -> int:
    return _with_api(settings, args, _list_images)


Action = Callable[[FotoowlClient, argparse.Namespace], Awaitable[int]]


def _with_api(settings: AppSettings, args: argparse.Namespace, action: Action, *, direct_hint: bool = False) -> int:
    base = server_url(settings)
    try:
        api = FotoowlClient(base, settings.api_token.get())
    except ValueError:
        return _fail(
            args,
            EXIT_BAD_INPUT,
            "invalid_setting",
            f"FOTOOWL_URL must be a URL starting with http:// or https://, not {redacted_url(base)!r}",
        )
    shown = redacted_url(api.base_url)

    async def run() -> int:
        async with api:
            try:
                return await action(api, args)
            except ServiceUnreachable as exc:
                hint = ", or use `fotoowl import --direct`" if direct_hint else ""
                return _fail(
                    args,
                    EXIT_UNAVAILABLE,
                    "server_unavailable",
                    f"cannot reach the fotoowl server at {shown} (FOTOOWL_URL): {exc.reason}. "
                    f"Start it with `make run` or `fotoowl serve`, or set FOTOOWL_URL to where it runs{hint}.",
                )
            except ApiFailure as exc:
                return _fail(args, *_explain(exc, shown, bool(settings.api_token)))

    try:
        return asyncio.run(run())
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `fotoowl images --json | head`: the reader has what it wanted. Python's own flush at exit
        # would hit the closed pipe again, so stdout goes nowhere from here on.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


def _explain(exc: ApiFailure, shown: str, token_set: bool) -> tuple[int, str, str]:
    """The exit code, error code and one-line message for an error answer."""
    if exc.status == 401:
        advice = (
            "FOTOOWL_API_TOKEN is not the server's token"
            if token_set
            else "set FOTOOWL_API_TOKEN to the server's token"
        )
        return EXIT_BAD_INPUT, exc.code, f"{shown} refused the request (401 {exc.code}): {advice}. {exc.message}"
    if exc.status in _GATEWAY_STATUSES:
        return EXIT_UNAVAILABLE, exc.code, f"{shown} is not available: {exc.message} ({exc.status} {exc.code})"
    if exc.status >= 500:
        return EXIT_IMPORT_FAILED, exc.code, f"{shown} failed: {exc.message} ({exc.status} {exc.code})"
    if exc.code.startswith("http_"):  # not an error of the fotoowl API
        return EXIT_BAD_INPUT, exc.code, f"{shown}: {exc.message}; is FOTOOWL_URL the fotoowl server?"
    # An invalid link and the like: the server's own words say what to fix.
    return EXIT_BAD_INPUT, exc.code, exc.message if exc.status == 422 else f"{exc.message} ({exc.status} {exc.code})"


async def _api_import(api: FotoowlClient, args: argparse.Namespace) -> int:
    started = await api.start_import(args.url.strip(), recursive=not args.no_recursive, prune=args.prune)
    import_id = started.import_id
    page = f"{redacted_url(api.base_url)}/ui/imports/{import_id}"
    if not args.wait:
        _print_queued(await api.get_import(import_id), args, page)
        return EXIT_OK
    try:
        info = await watch(
            lambda: api.get_import(import_id),
            show_progress=_progress_wanted(args),
            watching=f"import {import_id} goes on: {page}",
        )
    except (ServiceUnreachable, ApiFailure) as exc:
        if isinstance(exc, ApiFailure) and exc.status not in _GATEWAY_STATUSES:
            raise
        reason = exc.reason if isinstance(exc, ServiceUnreachable) else f"{exc.status} {exc.code}"
        return _fail(
            args,
            EXIT_UNAVAILABLE,
            "server_unavailable",
            f"lost the fotoowl server at {redacted_url(api.base_url)} while waiting ({reason}); "
            f"import {import_id} goes on there: `fotoowl imports` shows how it ends",
        )
    return _finish(info, args, failures=f"{redacted_url(api.base_url)}{info.urls.failures}")


async def _list_imports(api: FotoowlClient, args: argparse.Namespace) -> int:
    items = [item async for item in api.iter_imports(args.limit)]
    if args.json:
        for item in items:
            print(json.dumps(item.body()))
    elif not items:
        print("no imports yet", file=sys.stderr)
    else:
        _print_table(
            ["ID", "STATUS", "FOLDER", "FOUND", "IMPORTED", "SKIPPED", "FAILED", "CREATED (UTC)"],
            [
                [
                    str(i.id),
                    i.status,
                    i.folder_name or i.folder_id,
                    str(i.counts.found),
                    str(i.counts.imported),
                    str(i.counts.skipped),
                    str(i.counts.failed),
                    _minute(i.created_at),
                ]
                for i in items
            ],
            right={0, 3, 4, 5, 6},
        )
    return EXIT_OK


async def _list_images(api: FotoowlClient, args: argparse.Namespace) -> int:
    filters = ImageFilters(import_id=args.import_id, q=args.q, folder=args.folder, mime_type=args.mime_type)
    images = api.iter_images(filters, args.limit)
    if args.json:
        # Printed as they arrive: a long listing starts at once and pipes into `jq` line by line.
        async for image in images:
            print(json.dumps(image.body()), flush=True)
        return EXIT_OK
    rows = [[str(i.id), i.name, decimal(i.size), i.mime_type, "/" + i.folder_path] async for i in images]
    if rows:
        _print_table(["ID", "NAME", "SIZE", "TYPE", "FOLDER"], rows, right={0, 2})
    else:
        print("no images match", file=sys.stderr)
    return EXIT_OK


# --- waiting and reporting, shared with --direct ----------------------------------------------------


async def watch(fetch: Callable[[], Awaitable[Import]], *, show_progress: bool, watching: str) -> Import:
    """Poll until the import finishes, drawing a progress bar on a terminal's stderr."""
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[files]}"),
        DownloadColumn(),
        TextColumn("{task.fields[rate]}"),
        TextColumn("{task.fields[eta]}"),
        console=Console(stderr=True),
        disable=not show_progress,
        transient=True,
    )
    failing_since: float | None = None
    try:
        with progress:
            task = progress.add_task("queued", total=None, files="", rate="", eta="")
            while True:
                try:
                    info = await fetch()
                except (ServiceUnreachable, ApiFailure) as exc:
                    transient = isinstance(exc, ServiceUnreachable) or exc.status in _GATEWAY_STATUSES
                    failing_since = failing_since or time.monotonic()
                    if not transient or time.monotonic() - failing_since > POLL_GRACE_S:
                        raise
                    await asyncio.sleep(POLL_S)
                    continue
                failing_since = None
                c = info.counts
                progress.update(
                    task,
                    description=info.status,
                    total=info.bytes.found or None,
                    completed=info.bytes.imported,
                    files=f"{c.found - c.pending}/{c.found} files",
                    rate=f"{info.rate.files_per_s or 0:.1f} img/s",
                    eta=f"{info.eta_s:.0f} s left" if info.eta_s is not None else "",
                )
                if info.status in FINISHED:
                    return info
                await asyncio.sleep(POLL_S)
    except asyncio.CancelledError:
        # Ctrl-C stops the watching, not the import: say where to follow it.
        print(f"\nstopped waiting; {watching}", file=sys.stderr)
        raise


def _progress_wanted(args: argparse.Namespace) -> bool:
    return not args.json and sys.stderr.isatty()


def _print_queued(info: Import, args: argparse.Namespace, where: str) -> None:
    print(json.dumps(info.body()) if args.json else f"import {info.id} {info.status}: {where}")


def _finish(info: Import, args: argparse.Namespace, *, failures: str) -> int:
    if args.json:
        print(json.dumps(info.body()))
    else:
        c = info.counts
        synced = "".join(
            f", {n} {what}"
            for n, what in (
                (c.unchanged, "unchanged"),
                (c.deduplicated, "deduplicated"),
                (c.removed, "removed"),
                (c.pruned, "pruned"),
            )
            if n
        )
        print(
            f"import {info.id}: {info.status} - {c.imported} imported{synced}, {c.skipped} skipped, "
            f"{c.failed} failed of {c.found} found; {info.bytes.imported:,} bytes"
        )
        if info.error:
            print(f"error: {info.error.message or info.error.code}", file=sys.stderr)
        if c.failed:
            print(f"failed files: {failures}", file=sys.stderr)
    return exit_code(info)


def exit_code(info: Import) -> int:
    if info.status == ImportStatus.FAILED:
        bad_input = info.error is not None and info.error.code in (FOLDER_NOT_ACCESSIBLE, DRIVE_CONFIGURATION_ERROR)
        return EXIT_BAD_INPUT if bad_input else EXIT_IMPORT_FAILED
    if info.status == ImportStatus.CANCELLED:
        return EXIT_IMPORT_FAILED
    return EXIT_FAILED_FILES if info.counts.failed else EXIT_OK


def _fail(args: argparse.Namespace, code: int, error: str, message: str) -> int:
    if args.json:
        print(json.dumps({"status": "rejected", "error": {"code": error, "message": message}}))
    else:
        print(f"fotoowl: {message}", file=sys.stderr)
    return code


def _print_table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, right: set[int]) -> None:
    # Plain aligned columns, not a rich table: nothing is cut or wrapped when piped into grep or less.
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    for row in [headers, *rows]:
        cells = [v.rjust(w) if i in right else v.ljust(w) for i, (v, w) in enumerate(zip(row, widths, strict=True))]
        print("  ".join(cells).rstrip())


def _minute(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M")
