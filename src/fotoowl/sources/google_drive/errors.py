"""Drive errors: DriveError and its kinds, and how Google's error answers are read and classified."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import aiohttp

from fotoowl.sources.base import FolderNotAccessible, SourceConfigError, SourceError

__all__ = ["DriveConfigError", "DriveError", "DriveFolderNotAccessible"]


class DriveError(SourceError):
    """A failed Drive request. `reason` is Google's first errors[].reason, else a code of ours."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 0,
        reason: str = "",
        transient: bool = False,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.reason = reason
        self.transient = transient
        self.retry_after_s = retry_after_s


class DriveConfigError(DriveError, SourceConfigError):
    """The API key is missing, invalid or restricted, or the Drive API is not enabled for it."""


class DriveFolderNotAccessible(DriveError, FolderNotAccessible):
    """The root folder does not exist, is not shared publicly, is trashed, or is not a folder."""


NOT_SHARED_MESSAGE = (
    "Google Drive cannot find this folder. Check the link, and make sure the folder is shared as "
    "'Anyone with the link' (General access > Anyone with the link > Viewer)."
)

_RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_RATE_LIMIT_REASONS = frozenset({"userRateLimitExceeded", "rateLimitExceeded"})
_CONFIG_REASONS = frozenset(
    {
        "keyInvalid",
        "keyExpired",
        "accessNotConfigured",
        "ipRefererBlocked",
        "API_KEY_INVALID",
        "API_KEY_EXPIRED",
        "API_KEY_SERVICE_BLOCKED",
        "API_KEY_HTTP_REFERRER_BLOCKED",
        "API_KEY_IP_ADDRESS_BLOCKED",
        "SERVICE_DISABLED",
        "CONSUMER_INVALID",
    }
)


def is_rate_limit(error: DriveError) -> bool:
    """Google asking us to slow down (not a per-file download quota, which says nothing of pace)."""
    return error.status == 429 or (error.status == 403 and error.reason in _RATE_LIMIT_REASONS)


# Retry-After is honoured, but a broken proxy must not park a worker for a day.
MAX_RETRY_AFTER_S = 600.0


@dataclass(frozen=True, slots=True)
class _ErrorBody:
    reasons: tuple[str, ...]
    message: str


def _parse_error_body(body: bytes) -> _ErrorBody:
    """Read Google's {"error": {"errors": [{"reason"}], "details": [{"reason"}], "message"}}."""
    try:
        error = json.loads(body.decode("utf-8", "replace")).get("error")
    except (ValueError, AttributeError):
        return _ErrorBody((), "")
    if not isinstance(error, dict):
        return _ErrorBody((), str(error) if isinstance(error, str) else "")
    reasons = [e.get("reason") for e in error.get("errors") or [] if isinstance(e, dict)]
    reasons += [d.get("reason") for d in error.get("details") or [] if isinstance(d, dict)]
    message = error.get("message")
    return _ErrorBody(tuple(r for r in reasons if isinstance(r, str) and r), str(message or ""))


def _parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        delay_s = float(value)
    except ValueError:
        try:
            delay_s = (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds()
        except (TypeError, ValueError):
            return None
    return min(max(delay_s, 0.0), MAX_RETRY_AFTER_S)


def _config_hint(status: int, reasons: tuple[str, ...], message: str, has_key: bool) -> str | None:
    """A user-facing explanation when the failure is the API key's or project's, else None."""
    lowered = message.lower()
    if "accessNotConfigured" in reasons or "SERVICE_DISABLED" in reasons:
        return "The Google Drive API is not enabled for the API key's Google Cloud project: enable it there."
    if set(reasons) & _CONFIG_REASONS or (status == 400 and "api key" in lowered):
        return "The Google API key is not valid (or is restricted): check the configured key."
    if status == 401 or (
        status == 403 and "forbidden" in reasons and (not has_key or "unregistered" in lowered or "api key" in lowered)
    ):
        return "Google Drive refused the request for lack of a valid API key: configure one."
    return None


def _error_from_response(
    status: int, body: bytes, headers: Mapping[str, str], *, has_key: bool, redact: Callable[[str], str]
) -> DriveError:
    parsed = _parse_error_body(body)
    reason = parsed.reasons[0] if parsed.reasons else f"http{status}"
    message = redact(parsed.message or f"Google Drive answered HTTP {status}")
    hint = _config_hint(status, parsed.reasons, message, has_key)
    if hint is not None:
        return DriveConfigError(f"{hint} (Google Drive said: {message})", status=status, reason=reason)
    transient = status in _RETRYABLE_STATUSES or (status == 403 and reason in _RATE_LIMIT_REASONS)
    return DriveError(
        message,
        status=status,
        reason=reason,
        transient=transient,
        retry_after_s=_parse_retry_after(headers.get("Retry-After")),
    )


_KEY_PARAM_RE = re.compile(r"(?i)([?&;]key=)[^&#\s'\"]*")

# What a dropped connection or a timeout raises; such failures are retried as DriveError(reason="transport").
_TRANSPORT_ERRORS = (aiohttp.ClientError, TimeoutError, OSError)
