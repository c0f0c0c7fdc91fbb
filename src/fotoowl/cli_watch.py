"""`fotoowl watch URL` and `fotoowl watches`: keep folders in step, through the server's API."""

from __future__ import annotations

import argparse
import json

from fotoowl.cli_import import EXIT_OK, _print_table, _with_api, redacted_url
from fotoowl.client import FotoowlClient
from fotoowl.config import AppSettings
from fotoowl.models_sync import Watch


def cmd_watch(settings: AppSettings, args: argparse.Namespace) -> int:
    return _with_api(settings, args, _create)


def cmd_watches(settings: AppSettings, args: argparse.Namespace) -> int:
    return _with_api(settings, args, _list)


async def _create(api: FotoowlClient, args: argparse.Namespace) -> int:
    watch = await api.create_watch(args.url.strip(), args.interval_s, recursive=not args.no_recursive, prune=args.prune)
    if args.json:
        print(json.dumps(watch.body()))
    else:
        print(
            f"watch {watch.id}: checking {redacted_url(watch.folder_url)} every {watch.interval_s} s; "
            f"{redacted_url(api.base_url)}{watch.urls.images_page}"
        )
    return EXIT_OK


async def _list(api: FotoowlClient, args: argparse.Namespace) -> int:
    watches: list[Watch] = (await api.list_watches(args.limit)).watches
    if args.json:
        for watch in watches:
            print(json.dumps(watch.body()))
        return EXIT_OK
    _print_table(
        ["ID", "STATE", "EVERY", "LAST SYNC", "FOUND", "ERROR", "FOLDER"],
        [
            [
                str(w.id),
                w.state,
                f"{w.interval_s} s",
                f"#{w.last_sync.import_id} {w.last_sync.status}" if w.last_sync else "-",
                _found(w),
                w.error.code if w.error else "",
                redacted_url(w.folder_url),
            ]
            for w in watches
        ],
        right={0, 2},
    )
    return EXIT_OK


def _found(watch: Watch) -> str:
    if watch.last_sync is None:
        return "-"
    c = watch.last_sync.counts
    return f"+{c.imported + c.deduplicated} ={c.unchanged} -{c.removed}"
