"""Dropbox-shaped error answers: 409 route errors, 401 auth errors, 429 rate limits, 400 plain text."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web


def error_body(*tags: str) -> dict[str, Any]:
    """A route error as Dropbox sends it: nested unions, and a summary ending in a filler segment.

    error_body("path", "not_found") -> {"error_summary": "path/not_found/..",
    "error": {".tag": "path", "path": {".tag": "not_found"}}}
    """
    error: dict[str, Any] = {".tag": tags[-1]}
    for tag in reversed(tags[:-1]):
        error = {".tag": tag, tag: error}
    return {"error_summary": "/".join(tags) + "/..", "error": error}


def route_error(*tags: str, status: int = 409, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response(error_body(*tags), status=status, headers=headers)


def bad_request(route: str, message: str) -> web.Response:
    """Dropbox's 400: plain text naming the route, for calls that are malformed rather than refused."""
    return web.Response(
        status=400, text=f'Error in call to API function "{route}": {message}', content_type="text/plain"
    )


def auth_error() -> web.Response:
    return route_error("invalid_access_token", status=401)


def rate_limited(retry_after_s: float | None, *, json_body: bool = True) -> web.Response:
    """A 429: the RateLimitError JSON (with a Retry-After header too), or plain text with the header only."""
    headers = {}
    if retry_after_s is not None:
        headers["Retry-After"] = str(int(retry_after_s)) if float(retry_after_s).is_integer() else str(retry_after_s)
    if not json_body:
        return web.Response(status=429, text="Too Many Requests", content_type="text/plain", headers=headers)
    body = {
        "error_summary": "too_many_requests/..",
        "error": {"reason": {".tag": "too_many_requests"}, "retry_after": retry_after_s or 0},
    }
    # Dropbox's retry_after is an integer number of seconds; a float here keeps sub-second tests fast.
    return web.Response(status=429, text=json.dumps(body), content_type="application/json", headers=headers)


def server_error(status: int) -> web.Response:
    if status == 503:
        return web.Response(status=503, text="Service Unavailable", content_type="text/plain")
    html = "<html><head><title>Dropbox - 5xx</title></head><body>Something went wrong.</body></html>"
    return web.Response(status=status, text=html, content_type="text/html")
