"""Protection of the HTML forms: a CSRF token per client, and the access token for the UI.

Write actions (import, retry, cancel) need the CSRF token of the client's cookie in the form and,
when FOTOOWL_API_TOKEN is set, an "unlocked" UI: the user typed the token once at /ui/unlock and
holds a cookie derived from it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from aiohttp import web

from fotoowl.web import api
from fotoowl.web.app import SETTINGS

CSRF_COOKIE = "fotoowl_csrf"
CSRF_FIELD = "csrf_token"
UNLOCK_COOKIE = "fotoowl_unlock"
UNLOCK_MAX_AGE_S = 30 * 24 * 3600

CSRF_TOKEN = web.RequestKey("csrf_token", str)
CSRF_IS_NEW = web.RequestKey("csrf_is_new", bool)


def csrf_token(request: web.Request) -> str:
    """The client's token from its cookie, or a new one that `render` will set as the cookie."""
    if CSRF_TOKEN in request:
        return request[CSRF_TOKEN]
    token = request.cookies.get(CSRF_COOKIE, "")
    is_new = not (32 <= len(token) <= 128 and token.isascii())
    if is_new:
        token = secrets.token_urlsafe(32)
    request[CSRF_TOKEN] = token
    request[CSRF_IS_NEW] = is_new
    return token



async def checked_form(request: web.Request) -> dict[str, str]:
    """The POSTed text fields, once their CSRF token matches the cookie's; 403 otherwise."""
    form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
    cookie = request.cookies.get(CSRF_COOKIE, "")
    sent = form.get(CSRF_FIELD, "")
    if not (cookie and hmac.compare_digest(cookie.encode(), sent.encode())):
        raise api.ApiError(
            403,
            "csrf_failed",
            "This form has expired or came from another site. Go back, reload the page and try again.",
        )
    return form


def unlock_value(token: str) -> str:
    # Derived from, never equal to, the token: a leaked cookie does not reveal the API token, and
    # changing the token locks every browser out again.
    return hmac.new(token.encode(), b"fotoowl-ui-unlock-v1", hashlib.sha256).hexdigest()


def is_unlocked(request: web.Request) -> bool:
    token = request.app[SETTINGS].api_token
    if not token:
        return True
    cookie = request.cookies.get(UNLOCK_COOKIE, "")
    return hmac.compare_digest(cookie.encode(), unlock_value(token.get()).encode())


def require_unlocked(request: web.Request) -> None:
    if not is_unlocked(request):
        raise api.ApiError(
            401,
            "unauthorized",
            "This server needs its access token (FOTOOWL_API_TOKEN) before it imports, retries or cancels anything.",
        )
