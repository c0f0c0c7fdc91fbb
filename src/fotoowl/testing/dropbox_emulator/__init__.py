"""A Dropbox API v2 emulator for shared folder links, so the real Dropbox source runs against it unchanged.

Serves files/list_folder and files/list_folder/continue (shared links only, non-recursive, `limit`
honoured approximately, short pages, cursors), sharing/get_shared_link_metadata and
sharing/get_shared_link_file (Dropbox-API-Arg in, Dropbox-API-Result and bytes out, Range) the way
Dropbox does for an app-authenticated caller: HTTP Basic app key and secret, both link forms (the
/scl/fo/ one only with its rlkey), password-protected links, content hashes, Dropbox-shaped errors
(error_summary and nested .tag unions, plain-text 400s, 429 with retry_after). Faults (rate limits,
5xx, dropped connections, bodies cut short) can be injected per path or at random from a seed, and
counters record what the client asked for and how many bytes went out.

The tree is declared in code (`add_folder`, `add_image`, `add_file`, `remove`, `share`); images are
real JPEG/PNG/WebP bytes from fotoowl.testing.images, padded to any size without being held in memory.

The package, by section: errors (Dropbox-shaped answers), faults (DropboxFault and its rules), content
(byte ranges and the faults that cut bodies short), model (the tree and the links: DropboxTree), app
(DropboxEmulator, the HTTP face) and serving (start_emulator, running_emulator).
"""

from __future__ import annotations

from fotoowl.testing.dropbox_emulator.app import DropboxEmulator
from fotoowl.testing.dropbox_emulator.errors import error_body
from fotoowl.testing.dropbox_emulator.faults import DropboxFault, DropboxRoute
from fotoowl.testing.dropbox_emulator.model import DropboxNode, DropboxSharedLink, block_content_hash
from fotoowl.testing.dropbox_emulator.serving import running_emulator, start_emulator

__all__ = [
    "DropboxEmulator",
    "DropboxFault",
    "DropboxNode",
    "DropboxRoute",
    "DropboxSharedLink",
    "block_content_hash",
    "error_body",
    "running_emulator",
    "start_emulator",
]
