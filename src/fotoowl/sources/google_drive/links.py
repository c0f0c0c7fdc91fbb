"""Parsing the Google Drive folder links people paste (or a bare folder id) into a FolderRef."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from fotoowl.sources.base import InvalidLink

__all__ = ["FolderRef", "InvalidFolderLink", "parse_folder_link"]

MAX_LINK_CHARS = 2000
# Drive ids seen in the wild run from 19 (shared-drive roots) to 72+ characters.
_ID_RE = re.compile(r"[A-Za-z0-9_-]{10,100}")
_RESOURCE_KEY_RE = re.compile(r"[A-Za-z0-9_-]{1,200}")
_QUERY_ID_PAGES = frozenset({"open", "folderview", "embeddedfolderview"})
_SHARE_HINT = "Open the folder in Google Drive, choose Share > Copy link, and paste that link here."


class InvalidFolderLink(InvalidLink):
    """The pasted text is not a Google Drive folder link; the message says why, for the user."""


@dataclass(frozen=True, slots=True)
class FolderRef:
    folder_id: str
    resource_key: str | None = None


def _shown(text: str, limit_chars: int = 80) -> str:
    return text if len(text) <= limit_chars else text[: limit_chars - 1] + "…"


def _first_query_value(query: Mapping[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[0] if values else None


def _folder_id_from_path(segments: list[str], query: Mapping[str, list[str]]) -> str:
    if segments[:1] == ["file"] or segments == ["uc"]:
        raise InvalidFolderLink(f"This is a link to a single file, not to a folder. {_SHARE_HINT}")
    if len(segments) == 1 and segments[0] in _QUERY_ID_PAGES:
        folder_id = _first_query_value(query, "id")
        if not folder_id:
            raise InvalidFolderLink("The link has no folder id (its 'id=' part is missing).")
        return folder_id
    rest = segments[1:] if segments[:1] == ["drive"] else None
    if rest is not None and len(rest) >= 2 and rest[0] == "u" and rest[1].isdigit():
        rest = rest[2:]
    if rest is not None and rest[:1] == ["mobile"]:
        rest = rest[1:]
    if rest is None or len(rest) < 2 or rest[0] != "folders":
        raise InvalidFolderLink(f"This Google Drive link does not point to a folder. {_SHARE_HINT}")
    # /drive/u/0/mobile/folders/<parent>/<id>: the folder to open is the last segment.
    return rest[-1]


def parse_folder_link(text: str) -> FolderRef:
    """Turn a pasted Google Drive folder link (or a bare folder id) into a FolderRef."""
    text = text.strip()
    if not text:
        raise InvalidFolderLink("Paste the link of a Google Drive folder.")
    if len(text) > MAX_LINK_CHARS:
        raise InvalidFolderLink(f"The link is too long ({len(text)} characters); Drive folder links are short.")
    if _ID_RE.fullmatch(text):
        return FolderRef(text)
    if any(char.isspace() for char in text):
        raise InvalidFolderLink("The link contains spaces; paste a single Google Drive folder link.")
    url = text if "://" in text else "https://" + text
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise InvalidFolderLink("This is not a valid web link.") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise InvalidFolderLink("Only http(s) links to drive.google.com are accepted.")
    if "@" in parts.netloc:
        raise InvalidFolderLink("The link hides another address behind an '@'; paste the link from Google Drive.")
    host = (parts.hostname or "").rstrip(".")
    if host == "docs.google.com":
        raise InvalidFolderLink(f"This is a Google Docs, Sheets or Slides link, not a Drive folder. {_SHARE_HINT}")
    if host != "drive.google.com" or port not in (None, 80, 443):
        raise InvalidFolderLink(
            f"Only drive.google.com links are accepted; this one points to {_shown(parts.netloc)!r}."
        )
    query = parse_qs(parts.query)
    folder_id = _folder_id_from_path([s for s in parts.path.split("/") if s], query)
    if not _ID_RE.fullmatch(folder_id):
        raise InvalidFolderLink(f"The folder id {_shown(folder_id)!r} in the link looks malformed.")
    resource_key = _first_query_value(query, "resourcekey")
    if resource_key is not None and not _RESOURCE_KEY_RE.fullmatch(resource_key):
        raise InvalidFolderLink("The link's 'resourcekey' part looks malformed.")
    return FolderRef(folder_id, resource_key)
