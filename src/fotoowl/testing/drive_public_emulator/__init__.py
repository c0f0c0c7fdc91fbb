"""An emulator of Google Drive's keyless pages, so the keyless reader runs against it unchanged.

Serves `GET /embeddedfolderview?id=` (a folder as an anonymous visitor sees it: its <title>, one
flip-entry block per item with the icon URL naming the type, anchors to drive.google.com/file/d/,
drive.google.com/drive/folders/ and docs.google.com/<kind>/d/) and `GET /download?id=&export=download`
(the bytes with a Content-Disposition; for files over `scan_threshold_bytes` the "can't scan this file
for viruses" page whose form, with its uuid, leads to the bytes; Range). Items that are not shared
answer a redirect to accounts.google.com, files over their quota the "Too many users" page. Faults
(429, 5xx, captcha pages, sign-in and sorry redirects, dropped connections and bodies) are injected
per item; counters record what was asked.

The package, by section: model (the tree and its builder), markup (the pages' HTML), faults
(PublicFault and its rules), app (PublicDriveEmulator, the HTTP face) and serving (start_emulator,
running_emulator).
"""

from __future__ import annotations

from fotoowl.testing.drive_public_emulator.app import DEFAULT_SCAN_THRESHOLD_BYTES, SIGN_IN_URL, PublicDriveEmulator
from fotoowl.testing.drive_public_emulator.faults import PublicFault, PublicFaultOn
from fotoowl.testing.drive_public_emulator.model import NATIVE_KINDS, PublicItem
from fotoowl.testing.drive_public_emulator.serving import PublicEmulatorServer, running_emulator, start_emulator

__all__ = [
    "DEFAULT_SCAN_THRESHOLD_BYTES",
    "NATIVE_KINDS",
    "SIGN_IN_URL",
    "PublicDriveEmulator",
    "PublicEmulatorServer",
    "PublicFault",
    "PublicFaultOn",
    "PublicItem",
    "running_emulator",
    "start_emulator",
]
