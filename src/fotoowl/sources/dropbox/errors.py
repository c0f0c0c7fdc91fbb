"""Dropbox's error answers, read and classified into fotoowl.sources.base errors.

Dropbox answers 400 with a plain-text message (a malformed call), 401 with an AuthError (credentials),
403 with an AccessError, 409 with the route's own error as `{"error_summary", "error": {".tag"...}}`,
429 with a RateLimitError (`retry_after`) or only a Retry-After header, and 5xx on its own failures.
`reason` of a 409 is its tag path joined with "/" (e.g. "path/not_found"); callers map the ones they
know onto messages for people.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp

from fotoowl.sources.base import SourceConfigError, SourceError

__all__ = ["DropboxErrorBody", "error_from_response", "is_rate_limit", "parse_error_body"]

# What Dropbox's SDKs wait when a 429 names no delay at all.
DEFAULT_RETRY_AFTER_S = 5.0
# Retry-After is honoured, but a broken proxy must not park a worker for a day.
MAX_RETRY_AFTER_S = 600.0
_RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_MAX_SHOWN_CHARS = 300
_CONFIG_WORDS = ("authorization", "app key", "app secret", "consumer key", "client_id", "client id")

# What a dropped connection or a timeout raises; such failures are retried as SourceError(reason="transport").
TRANSPORT_ERRORS = (aiohttp.ClientError, TimeoutError, OSError)


@dataclass(frozen=True, slots=True)
class DropboxErrorBody:
    """An error answer's tags, outermost first (("path", "not_found")), its summary and any retry_after."""

    tags: tuple[str, ...]
    summary: str
    retry_after_s: float | None = None

    @property
    def reason(self) -> str:
        return "/".join(self.tags)


def _tag_path(error: Mapping[str, Any]) -> tuple[str, ...]:
    """Follow a union's `.tag` into its value while the value is itself a tagged union."""
    tags: list[str] = []
    node: object = error
    while isinstance(node, dict) and isinstance(node.get(".tag"), str) and len(tags) < 8:
        tag = node[".tag"]
        tags.append(tag)
        node = node.get(tag)
    return tuple(tags)


def _summary_tags(summary: str) -> tuple[str, ...]:
    # error_summary ends in a "/.." or "/..." filler that keeps people from matching on whole strings.
    return tuple(part for part in summary.split("/") if part and set(part) != {"."})


def parse_error_body(body: bytes) -> DropboxErrorBody | None:
    """The JSON error of a 401, 403, 409 or 429 answer; None for plain text (a 400, an HTML error page)."""
    try:
        value = json.loads(body.decode("utf-8", "replace"))
    except ValueError:
        return None
    if not isinstance(value, dict):
        return None
    summary = value.get("error_summary")
    summary = summary if isinstance(summary, str) else ""
    error = value.get("error")
    tags: tuple[str, ...] = ()
    retry_after_s: float | None = None
    if isinstance(error, dict):
        tags = _tag_path(error)
        # A RateLimitError is a struct, not a union: its tag is under `reason`.
        reason = error.get("reason")
        if not tags and isinstance(reason, dict):
            tags = _tag_path(reason)
        raw_retry = error.get("retry_after")
        if isinstance(raw_retry, int | float) and not isinstance(raw_retry, bool):
            retry_after_s = min(max(float(raw_retry), 0.0), MAX_RETRY_AFTER_S)
    if not tags:
        tags = _summary_tags(summary)
    if not tags and not summary:
        return None
    return DropboxErrorBody(tags, summary, retry_after_s)


def parse_retry_after(value: str | None) -> float | None:
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


def is_rate_limit(error: SourceError) -> bool:
    """Dropbox asking us to slow down (every 429: too_many_requests or too_many_write_operations)."""
    return error.status == 429


def _shown_text(body: bytes) -> str:
    text = " ".join(body.decode("utf-8", "replace").split())
    return text if len(text) <= _MAX_SHOWN_CHARS else text[: _MAX_SHOWN_CHARS - 1] + "…"


def error_from_response(
    status: int, body: bytes, headers: Mapping[str, str], *, route: str, redact: Callable[[str], str]
) -> SourceError:
    """The SourceError for a non-2xx answer to `route` (e.g. "files/list_folder")."""
    parsed = parse_error_body(body)
    if status == 429:
        retry_after_s = parsed.retry_after_s if parsed is not None else None
        if retry_after_s is None:
            retry_after_s = parse_retry_after(headers.get("Retry-After"))
        reason = parsed.reason if parsed is not None and parsed.tags else "too_many_requests"
        return SourceError(
            f"Dropbox is rate limiting fotoowl's requests ({reason})",
            reason=reason,
            status=429,
            transient=True,
            retry_after_s=DEFAULT_RETRY_AFTER_S if retry_after_s is None else retry_after_s,
        )
    said = redact((parsed.summary or parsed.reason) if parsed is not None else _shown_text(body))
    if status == 401:
        reason = parsed.reason if parsed is not None and parsed.tags else "unauthorized"
        return SourceConfigError(
            "Dropbox refused fotoowl's app credentials: check the configured Dropbox app key and secret "
            f"(Dropbox said: {said or 'HTTP 401'})",
            reason=reason,
            status=401,
        )
    if status == 400 and any(word in said.lower() for word in _CONFIG_WORDS):
        return SourceConfigError(
            f"Dropbox refused fotoowl's app credentials: check the configured Dropbox app key and secret "
            f"(Dropbox said: {said})",
            reason="bad_app_auth",
            status=400,
        )
    if status == 403:
        return SourceConfigError(
            f"Dropbox does not let fotoowl's app use {route} (Dropbox said: {said or 'HTTP 403'}): check the "
            "app's permissions (sharing.read and files.metadata.read) in the Dropbox App Console",
            reason=parsed.reason if parsed is not None and parsed.tags else "access_denied",
            status=403,
        )
    if status == 409 and parsed is not None and parsed.tags:
        return SourceError(f"Dropbox {route} failed: {said}", reason=parsed.reason, status=409)
    if status == 400:
        return SourceError(
            f"Dropbox rejected the {route} request: {said or 'HTTP 400'}", reason="bad_request", status=400
        )
    transient = status in _RETRYABLE_STATUSES or status >= 500
    return SourceError(
        f"Dropbox answered {route} with HTTP {status}" + (f": {said}" if said and not transient else ""),
        reason=parsed.reason if parsed is not None and parsed.tags else f"http{status}",
        status=status,
        transient=transient,
        retry_after_s=parse_retry_after(headers.get("Retry-After")) if transient else None,
    )
