"""A thin typed HTTP client of the fotoowl JSON API, used by the command line.

Answers are read into the pydantic models the server answers with (fotoowl.models), so a change of
shape shows up on both sides at once. The client imports nothing of the web layer.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp
from pydantic import BaseModel, ValidationError

from fotoowl import __version__
from fotoowl.models import Image, ImageList, Import, ImportAccepted, ImportList
from fotoowl.models_sync import Watch, WatchList

MAX_PAGE = 500  # the server's largest page (web/api.py)
# Failure codes that mean "the link or the Drive setup is wrong", not "the import broke".
FOLDER_NOT_ACCESSIBLE = "folder_not_accessible"
DRIVE_CONFIGURATION_ERROR = "drive_configuration_error"

M = TypeVar("M", bound=BaseModel)


class ApiFailure(Exception):
    """The server answered with an error (or with something that is not the fotoowl API)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class ServiceUnreachable(Exception):
    """No answer from the server: nothing listens there, the name does not resolve, or it timed out."""

    def __init__(self, base_url: str, reason: str) -> None:
        super().__init__(f"cannot reach {base_url}: {reason}")
        self.base_url = base_url
        self.reason = reason


# --- what the API answers: the server's own models (fotoowl.models) -----------------------------


@dataclass(frozen=True)
class ImageFilters:
    """GET /images filters; None leaves one out."""

    import_id: int | None = None
    q: str | None = None
    folder: str | None = None
    mime_type: str | None = None
    source: str | None = None

    def params(self) -> dict[str, str]:
        return {f.name: str(v) for f in dataclasses.fields(self) if (v := getattr(self, f.name)) is not None}


# --- the client ---------------------------------------------------------------------------------


