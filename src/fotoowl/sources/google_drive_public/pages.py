"""Reading Google's keyless Drive pages: the embedded folder view, and the HTML that the download host
answers instead of bytes (the virus-scan form, the per-file quota page, a sign-in or a captcha page).

None of these pages is a documented API and their markup changes, so they are read with a real HTML
parser by what they mean, not by how they are spelled: attribute order, quoting, entities and nesting
are the parser's business (regular expressions here only check ids and types once found). The parser
is selectolax's Lexbor, an HTML5 parser in C that builds the tree a browser builds: a folder of 5,000
entries is 3.5 MB of HTML, parsed in under 0.1 s and read whole in about 0.6 s, where Beautiful Soup over
html.parser took 8 s of pure-Python CPU, holding the GIL the transfers need.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qsl, unquote, urlencode, urljoin, urlsplit, urlunsplit

from selectolax.lexbor import LexborHTMLParser, LexborNode

__all__ = [
    "DownloadPage",
    "FolderPage",
    "ListedItem",
    "parse_folder_page",
    "read_download_page",
    "read_folder_answer",
    "read_html",
]

FOLDER_MIME_TYPE = "application/vnd.google-apps.folder"
GOOGLE_APPS_PREFIX = "application/vnd.google-apps."

# Ids from hrefs are put into later request URLs: anything but Drive's id alphabet is not an id.
_ID_RE = re.compile(r"[A-Za-z0-9_-]{10,200}")
_KEY_RE = re.compile(r"[A-Za-z0-9_-]{1,200}")
_MIME_RE = re.compile(r"[a-z0-9][a-z0-9.+-]*/[a-z0-9][a-z0-9.+-]*", re.IGNORECASE)
# docs.google.com/<kind>/d/<id>: the kinds of Google-native files, by their Drive type.
_NATIVE_KINDS = {
    "document": "document",
    "spreadsheets": "spreadsheet",
    "presentation": "presentation",
    "forms": "form",
    "drawings": "drawing",
}
_TITLE_SUFFIXES = (" - Google Drive", " \u2013 Google Drive")  # a hyphen or an en dash
_QUOTA_PHRASES = ("too many users", "quota")
_QUOTA_SENTENCE = "too many users have viewed or downloaded this file recently"
_MISSING_PHRASES = ("does not exist", "not found")
_CAPTCHA_PHRASES = ("unusual traffic", "automated queries")
SIGN_IN_HOST = "accounts.google.com"


def read_html(text: str) -> LexborHTMLParser:
    return LexborHTMLParser(text)


def _text(node: LexborNode | None) -> str:
    return node.text().strip() if node is not None else ""


def _attr(node: LexborNode, name: str) -> str:
    return node.attributes.get(name) or ""


@dataclass(frozen=True, slots=True)
class ListedItem:
    """One entry of a folder page. `kind` comes from where its anchor points; `icon_type` is the MIME type
    in its icon URL (…/type/image/jpeg), when the page had one; `resource_key` from the anchor's query."""

    kind: Literal["file", "folder", "native"]
    id: str
    title: str
    icon_type: str | None
    resource_key: str | None = None
    native_type: str | None = None


@dataclass(frozen=True, slots=True)
class FolderPage:
    title: str
    items: tuple[ListedItem, ...]


def _folder_title(doc: LexborHTMLParser) -> str | None:
    node = doc.css_first("title")
    if node is None:
        return None
    title = _text(node)
    # The full Drive pages title a folder "<name> - Google Drive"; the embedded view is reported to use the
    # bare name. Either way the folder is called <name>.
    for suffix in _TITLE_SUFFIXES:
        if title.endswith(suffix) and len(title) > len(suffix):
            return title[: -len(suffix)].strip()
    return title


def _path_segments(path: str) -> list[str]:
    segments = [unquote(s) for s in path.split("/") if s]
    # /drive/u/1/folders/<id>, /file/u/0/d/<id>: the account index says nothing about the item.
    if len(segments) >= 3 and segments[1] == "u" and segments[2].isdigit():
        segments = [segments[0], *segments[3:]]
    return segments


