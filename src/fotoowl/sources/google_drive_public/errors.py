"""The keyless reader's failures: their reason codes, which ones slow the shared pace, and the messages
people read."""

from __future__ import annotations

from collections.abc import Mapping

from fotoowl.sources.base import FolderNotAccessible, SourceError
from fotoowl.sources.google_drive.errors import _parse_retry_after

__all__ = ["NOT_SHARED_MESSAGE", "PublicFolderNotAccessible", "http_error", "slows_the_pace"]

NOT_SHARED_MESSAGE = (
    "This Google Drive folder is not shared publicly, so it cannot be read without signing in. In Google Drive, "
    "open the folder's Share dialog, set General access to 'Anyone with the link' (Viewer), and paste the link again."
)
MISSING_MESSAGE = (
    "Google Drive has no folder with this id. Check the link, and make sure the folder is shared as "
    "'Anyone with the link' (General access > Anyone with the link > Viewer)."
)
FILE_NOT_SHARED_MESSAGE = (
    "Google Drive asks to sign in to download this file: it is not shared as 'Anyone with the link'."
)

# Reason codes (SourceError.reason). Google's own words where the API has one for the same thing.
SIGN_IN = "signInRequired"
NOT_SHARED = "notShared"
NOT_FOUND = "notFound"
RATE_LIMITED = "rateLimitExceeded"
CAPTCHA = "captcha"
UNEXPECTED_HTML = "unexpectedHtml"
QUOTA = "downloadQuotaExceeded"
UNEXPECTED_REDIRECT = "unexpectedRedirect"
TOO_MANY_REDIRECTS = "tooManyRedirects"
TRANSPORT = "transport"
BAD_RANGE = "badRange"
TRUNCATED = "truncated"

_RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


class PublicFolderNotAccessible(FolderNotAccessible):
    """The folder cannot be read without signing in, or does not exist."""


def slows_the_pace(error: SourceError) -> bool:
    """Google answered, but not with what was asked: the keyless pages answer errors, captchas and odd
    HTML when a client address is pushing them, so any such answer halves the shared pace. A dropped
    connection says nothing about the pace, nor does a byte stream that ended early."""
    return error.transient and error.status is not None and error.reason not in (TRANSPORT, TRUNCATED)


def http_error(status: int, headers: Mapping[str, str], what: str) -> SourceError:
    """An HTTP error answer that carried no page worth reading."""
    transient = status in _RETRYABLE_STATUSES
    reason = RATE_LIMITED if status == 429 else (NOT_FOUND if status == 404 else f"http{status}")
    return SourceError(
        f"Google Drive answered HTTP {status} to {what}.",
        reason=reason,
        status=status,
        transient=transient,
        retry_after_s=_parse_retry_after(headers.get("Retry-After")),
    )
