"""Protection of writes against other sites, and the access token for the UI.

Every write (JSON or form) coming from another site, as browsers label it with `Sec-Fetch-Site` and
`Origin`, is refused. On top of that, HTML forms carry a token: the HMAC, under the server's secret
key, of a random session id kept in a cookie. A site able to plant our cookie (a sibling subdomain)
still cannot make the matching token. When FOTOOWL_API_TOKEN is set the UI must also be "unlocked":
the user typed the token once at /ui/unlock and holds a cookie derived from it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import re
import secrets
from urllib.parse import urlsplit

from aiohttp import web

from fotoowl.config import AppSettings
from fotoowl.web.errors import ApiError, Handler
from fotoowl.web.keys import SETTINGS

log = logging.getLogger("fotoowl.web")

CSRF_COOKIE = "fotoowl_csrf"
CSRF_FIELD = "csrf_token"
UNLOCK_COOKIE = "fotoowl_unlock"
UNLOCK_MAX_AGE_S = 30 * 24 * 3600
SECRET_KEY_FILE = "secret-key"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
CROSS_SITE_MESSAGE = "This form has expired or came from another site. Go back, reload the page and try again."

SECRET_KEY = web.AppKey("secret_key", bytes)
CSRF_SESSION = web.RequestKey("csrf_session", str)
CSRF_TOKEN = web.RequestKey("csrf_token", str)
CSRF_IS_NEW = web.RequestKey("csrf_is_new", bool)

# What secrets.token_urlsafe makes; anything else in the cookie is replaced, never echoed.
_SESSION_ID = re.compile(r"[A-Za-z0-9_-]{32,128}")


# --- the secret key -----------------------------------------------------------------------------


def load_secret_key(settings: AppSettings) -> bytes:
    """FOTOOWL_SECRET_KEY, or a random key kept in the data folder so a restart keeps forms valid."""
    if settings.secret_key:
        return settings.secret_key.get().encode()
    path = settings.data_dir / SECRET_KEY_FILE
    try:
        existing: bytes | None = path.read_bytes().strip()
    except FileNotFoundError:
        existing = None
    if existing is not None and len(existing) >= 32:
        return existing
    key = secrets.token_urlsafe(48).encode()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written aside, then linked into place: a process starting at the same moment sees no file
        # or a whole one, and every process ends up with the key that was linked first.
        tmp = path.with_name(f".{SECRET_KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(key + b"\n")
        try:
            if existing is None:
                os.link(tmp, path)
            else:
                os.replace(tmp, path)  # too short to be a key this code wrote
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
        return path.read_bytes().strip()
    except OSError as exc:
        log.warning(
            "cannot keep the secret key in %s (%s): forms will not survive a restart; set FOTOOWL_SECRET_KEY",
            path,
            type(exc).__name__,
        )
        return key


async def _load_secret_key(app: web.Application) -> None:
    app[SECRET_KEY] = await asyncio.to_thread(load_secret_key, app[SETTINGS])


def setup(app: web.Application) -> None:
    app.on_startup.append(_load_secret_key)


# --- writes from other sites --------------------------------------------------------------------


def is_cross_site(request: web.Request) -> bool:
    if request.headers.get("Sec-Fetch-Site", "").strip().lower() == "cross-site":
        return True
    origin = request.headers.get("Origin")
    if origin is None:
        return False  # not a browser, or one too old to send it: the form token still applies
    parts = urlsplit(origin.strip().lower())
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
        return True  # "null" (sandboxed frames, file:, data:) and anything malformed
    # A proxy may pass its own address as Host and the public one as X-Forwarded-Host; a browser on
    # another site can set neither, so matching either one is still this site.
    own = {request.host.lower(), request.headers.get("X-Forwarded-Host", "").split(",")[0].strip().lower()}
    return parts.netloc not in own


@web.middleware
async def cross_site_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.method not in SAFE_METHODS and request.match_info.http_exception is None and is_cross_site(request):
        raise ApiError(403, "csrf_failed", CROSS_SITE_MESSAGE)
    return await handler(request)


# --- the form token -----------------------------------------------------------------------------


def _sign(request: web.Request, session_id: str) -> str:
    return hmac.new(request.app[SECRET_KEY], b"fotoowl-csrf-v1:" + session_id.encode(), hashlib.sha256).hexdigest()


def csrf_token(request: web.Request) -> str:
    """The token for this client's forms; a client without a usable cookie gets a new session id,
    which `render` sets as the cookie."""
    if CSRF_TOKEN in request:
        return request[CSRF_TOKEN]
    session_id = request.cookies.get(CSRF_COOKIE, "")
    is_new = not _SESSION_ID.fullmatch(session_id)
    if is_new:
        session_id = secrets.token_urlsafe(32)
    request[CSRF_SESSION] = session_id
    request[CSRF_IS_NEW] = is_new
    request[CSRF_TOKEN] = _sign(request, session_id)
    return request[CSRF_TOKEN]


async def checked_form(request: web.Request) -> dict[str, str]:
    """The POSTed text fields, once their token is the signature of the cookie's session; 403 otherwise."""
    form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
    session_id = request.cookies.get(CSRF_COOKIE, "")
    sent = form.get(CSRF_FIELD, "").encode("utf-8", "replace")
    if not (_SESSION_ID.fullmatch(session_id) and hmac.compare_digest(sent, _sign(request, session_id).encode())):
        raise ApiError(403, "csrf_failed", CROSS_SITE_MESSAGE)
    return form


# --- the access token in the UI -----------------------------------------------------------------


def unlock_value(token: str) -> str:
    # Derived from, never equal to, the token: a leaked cookie does not reveal the API token, and
    # changing the token locks every browser out again.
    return hmac.new(token.encode(), b"fotoowl-ui-unlock-v1", hashlib.sha256).hexdigest()


def is_unlocked(request: web.Request) -> bool:
    token = request.app[SETTINGS].api_token
    if not token:
        return True
    # Header bytes that are not UTF-8 arrive as surrogate escapes; they must not make encode() fail.
    cookie = request.cookies.get(UNLOCK_COOKIE, "").encode("utf-8", "surrogateescape")
    return hmac.compare_digest(cookie, unlock_value(token.get()).encode())


def require_unlocked(request: web.Request) -> None:
    if not is_unlocked(request):
        raise ApiError(
            401,
            "unauthorized",
            "This server needs its access token (FOTOOWL_API_TOKEN) before it imports, retries or cancels anything.",
        )