def classify_href(href: str) -> tuple[Literal["file", "folder", "native"], str, str | None, str | None] | None:
    """(kind, id, resource key, native type) from an entry's anchor; None for any other link."""
    try:
        parts = urlsplit(urljoin("https://drive.google.com/", href.strip()))
    except ValueError:
        return None
    host = (parts.hostname or "").lower().rstrip(".")
    segments = _path_segments(parts.path)
    query = dict(parse_qsl(parts.query))
    key = query.get("resourcekey")
    key = key if key and _KEY_RE.fullmatch(key) else None
    found: tuple[Literal["file", "folder", "native"], str, str | None] | None = None
    if host == "drive.google.com":
        if len(segments) >= 3 and segments[0] == "file" and segments[1] == "d":
            found = ("file", segments[2], None)
        elif len(segments) >= 3 and segments[0] == "drive" and segments[1] == "folders":
            found = ("folder", segments[2], None)
    elif host == "docs.google.com" and len(segments) >= 3 and segments[1] == "d":
        native = _NATIVE_KINDS.get(segments[0], segments[0])
        found = ("native", segments[2], GOOGLE_APPS_PREFIX + native)
    if found is None or not _ID_RE.fullmatch(found[1]):
        return None
    return found[0], found[1], key, found[2]


def icon_type(src: str) -> str | None:
    """The MIME type an icon URL names: https://drive-thirdparty.googleusercontent.com/16/type/image/jpeg."""
    try:
        segments = [unquote(s) for s in urlsplit(src).path.split("/") if s]
    except ValueError:
        return None
    if "type" not in segments:
        return None
    index = segments.index("type")
    candidate = "/".join(segments[index + 1 : index + 3])
    return candidate.lower() if _MIME_RE.fullmatch(candidate) else None


def _entry_block(anchor: LexborNode) -> LexborNode | None:
    parent = anchor.parent
    while parent is not None:
        if "flip-entry" in _attr(parent, "class").split():
            return parent
        parent = parent.parent
    return None


def _icon_of(scope: LexborNode) -> str | None:
    # The list icon is the file's type; the grid thumbnail may be a rendered preview instead.
    for img in [*scope.css(".flip-entry-list-icon img[src]"), *scope.css("img[src]")]:
        found = icon_type(_attr(img, "src"))
        if found is not None:
            return found
    return None


def _title_of(block: LexborNode | None, anchor: LexborNode) -> str:
    if block is not None and (title := block.css_first(".flip-entry-title")) is not None:
        return _text(title)
    return _text(anchor) or _attr(anchor, "title") or _attr(anchor, "aria-label")


def parse_folder_page(html: str) -> FolderPage | None:
    """The folder's name and entries; None when the page has no title (it is not a folder page).

    Each entry is an anchor inside a flip-entry block (the block gives the title and the icon); a page
    without blocks (an older or trimmed markup) has its anchors alone. Anchors pointing anywhere else,
    or outside the blocks of a page that has them, are page chrome: a link to the parent folder there
    must not lead the walk out of the shared tree. An id listed twice counts once.
    """
    return _folder_page(read_html(html))


def _folder_page(doc: LexborHTMLParser) -> FolderPage | None:
    title = _folder_title(doc)
    if title is None:
        return None
    items: list[ListedItem] = []
    seen: set[str] = set()
    has_blocks = doc.css_first(".flip-entry") is not None
    for anchor in doc.css("a[href]"):
        classified = classify_href(_attr(anchor, "href"))
        if classified is None:
            continue
        block = _entry_block(anchor)
        kind, item_id, key, native_type = classified
        if item_id in seen or (has_blocks and block is None):
            continue
        seen.add(item_id)
        items.append(
            ListedItem(
                kind=kind,
                id=item_id,
                title=_title_of(block, anchor),
                icon_type=_icon_of(block if block is not None else anchor),
                resource_key=key,
                native_type=native_type,
            )
        )
    return FolderPage(title=title, items=tuple(items))


