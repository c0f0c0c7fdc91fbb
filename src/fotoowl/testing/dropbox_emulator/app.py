"""The HTTP face: DropboxEmulator serves the four shared-link routes from its tree (model.py), with app
authentication, cursors, Range, a request quota and injected faults, and counts what it was asked."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import random
import re
import secrets
import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from fotoowl.testing.dropbox_emulator.content import serve_content
from fotoowl.testing.dropbox_emulator.errors import auth_error, bad_request, rate_limited, route_error, server_error
from fotoowl.testing.dropbox_emulator.faults import DropboxFault, DropboxRoute, _DropboxFaultRule
from fotoowl.testing.dropbox_emulator.model import DropboxNode, DropboxSharedLink, DropboxTree

MAX_LIMIT = 2000
_PATH_RE = re.compile(r"(/(.|[\r\n])*)?")
_CORS_HACK = "text/plain; charset=dropbox-cors-hack"
_RPC_CONTENT_TYPES = frozenset({"application/json", "application/json; charset=utf-8", _CORS_HACK})
_DOWNLOAD_CONTENT_TYPES = frozenset({"", "application/octet-stream", _CORS_HACK})


@dataclass(frozen=True, slots=True)
class _ListingCursor:
    link_id: str
    path: str
    child_ids: tuple[str, ...]  # the listing as it was when it started
    offset: int
    limit: int  # continuations keep the first call's limit, as Dropbox's do


class DropboxEmulator(DropboxTree):
    """An in-memory Dropbox serving shared links over HTTP (`make_app`). Mutate the tree between requests.

    Counters for tests: `requests[(route, path)]` with route list, continue, metadata or download and
    path the API path asked for ("" for a link's root, "/Sub/a.jpg" for a file); `bytes_served[path]`;
    `range_headers` as (path, Range header or None) per byte answer; `api_args` as the raw
    Dropbox-API-Arg headers received; `list_limits` as the `limit` of each list_folder call.
    `list_page_sizes` scripts the length of the next pages (0: an empty page that still has_more);
    `short_page_rate` shortens pages at random. `missing_file_error` is the 409 answered for a path
    that is not (or no longer) in the link.
    """

    def __init__(
        self,
        *,
        app_key: str = "test-app-key",
        app_secret: str = "test-app-secret",
        seed: int = 0,
        short_page_rate: float = 0.0,
        latency_s: float = 0.0,
        quota_per_s: float | None = None,
    ) -> None:
        super().__init__(seed=seed)
        self.app_key = app_key
        self.app_secret = app_secret
        self.short_page_rate = short_page_rate
        self.latency_s = latency_s
        self.missing_file_error: tuple[str, ...] = ("path", "not_found")
        self.requests: Counter[tuple[str, str]] = Counter()
        self.bytes_served: Counter[str] = Counter()
        self.range_headers: list[tuple[str, str | None]] = []
        self.api_args: list[str] = []
        self.list_limits: list[int] = []
        self.list_page_sizes: deque[int] = deque()
        self._fault_rng = random.Random(seed + 1)
        self._fault_rules: list[_DropboxFaultRule] = []
        self._cursors: dict[str, _ListingCursor] = {}
        self._reset_cursors: set[str] = set()
        # Dropbox's per-app request limit, as a bucket holding one second of it; `rate_limited` counts refusals.
        self.quota_per_s = quota_per_s
        self._quota_tokens = quota_per_s or 0.0
        self._quota_updated_s = time.monotonic()
        self.rate_limited = 0

    # -- counters ------------------------------------------------------------------------------------

    def count(self, route: str, path: str | None = None) -> int:
        """Requests to `route` (for `path`, case-insensitive; all paths when None)."""
        return sum(
            n for (r, p), n in self.requests.items() if r == route and (path is None or p.lower() == path.lower())
        )

    def reset_counters(self) -> None:
        self.requests.clear()
        self.bytes_served.clear()
        self.range_headers.clear()
        self.api_args.clear()
        self.list_limits.clear()

    def invalidate_cursors(self) -> None:
        """Every cursor handed out so far answers `reset` from now on, as after a change Dropbox cannot page over."""
        self._reset_cursors.update(self._cursors)
        self._cursors.clear()

    # -- faults --------------------------------------------------------------------------------------

    def inject(
        self, path: str | None, fault: DropboxFault, *, times: int | None = 1, route: DropboxRoute = "download"
    ) -> None:
        """Apply `fault` to the next `times` matching requests (None: all). `path` is the API path asked
        for (a folder for list/continue, a file for download); None matches any."""
        self._fault_rules.append(_DropboxFaultRule(fault, path, route, times))

    def inject_random(self, fault: DropboxFault, *, rate: float, route: DropboxRoute = "download") -> None:
        """Apply `fault` to each matching request with probability `rate` (seeded: reproducible)."""
        self._fault_rules.append(_DropboxFaultRule(fault, None, route, None, probability=rate))

    def clear_faults(self) -> None:
        self._fault_rules.clear()

    def _take_fault(self, route: str, path: str, *, body_stage: bool) -> DropboxFault | None:
        for rule in self._fault_rules:
            if not rule.matches(route, path, body_stage):
                continue
            if rule.probability < 1.0 and self._fault_rng.random() >= rule.probability:
                continue
            if rule.remaining is not None:
                rule.remaining -= 1
            return rule.fault
        return None

    async def _request_fault(self, request: web.Request, route: str, path: str) -> web.StreamResponse | None:
        fault = self._take_fault(route, path, body_stage=False)
        if fault is None:
            return None
        if fault.kind == "latency":
            await asyncio.sleep(fault.latency_s)
            return None
        if fault.kind == "drop":
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=500)
        if fault.kind == "rate_limited":
            return rate_limited(fault.retry_after_s, json_body=fault.json_body)
        if fault.tags:
            return route_error(*fault.tags, status=fault.status)
        return server_error(fault.status)

    # -- HTTP ----------------------------------------------------------------------------------------

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/2/files/list_folder", self._handle_list)
        app.router.add_post("/2/files/list_folder/continue", self._handle_continue)
        app.router.add_post("/2/sharing/get_shared_link_metadata", self._handle_metadata)
        app.router.add_post("/2/sharing/get_shared_link_file", self._handle_file)
        return app

    def _check_auth(self, request: web.Request, route: str) -> web.Response | None:
        header = request.headers.get("Authorization")
        if not header:
            return bad_request(route, 'Must provide HTTP header "Authorization" or URL parameter "authorization".')
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "basic":
            # A user token on a route called with app auth here: fotoowl never sends one.
            return bad_request(route, 'Invalid authorization value in HTTP header "Authorization": expected Basic.')
        try:
            key, _, secret = base64.b64decode(token.strip(), validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return bad_request(route, 'Invalid authorization value in HTTP header "Authorization".')
        if not (hmac.compare_digest(key, self.app_key) and hmac.compare_digest(secret, self.app_secret)):
            return auth_error()
        return None

    def _check_quota(self) -> web.Response | None:
        if self.quota_per_s is None:
            return None
        now_s = time.monotonic()
        self._quota_tokens = min(
            self.quota_per_s, self._quota_tokens + (now_s - self._quota_updated_s) * self.quota_per_s
        )
        self._quota_updated_s = now_s
        if self._quota_tokens < 1.0:
            self.rate_limited += 1
            return rate_limited(1)
        self._quota_tokens -= 1.0
        return None

    async def _json_arg(self, request: web.Request, route: str) -> dict[str, Any] | web.Response:
        try:
            value = json.loads(await request.read())
        except ValueError:
            return bad_request(route, "request body: could not decode input as JSON")
        return value if isinstance(value, dict) else bad_request(route, "request body: expected an object")

    def _open_link(self, url: object, password: object) -> DropboxSharedLink | web.Response:
        link = self.find_link(url)
        if link is None:
            return route_error("shared_link_not_found")
        if link.password is not None and not (
            isinstance(password, str) and hmac.compare_digest(password, link.password)
        ):
            return route_error("shared_link_access_denied")
        return link

    async def _start(self, request: web.Request, route: str, kind: str, path: str) -> web.Response | None:
        """Latency, counting, authentication, Content-Type and quota: what every route does first."""
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        self.requests[(kind, path)] += 1
        return self._check_auth(request, route) or self._check_content_type(request, route, kind) or self._check_quota()

    @staticmethod
    def _check_content_type(request: web.Request, route: str, kind: str) -> web.Response | None:
        # RPC routes take JSON; download routes take their argument in a header and no typed body.
        sent = request.headers.get("Content-Type", "")
        allowed = _DOWNLOAD_CONTENT_TYPES if kind == "download" else _RPC_CONTENT_TYPES
        if sent.lower() in allowed:
            return None
        expected = ", ".join(f'"{t}"' for t in sorted(allowed) if t)
        return bad_request(route, f'Bad HTTP "Content-Type" header: "{sent}". Expecting one of {expected}.')

    async def _handle_list(self, request: web.Request) -> web.StreamResponse:
        route = "files/list_folder"
        arg = await self._json_arg(request, route)
        path = arg.get("path") if isinstance(arg, dict) else None
        if (refusal := await self._start(request, route, "list", path if isinstance(path, str) else "")) is not None:
            return refusal
        if isinstance(arg, web.Response):
            return arg
        if not isinstance(path, str):
            return bad_request(route, "request body: missing required field 'path'")
        if not _PATH_RE.fullmatch(path):
            return bad_request(route, f"request body: path: '{path}' did not match pattern '(/(.|[\\r\\n])*)?'")
        shared_link = arg.get("shared_link")
        if not isinstance(shared_link, dict):
            return bad_request(route, "this emulator lists shared links only: pass shared_link")
        if arg.get("recursive") is True:
            return bad_request(route, "Recursive list folder is not supported for shared link.")
        limit = arg.get("limit", MAX_LIMIT)
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_LIMIT:
            return bad_request(route, f"request body: limit: {limit!r} is not within [1, {MAX_LIMIT}]")
        self.list_limits.append(limit)
        if (failure := await self._request_fault(request, "list", path)) is not None:
            return failure
        link = self._open_link(shared_link.get("url"), shared_link.get("password"))
        if isinstance(link, web.Response):
            return link
        folder = self.resolve(link, path)
        if folder is None:
            return route_error("path", "not_found")
        if not folder.is_folder:
            return route_error("path", "not_folder")
        child_ids = tuple(child.id for child in self.children(folder.id))
        return await self._page(_ListingCursor(link.link_id, path, child_ids, 0, limit))

    async def _handle_continue(self, request: web.Request) -> web.StreamResponse:
        route = "files/list_folder/continue"
        arg = await self._json_arg(request, route)
        token = arg.get("cursor") if isinstance(arg, dict) else None
        cursor = self._cursors.get(token) if isinstance(token, str) else None
        if (refusal := await self._start(request, route, "continue", cursor.path if cursor else "")) is not None:
            return refusal
        if isinstance(arg, web.Response):
            return arg
        if isinstance(token, str) and token in self._reset_cursors:
            return route_error("reset")
        if cursor is None:
            return bad_request(route, 'Invalid "cursor" parameter.')
        if (failure := await self._request_fault(request, "continue", cursor.path)) is not None:
            return failure
        if cursor.link_id not in self.links:
            return route_error("path", "not_found")
        # Cursors are single-use here, so a client that pages twice from one is caught.
        assert isinstance(token, str)
        del self._cursors[token]
        return await self._page(cursor)

    def _page_length(self, limit: int) -> int:
        if self.list_page_sizes:
            return min(limit, self.list_page_sizes.popleft())
        if self.short_page_rate and self._fault_rng.random() < self.short_page_rate:
            return self._fault_rng.randrange(limit)
        return limit

    async def _page(self, cursor: _ListingCursor) -> web.Response:
        take = self._page_length(cursor.limit)
        page_ids = cursor.child_ids[cursor.offset : cursor.offset + take]
        # Items deleted since the listing started are left out, as Dropbox's own pages would not show them.
        nodes = [self.nodes[i] for i in page_ids if i in self.nodes]
        await self.prepare(nodes)
        offset = cursor.offset + len(page_ids)
        token = secrets.token_urlsafe(32)
        self._cursors[token] = _ListingCursor(cursor.link_id, cursor.path, cursor.child_ids, offset, cursor.limit)
        body = {
            "entries": [self.metadata(n) for n in nodes],
            "cursor": token,
            "has_more": offset < len(cursor.child_ids),
        }
        return web.json_response(body)

    async def _handle_metadata(self, request: web.Request) -> web.StreamResponse:
        route = "sharing/get_shared_link_metadata"
        arg = await self._json_arg(request, route)
        path = arg.get("path") if isinstance(arg, dict) else None
        kind_path = path if isinstance(path, str) else ""
        if (refusal := await self._start(request, route, "metadata", kind_path)) is not None:
            return refusal
        if isinstance(arg, web.Response):
            return arg
        if (failure := await self._request_fault(request, "metadata", path or "")) is not None:
            return failure
        link = self._open_link(arg.get("url"), arg.get("link_password"))
        if isinstance(link, web.Response):
            return link
        node = self.resolve(link, path) if isinstance(path, str) and path else self.nodes.get(link.node_id)
        if node is None:
            return route_error("shared_link_not_found")
        await self.prepare([node])
        return web.json_response(self.link_metadata(link, node))

    async def _handle_file(self, request: web.Request) -> web.StreamResponse:
        route = "sharing/get_shared_link_file"
        raw = request.headers.get("Dropbox-API-Arg", "")
        try:
            arg = json.loads(raw) if raw.isascii() else None
        except ValueError:
            arg = None
        path = arg.get("path") if isinstance(arg, dict) else None
        kind_path = path if isinstance(path, str) else ""
        if (refusal := await self._start(request, route, "download", kind_path)) is not None:
            return refusal
        self.api_args.append(raw)
        if not isinstance(arg, dict):
            return bad_request(
                route,
                'Bad HTTP "Dropbox-API-Arg" header: expected ASCII JSON (escape non-ASCII characters as \\uXXXX).',
            )
        if (failure := await self._request_fault(request, "download", path or "")) is not None:
            return failure
        link = self._open_link(arg.get("url"), arg.get("link_password"))
        if isinstance(link, web.Response):
            return link
        if not link.is_folder:
            node = self.nodes.get(link.node_id) if not path else None
            if node is None:
                return route_error("unsupported_parameter_field") if path else route_error("shared_link_not_found")
        else:
            if not isinstance(path, str) or not path:
                return route_error("shared_link_is_directory")
            node = self.resolve(link, path)
            if node is None:
                return route_error(*self.missing_file_error)
            if node.is_folder:
                return route_error("shared_link_is_directory")
        if not node.is_downloadable:
            return route_error("path", "restricted_content")
        await self.prepare([node])
        return await self._serve_bytes(request, link, node, path or "")

    async def _serve_bytes(
        self, request: web.Request, link: DropboxSharedLink, node: DropboxNode, path: str
    ) -> web.StreamResponse:
        assert node.content is not None
        range_header = request.headers.get("Range")
        self.range_headers.append((path, range_header))
        result = json.dumps(self.link_metadata(link, node), ensure_ascii=True).replace("\x7f", "\\u007f")
        headers = {"Content-Type": "application/octet-stream", "Dropbox-API-Result": result, "Accept-Ranges": "bytes"}

        def served(n_bytes: int) -> None:
            self.bytes_served[path] += n_bytes

        fault = self._take_fault("download", path, body_stage=True)
        return await serve_content(request, node.content, headers, fault, served)