class FotoowlClient:
    """One server's API. Use as `async with FotoowlClient(url, token) as api:`.

    The token is sent on every request, reads included: today only writes need it, and a server that
    starts protecting reads keeps working with this client.
    """

    def __init__(
        self, base_url: str, token: str = "", *, timeout_s: float = 30.0, connect_timeout_s: float = 10.0
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http:// or https:// URL: {base_url!r}")
        # A path prefix stays (a server behind a proxy at /fotoowl); the API's paths are appended.
        self.base_url = base_url.rstrip("/")
        self._headers = {"Accept": "application/json", "User-Agent": f"fotoowl-cli/{__version__}"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, connect=connect_timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> FotoowlClient:
        self._session = aiohttp.ClientSession(headers=self._headers, timeout=self._timeout)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # --- the operations ---

    async def start_import(
        self, folder_url: str, recursive: bool = True, password: str | None = None, *, prune: bool = False
    ) -> ImportAccepted:
        """Any source's link: the server recognises which (Google Drive, Dropbox). A folder imported
        before is synced; `prune` deletes the images of files no longer in it."""
        payload: dict[str, object] = {"folder_url": folder_url, "recursive": recursive}
        if password is not None:
            payload["password"] = password
        if prune:
            payload["prune"] = True
        body = await self._request("POST", "/imports", json_body=payload)
        return self._parse(ImportAccepted, body)

    async def create_watch(
        self, folder_url: str, interval_s: int, *, recursive: bool = True, prune: bool = False
    ) -> Watch:
        payload = {"url": folder_url, "interval_s": interval_s, "recursive": recursive, "prune": prune}
        return self._parse(Watch, await self._request("POST", "/watches", json_body=payload))

    async def list_watches(self, limit: int | None = None, cursor: str | None = None) -> WatchList:
        return self._parse(WatchList, await self._request("GET", "/watches", params=_page_params(limit, cursor)))

    async def get_import(self, import_id: int) -> Import:
        return self._parse(Import, await self._request("GET", f"/imports/{import_id}"))

    async def list_imports(self, limit: int | None = None, cursor: str | None = None) -> ImportList:
        params = _page_params(limit, cursor)
        return self._parse(ImportList, await self._request("GET", "/imports", params=params))

    async def list_images(
        self, filters: ImageFilters | None = None, limit: int | None = None, cursor: str | None = None
    ) -> ImageList:
        params = {**(filters or ImageFilters()).params(), **_page_params(limit, cursor)}
        return self._parse(ImageList, await self._request("GET", "/images", params=params))

    async def iter_imports(self, limit: int, *, page_size: int = MAX_PAGE) -> AsyncIterator[Import]:
        """Newest first, up to `limit`, following cursors over as many pages as that takes."""
        cursor: str | None = None
        left = limit
        while left > 0:
            page = await self.list_imports(min(left, page_size), cursor)
            for item in page.imports[:left]:
                yield item
            left -= len(page.imports)
            if not page.next_cursor or not page.imports:
                return
            cursor = page.next_cursor

    async def iter_images(
        self, filters: ImageFilters | None, limit: int, *, page_size: int = MAX_PAGE
    ) -> AsyncIterator[Image]:
        """Newest first, up to `limit`, following cursors over as many pages as that takes."""
        cursor: str | None = None
        left = limit
        while left > 0:
            page = await self.list_images(filters, min(left, page_size), cursor)
            for item in page.images[:left]:
                yield item
            left -= len(page.images)
            if not page.next_cursor or not page.images:
                return
            cursor = page.next_cursor

    # --- HTTP ---

    def _parse(self, model: type[M], body: Any) -> M:
        try:
            return model.model_validate(body)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "the answer"
            raise ApiFailure(
                200,
                "unexpected_response",
                f"{self.base_url} answered, but not as this fotoowl does ({model.__name__}: {where}: "
                f"{first['msg']}); is FOTOOWL_URL the fotoowl server, of the same version?",
            ) from None

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json_body: dict[str, Any] | None = None,
    ) -> Any:
        if self._session is None:
            raise RuntimeError("use `async with FotoowlClient(...)`")
        url = self.base_url + path
        try:
            async with self._session.request(
                method, url, params=params, json=json_body, allow_redirects=method == "GET"
            ) as resp:
                raw = await resp.read()
                status, reason = resp.status, resp.reason or ""
        except aiohttp.ClientConnectorError as exc:
            raise ServiceUnreachable(self.base_url, _connect_reason(exc)) from None
        except TimeoutError:
            raise ServiceUnreachable(self.base_url, "no answer in time") from None
        except aiohttp.ServerDisconnectedError:
            raise ServiceUnreachable(self.base_url, "the server closed the connection") from None
        except aiohttp.ClientError as exc:
            detail = " ".join(f"{type(exc).__name__}: {exc}".split())
            raise ServiceUnreachable(self.base_url, detail) from None
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        if status < 400:
            if body is None:
                raise ApiFailure(
                    status,
                    "unexpected_response",
                    f"{method} {path} answered {status} without JSON; is FOTOOWL_URL the fotoowl server?",
                )
            return body
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict) and isinstance(error.get("code"), str):
            message = error.get("message")
            raise ApiFailure(status, error["code"], message if isinstance(message, str) else reason)
        # A proxy's or another server's error page: no code of ours to give.
        raise ApiFailure(status, f"http_{status}", f"{method} {path} answered {status} {reason}".rstrip())


def _connect_reason(exc: aiohttp.ClientConnectorError) -> str:
    """ "Connection refused" rather than aiohttp's paragraph about the connection key."""
    os_error = getattr(exc, "os_error", None)
    if isinstance(os_error, OSError) and not isinstance(os_error, socket.gaierror) and os_error.errno:
        return os.strerror(os_error.errno)
    return getattr(os_error, "strerror", None) or " ".join(str(exc).split())


def _page_params(limit: int | None, cursor: str | None) -> dict[str, str]:
    params = {}
    if limit is not None:
        params["limit"] = str(limit)
    if cursor:
        params["cursor"] = cursor
    return params
