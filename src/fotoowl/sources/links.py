"""Which source a pasted link belongs to: every source's link parser, tried in turn.

Parsing needs no network and no credentials, so the web app and the CLI recognise links of every
source whether or not this process could read them.
"""

from __future__ import annotations

from collections.abc import Callable

from fotoowl.sources.base import FolderLink, InvalidLink
from fotoowl.sources.dropbox.links import parse_dropbox_link
from fotoowl.sources.google_drive.source import parse_link as parse_drive_link

PARSERS: dict[str, Callable[[str], FolderLink]] = {
    "google_drive": parse_drive_link,
    "dropbox": parse_dropbox_link,
}
SOURCE_NAMES = tuple(PARSERS)
_HOSTS = {"google_drive": ("drive.google.com", "docs.google.com"), "dropbox": ("dropbox.com",)}


def parse_link(url: str, source: str | None = None) -> FolderLink:
    """The folder `url` names, for `source` or whichever source it belongs to; InvalidLink says why not."""
    if source is not None:
        return PARSERS[source](url)
    lowered = url.strip().lower()
    # A link that names its host is judged by that host's parser alone, so its message is the one that fits.
    for name, hosts in _HOSTS.items():
        if any(host in lowered for host in hosts):
            return PARSERS[name](url)
    try:
        return PARSERS["google_drive"](url)  # a bare Drive folder id
    except InvalidLink:
        raise InvalidLink(
            "Paste the link of a shared Google Drive or Dropbox folder (https://drive.google.com/"
            "drive/folders/... or https://www.dropbox.com/scl/fo/...)."
        ) from None
