"""The error every route raises: an HTTP status with a stable code (its answer: web/error_pages.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(web.HTTPException):
    """An HTTP error carrying a stable machine-readable code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        self.status_code = status
        super().__init__(text=message)
        self.code = code
        self.message = message


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}