# ---------------------------------------------------------------------------------------------------
# What the download host answers instead of bytes
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DownloadPage:
    """An HTML answer from the download host, read. `confirm_url` is where the virus-scan form leads."""

    kind: Literal["confirm", "quota", "missing", "sign_in", "captcha", "unknown"]
    message: str = ""
    confirm_url: str | None = None


def _confirm_url(form: LexborNode, base_url: str) -> str:
    """The URL the form submits to by GET: its action with every named input as a query parameter."""
    action = urljoin(base_url, _attr(form, "action") or base_url)
    parts = urlsplit(action)
    params = dict(parse_qsl(parts.query, keep_blank_values=True))
    for field in form.css("input[name]"):
        if _attr(field, "type").lower() in ("submit", "button", "image", "reset"):
            continue
        params[_attr(field, "name")] = _attr(field, "value")
    return urlunsplit(parts._replace(query=urlencode(params)))


def _is_sign_in(doc: LexborHTMLParser) -> bool:
    for form in doc.css("form[action]"):
        try:
            host = urlsplit(urljoin("https://drive.google.com/", _attr(form, "action"))).hostname
        except ValueError:
            continue
        if host == SIGN_IN_HOST:
            return True
    return doc.css_first('input[type="email"][name="identifier"]') is not None


def _page_text(doc: LexborHTMLParser) -> str:
    return " ".join((doc.root.text(separator=" ") if doc.root is not None else "").split())


def _is_captcha(doc: LexborHTMLParser) -> bool:
    if doc.css_first("#captcha-form, .g-recaptcha, form[action*='/sorry/']") is not None:
        return True
    # Only a page without entries is read for the wording: a file may well be called "unusual traffic.jpg".
    if doc.css_first(".flip-entries, .flip-entry") is not None:
        return False
    text = _page_text(doc).lower()
    return any(phrase in text for phrase in _CAPTCHA_PHRASES)


def page_kind(doc: LexborHTMLParser) -> Literal["sign_in", "captcha"] | None:
    """Whether a page is Google asking to sign in or to prove a human is there (any host, any page)."""
    if _is_captcha(doc):
        return "captcha"
    if _is_sign_in(doc):
        return "sign_in"
    return None


def read_folder_answer(html: str) -> FolderPage | Literal["sign_in", "captcha"] | None:
    """What the embedded folder view answered: the folder, a sign-in or captcha page, or None for a page
    that is none of these (parsed once, for all three)."""
    doc = read_html(html)
    return page_kind(doc) or _folder_page(doc)


def read_download_page(html: str, base_url: str) -> DownloadPage:
    doc = read_html(html)
    form = doc.css_first("form#download-form")
    if form is not None:
        return DownloadPage("confirm", _text(doc.css_first(".uc-warning-subcaption")), _confirm_url(form, base_url))
    caption = _text(doc.css_first(".uc-error-caption"))
    subcaption = _text(doc.css_first(".uc-error-subcaption"))
    text = _page_text(doc)
    if caption or subcaption or _QUOTA_SENTENCE in text.lower():
        # The caption says what happened ("... does not exist", "can't view or download this file at this
        # time"), the subcaption why ("Too many users have viewed or downloaded this file recently").
        both = f"{caption} {subcaption}".lower()
        if any(p in both for p in _MISSING_PHRASES) and not any(p in both for p in _QUOTA_PHRASES):
            return DownloadPage("missing", caption or subcaption)
        return DownloadPage(
            "quota", subcaption or caption or "Too many users have viewed or downloaded this file recently."
        )
    kind = page_kind(doc)
    title = _text(doc.css_first("title"))
    if kind is not None:
        return DownloadPage(kind, title)
    return DownloadPage("unknown", title or text[:200])
