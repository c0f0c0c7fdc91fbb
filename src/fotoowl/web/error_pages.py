"""Every error, from any route, answers {"error": {"code", "message"}}, or an HTML page under /ui/."""

from __future__ import annotations

import logging

from aiohttp import hdrs, web
from multidict import CIMultiDict

from fotoowl.resilience import is_db_outage, is_redis_outage
from fotoowl.web.errors import ApiError, Handler, error_body
from fotoowl.web.templating import render_error

log = logging.getLogger("fotoowl.web")

# Describe the error body aiohttp made, not the one that replaces it.
_BODY_HEADERS = frozenset({hdrs.CONTENT_TYPE, hdrs.CONTENT_LENGTH, hdrs.CONTENT_ENCODING, hdrs.TRANSFER_ENCODING})


def _wants_html(request: web.Request) -> bool:
    route = request.match_info.route.resource
    path = route.canonical if route is not None else request.path
    return path == "/" or path.startswith("/ui/")


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(request, exc.status_code, exc.code, exc.message)
    except web.HTTPException as exc:
        if exc.status_code < 400:
            raise
        code = exc.reason.lower().replace(" ", "_")
        message = exc.text if exc.text and not exc.text.startswith(f"{exc.status_code}:") else exc.reason
        # Allow on a 405 and the like are part of the answer; only the body is ours.
        headers = CIMultiDict((k, v) for k, v in exc.headers.items() if k not in _BODY_HEADERS)
        return error_response(request, exc.status_code, code, message or exc.reason, headers)
    except Exception as exc:
        if is_db_outage(exc) or is_redis_outage(exc):
            # Our own service is down for a moment: say so, and when to ask again, instead of a 500.
            log.warning("answered 503: %s unavailable", type(exc).__name__, extra={"path": request.path})
            return error_response(
                request,
                503,
                "service_unavailable",
                "The service is briefly unavailable (its database or queue); try again shortly.",
                CIMultiDict({"Retry-After": "5"}),
            )
        log.exception("unhandled error", extra={"path": request.path})
        return error_response(request, 500, "internal_error", "Something went wrong on our side.")


def error_response(
    request: web.Request, status: int, code: str, message: str, headers: CIMultiDict[str] | None = None
) -> web.StreamResponse:
    if _wants_html(request):
        response = render_error(request, status, message)
    else:
        response = web.json_response(error_body(code, message), status=status)
    if headers:
        response.headers.update(headers)
    return response
