"""Parsing the Dropbox folder links people paste into a FolderLink.

Two forms name a shared folder: `https://www.dropbox.com/scl/fo/<id>/<key>?rlkey=<rlkey>` (since 2023;
the API refuses it without its rlkey) and the older `https://www.dropbox.com/sh/<id>/<key>`. Both are
normalised to https://www.dropbox.com with only the rlkey kept: `dl=`, `st=` and tracking parameters say
nothing to the API. File links (`/scl/fi/`, `/s/`) are refused here, before any request is made.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlencode, urlsplit

from fotoowl.sources.base import FolderLink, InvalidLink

__all__ = ["FOLDER_LINK_HINT", "SOURCE_NAME", "parse_dropbox_link"]

SOURCE_NAME = "dropbox"
MAX_LINK_CHARS = 2000
_HOSTS = frozenset({"www.dropbox.com", "dropbox.com"})
_SEGMENT_RE = re.compile(r"[A-Za-z0-9_-]{1,200}")
_RLKEY_RE = re.compile(r"[A-Za-z0-9_-]{1,200}")
FOLDER_LINK_HINT = (
    "A Dropbox folder link looks like https://www.dropbox.com/scl/fo/<id>/<key>?rlkey=<key> "
    "(or the older https://www.dropbox.com/sh/<id>/<key>): in Dropbox, choose Share > Copy link on the folder."
)


def _shown(text: str, limit_chars: int = 80) -> str:
    return text if len(text) <= limit_chars else text[: limit_chars - 1] + "…"


def _check_segments(segments: list[str]) -> None:
    if any(not _SEGMENT_RE.fullmatch(segment) for segment in segments):
        raise InvalidLink(f"The link's id or key looks malformed. {FOLDER_LINK_HINT}")


def _folder_segments(segments: list[str]) -> tuple[str, list[str]]:
    """("scl" or "sh", [id, key]) for a folder link's path; InvalidLink saying why for anything else."""
    if segments[:2] == ["scl", "fi"] or segments[:1] == ["s"]:
        raise InvalidLink(
            "This is a link to a single file, not to a folder. Share the folder holding the images and "
            f"paste its link. {FOLDER_LINK_HINT}"
        )
    if segments[:1] in (["home"], ["work"], ["preview"]):
        raise InvalidLink(
            "This is the address of a folder inside someone's own Dropbox, which only they can open, "
            f"not a shared link. {FOLDER_LINK_HINT}"
        )
    if segments[:2] == ["scl", "fo"]:
        form, rest = "scl", segments[2:]
    elif segments[:1] == ["sh"]:
        form, rest = "sh", segments[1:]
    else:
        raise InvalidLink(f"This Dropbox link does not point to a shared folder. {FOLDER_LINK_HINT}")
    if len(rest) < 2:
        raise InvalidLink(f"The link is cut short: its id or key is missing. {FOLDER_LINK_HINT}")
    if len(rest) > 2:
        # /sh/<id>/<key>/<item> and /scl/fo/<id>/<key>/<item> open one item inside the shared folder.
        raise InvalidLink(
            "This link opens one item inside a shared folder: paste the link of the shared folder itself. "
            f"{FOLDER_LINK_HINT}"
        )
    _check_segments(rest)
    return form, rest


def parse_dropbox_link(text: str, *, password: str | None = None) -> FolderLink:
    """Turn a pasted Dropbox shared folder link into a FolderLink (InvalidLink, saying why, otherwise).

    `url` (and `key`, which carries the same rlkey-bearing link for whoever stores only keys) is the
    normalised link the API is called with; `folder_id` is the link's id.
    """
    text = text.strip()
    if not text:
        raise InvalidLink(f"Paste the link of a Dropbox folder. {FOLDER_LINK_HINT}")
    if len(text) > MAX_LINK_CHARS:
        raise InvalidLink(f"The link is too long ({len(text)} characters); Dropbox folder links are short.")
    if any(char.isspace() for char in text):
        raise InvalidLink("The link contains spaces; paste a single Dropbox folder link.")
    url = text if "://" in text else "https://" + text
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise InvalidLink("This is not a valid web link.") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise InvalidLink(f"Only http(s) links to www.dropbox.com are accepted. {FOLDER_LINK_HINT}")
    if "@" in parts.netloc:
        raise InvalidLink("The link hides another address behind an '@'; paste the link from Dropbox.")
    host = (parts.hostname or "").lower().rstrip(".")
    if host not in _HOSTS or port not in (None, 80, 443):
        raise InvalidLink(
            f"Only www.dropbox.com links are accepted; this one points to {_shown(parts.netloc)!r}. {FOLDER_LINK_HINT}"
        )
    form, (folder_id, key) = _folder_segments([s for s in parts.path.split("/") if s])
    normalised = f"https://www.dropbox.com/{form if form == 'sh' else 'scl/fo'}/{folder_id}/{key}"
    if form == "scl":
        rlkeys = parse_qs(parts.query).get("rlkey") or [""]
        if not rlkeys[0]:
            raise InvalidLink(
                "The link is missing its 'rlkey=' part, without which Dropbox refuses it: copy the whole link "
                "from Dropbox again."
            )
        if not _RLKEY_RE.fullmatch(rlkeys[0]):
            raise InvalidLink("The link's 'rlkey=' part looks malformed: copy the whole link from Dropbox again.")
        normalised += "?" + urlencode({"rlkey": rlkeys[0]})
    return FolderLink(
        source=SOURCE_NAME, folder_id=folder_id, url=normalised, key=normalised, password=password or None
    )
