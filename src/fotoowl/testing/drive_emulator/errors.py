"""Error bodies: Google's JSON error envelope and the answers built from it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    416: "OUT_OF_RANGE",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_REASON_TEXT = {
    "rateLimitExceeded": ("usageLimits", "Rate Limit Exceeded"),
    "userRateLimitExceeded": (
        "usageLimits",
        "User Rate Limit Exceeded. Rate of requests for user exceed configured project quota.",
    ),
    "dailyLimitExceeded": ("usageLimits", "Daily Limit Exceeded"),
    "downloadQuotaExceeded": ("usageLimits", "The download quota for this file has been exceeded."),
    "cannotDownloadAbusiveFile": (
        "global",
        "This file has been identified as malware or spam and cannot be downloaded.",
    ),
    "cannotDownloadFile": ("global", "The requested user cannot download this file."),
    "fileNotDownloadable": (
        "global",
        "Only files with binary content can be downloaded. Use Export with Docs Editors files.",
    ),
    "backendError": ("global", "Backend Error"),
    "internalError": ("global", "Internal Error"),
}
_DEFAULT_REASONS = {429: "rateLimitExceeded", 500: "backendError", 503: "backendError", 504: "backendError"}


def error_body(
    status: int,
    reason: str,
    message: str,
    *,
    domain: str = "global",
    location: str | None = None,
    details: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Google's JSON error envelope."""
    entry: dict[str, Any] = {"message": message, "domain": domain, "reason": reason}
    if location is not None:
        entry.update(location=location, locationType="parameter")
    error: dict[str, Any] = {"code": status, "message": message, "errors": [entry]}
    if status in _STATUS_NAMES:
        error["status"] = _STATUS_NAMES[status]
    if details:
        error["details"] = details
    return {"error": error}


def error_response(
    status: int,
    reason: str,
    message: str | None = None,
    *,
    domain: str | None = None,
    location: str | None = None,
    headers: Mapping[str, str] | None = None,
    details: list[dict[str, Any]] | None = None,
) -> web.Response:
    default_domain, default_message = _REASON_TEXT.get(reason, ("global", reason))
    body = error_body(
        status,
        reason,
        message or default_message,
        domain=domain or default_domain,
        location=location,
        details=details,
    )
    return web.json_response(body, status=status, headers=headers)


def _invalid_value(location: str, message: str = "Invalid Value") -> web.Response:
    return error_response(400, "invalid", message, location=location)


def _not_found(file_id: str) -> web.Response:
    return error_response(404, "notFound", f"File not found: {file_id}.", location="fileId")
