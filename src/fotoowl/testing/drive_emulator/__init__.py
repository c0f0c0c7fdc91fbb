"""A Google Drive v3 emulator for public folders, so the real client runs against it unchanged.

Serves files.list (`GET /drive/v3/files`) and files.get (`GET /drive/v3/files/{id}`, with
`alt=media` for the bytes) the way Google does for an API-key caller: key checks, `q` parsing,
`fields` masks, opaque page tokens, resource keys, Google-shaped error bodies, redirects to a
download host, Range requests. Faults (rate limits, 5xx, dropped connections, slow bodies...) can
be injected per file or at random from a seed, a per-second query quota can be enforced as
Google's is, and counters record what the client asked for.

The tree is declared in code (`add_folder`, `add_image`, `add_shortcut`...), or built by
`build_demo_tree`. File contents are generated images padded to any size without being held in
memory (see fotoowl.testing.images).

The package, by section: errors (Google-shaped error bodies), faults (Fault and its rules), fields
(`fields` masks), query (`q`, Range headers, times), model (the tree: Item, DriveTree), app
(DriveEmulator, the HTTP face) and serving (start_emulator, running_emulator, build_demo_tree,
serve_demo).
"""

from __future__ import annotations

from fotoowl.testing.drive_emulator.app import API_PREFIX, DriveEmulator
from fotoowl.testing.drive_emulator.errors import error_body
from fotoowl.testing.drive_emulator.faults import Fault, FaultOn
from fotoowl.testing.drive_emulator.fields import parse_fields
from fotoowl.testing.drive_emulator.model import DOCUMENT_MIME_TYPE, SPREADSHEET_MIME_TYPE, Item
from fotoowl.testing.drive_emulator.query import parse_query, parse_range
from fotoowl.testing.drive_emulator.serving import (
    DEMO_API_KEY,
    DemoTree,
    build_demo_tree,
    running_emulator,
    serve_demo,
    start_emulator,
)

__all__ = [
    "API_PREFIX",
    "DEMO_API_KEY",
    "DOCUMENT_MIME_TYPE",
    "SPREADSHEET_MIME_TYPE",
    "DemoTree",
    "DriveEmulator",
    "Fault",
    "FaultOn",
    "Item",
    "build_demo_tree",
    "error_body",
    "parse_fields",
    "parse_query",
    "parse_range",
    "running_emulator",
    "serve_demo",
    "start_emulator",
]
