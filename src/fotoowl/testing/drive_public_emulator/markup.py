"""The HTML of Google's keyless pages, as the real ones are built (trimmed of styles and scripts that
carry nothing a reader uses): the embedded folder view, the virus-scan warning with its download form,
the per-file quota page, the not-found page, Google's "unusual traffic" captcha and its error pages."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from fotoowl.testing.drive_public_emulator.model import PublicItem

ICON_HOST = "https://drive-thirdparty.googleusercontent.com"


def _human_size(size_bytes: int) -> str:
    size = float(size_bytes)
    for unit in ("", "K", "M"):
        if size < 1024:
            return f"{size:.0f}{unit}"
        size /= 1024
    return f"{size:.1f}G"


def entry_href(item: PublicItem) -> str:
    """Where a browser goes from the entry: the file viewer, the folder, or the Google Docs editor."""
    key = f"resourcekey={item.resource_key}" if item.resource_key else ""
    if item.kind == "folder":
        return f"https://drive.google.com/drive/folders/{item.id}" + (f"?{key}" if key else "")
    if item.kind == "native":
        return f"https://docs.google.com/{item.native_kind}/d/{item.id}/edit?usp=drive_web" + (f"&{key}" if key else "")
    return f"https://drive.google.com/file/d/{item.id}/view?usp=drive_web" + (f"&{key}" if key else "")


def _entry(item: PublicItem) -> str:
    type_path = escape(item.mime_type, quote=True)
    # Images get a rendered thumbnail in the grid card; the list icon always names the type.
    if item.kind == "file" and item.mime_type.startswith("image/"):
        visual = (
            f'<div class="flip-entry-thumb"><img src="https://lh3.googleusercontent.com/fife/{item.id}=s190" '
            f'alt="Image"/></div>'
        )
    else:
        visual = f'<div class="flip-entry-icon"><img src="{ICON_HOST}/128/type/{type_path}" alt=""/></div>'
    return (
        f'<div class="flip-entry" id="entry-{item.id}" tabindex="0" role="link"><div class="flip-entry-info">'
        f'<a href="{escape(entry_href(item), quote=True)}" target="_blank">'
        f'<div class="flip-entry-visual"><div class="flip-entry-visual-card">{visual}</div></div>'
        f'<div class="flip-entry-list-icon"><img src="{ICON_HOST}/16/type/{type_path}" alt=""/></div>'
        f'<div class="flip-entry-title">{escape(item.name, quote=False)}</div></a></div>'
        f'<div class="flip-entry-last-modified"><div>{item.modified:%b} {item.modified.day}</div></div></div>'
    )


def folder_page(folder: PublicItem, children: Sequence[PublicItem]) -> str:
    entries = "".join(_entry(child) for child in children)
    return (
        '<!DOCTYPE html><html><head><meta http-equiv="content-type" content="text/html; charset=UTF-8">'
        f"<title>{escape(folder.name, quote=False)}</title>"
        '<link rel="stylesheet" href="https://ssl.gstatic.com/docs/doclist/embeddedfolderview/flip.css"></head>'
        '<body><div id="folder-view" class="flip-list-view" role="main">'
        "<script>var fragmentHandler = function() {}; fragmentHandler();</script>"
        '<div class="flip-list-header"><div role="heading" aria-level="2" class="flip-list-title-header">TITLE</div>'
        '<div role="heading" aria-level="2" class="flip-list-last-modified-header">LAST MODIFIED</div></div>'
        f'<div class="flip-entries">{entries}</div></div>'
        f"<script>var config = {{tid: '{folder.id}', locale: 'en'}};</script></body></html>"
    )


def virus_scan_page(item: PublicItem, size_bytes: int, action: str, uuid: str) -> str:
    name = escape(item.name, quote=False)
    return (
        "<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title>"
        '<meta http-equiv="content-type" content="text/html; charset=utf-8"/></head><body>'
        '<div class="uc-main"><div id="uc-dl-icon" class="image-container"><div class="drive-sprite-aux-download-file">'
        '</div></div><div id="uc-text"><p class="uc-warning-caption">Google Drive can&#39;t scan this file for '
        'viruses.</p><p class="uc-warning-subcaption"><span class="uc-name-size">'
        f'<a href="/open?id={item.id}">{name}</a> ({_human_size(size_bytes)})</span> is too large for Google to '
        "scan for viruses. Would you still like to download this file?</p>"
        f'<form id="download-form" action="{escape(action, quote=True)}" method="get">'
        '<input type="submit" id="uc-download-link" class="goog-inline-block jfk-button jfk-button-action" '
        'value="Download anyway"/>'
        f'<input type="hidden" name="id" value="{item.id}"><input type="hidden" name="export" value="download">'
        f'<input type="hidden" name="confirm" value="t"><input type="hidden" name="uuid" value="{uuid}">'
        + (f'<input type="hidden" name="resourcekey" value="{item.resource_key}">' if item.resource_key else "")
        + '</form></div></div><div class="uc-footer"><hr class="uc-footer-divider"></div></body></html>'
    )


def _error_page(title: str, caption: str, subcaption: str) -> str:
    return (
        f"<!DOCTYPE html><html><head><title>{title}</title>"
        '<meta http-equiv="content-type" content="text/html; charset=utf-8"/></head><body>'
        '<div class="uc-main"><div id="uc-text">'
        f'<p class="uc-error-caption">{caption}</p><p class="uc-error-subcaption">{subcaption}</p>'
        "</div></div></body></html>"
    )


def quota_page() -> str:
    return _error_page(
        "Google Drive - Quota exceeded",
        "Sorry, you can&#39;t view or download this file at this time.",
        "Too many users have viewed or downloaded this file recently. Please try accessing the file again later. "
        "If the file you are trying to access is particularly large or is shared with many people, it may take up "
        "to 24 hours to be able to view or download the file. If you still can&#39;t access a file after 24 hours, "
        "contact your domain administrator.",
    )


def file_not_found_page() -> str:
    return _error_page(
        "Google Drive - Page Not Found",
        "Sorry, the file you have requested does not exist.",
        "Make sure that you have the correct URL and that the file exists.",
    )


def folder_not_found_page() -> str:
    return (
        "<!DOCTYPE html><html lang=en><meta charset=utf-8><title>Error 404 (Not Found)!!1</title>"
        "<p><b>404.</b> <ins>That&#8217;s an error.</ins><p>The requested URL was not found on this server. "
        "<ins>That&#8217;s all we know.</ins>"
    )


def server_error_page(status: int) -> str:
    return (
        f"<!DOCTYPE html><html lang=en><meta charset=utf-8><title>Error {status} (Server Error)!!1</title>"
        f"<p><b>{status}.</b> <ins>That&#8217;s an error.</ins><p>The server encountered an error. "
        "<ins>That&#8217;s all we know.</ins>"
    )


def captcha_page(url: str, client_ip: str) -> str:
    """Google's "sorry" page, answered to an address that sent too many requests."""
    shown = escape(url, quote=True)
    return (
        '<html><head><meta http-equiv="content-type" content="text/html; charset=utf-8">'
        f'<title>{shown}</title></head><body style="margin:0;padding:0"><div style="max-width:400px">'
        '<form id="captcha-form" action="index" method="post">'
        '<script src="https://www.google.com/recaptcha/api.js" async defer></script>'
        '<div id="recaptcha" class="g-recaptcha" data-sitekey="6LfwuyUTAAAAAOAmoS0fdqijC2PbbdH4kjq62Y1b"></div>'
        f'<input type="hidden" name="continue" value="{shown}"></form><hr noshade size="1">'
        '<div style="font-size:13px"><b>About this page</b><br><br>Our systems have detected unusual traffic from '
        "your computer network. This page checks to see if it&#39;s really you sending the requests, and not a "
        f"robot.<br><br>IP address: {escape(client_ip)}<br>URL: {shown}<br></div></div></body></html>"
    )
