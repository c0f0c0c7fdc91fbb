"""The HTTP face: PublicDriveEmulator serves the embedded folder view and the download host from its
tree (model.py), with sign-in redirects, the virus-scan form, quota pages, Range, faults and counters."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from urllib.parse import quote

from aiohttp import web

from fotoowl.testing.drive_emulator.query import parse_range
from fotoowl.testing.drive_public_emulator.faults import PublicFault, PublicFaultOn, _PublicFaultRule
from fotoowl.testing.drive_public_emulator.markup import (
    captcha_page,
    file_not_found_page,
    folder_not_found_page,
    folder_page,
    quota_page,
    server_error_page,
    virus_scan_page,
)
from fotoowl.testing.drive_public_emulator.model import PublicItem, PublicTree

SIGN_IN_URL = "https://accounts.google.com/ServiceLogin"
SORRY_URL = "https://www.google.com/sorry/index"
# Google's threshold is about 100 MB; tests pass a small one.
DEFAULT_SCAN_THRESHOLD_BYTES = 100 * 1000 * 1000
_SERVE_CHUNK_BYTES = 1 << 16


class PublicDriveEmulator(PublicTree):
    """An anonymous visitor's Drive with an HTTP face (`make_app`). Mutate the tree between requests.

    Counters for tests: `requests[(kind, id)]` with kind "page" (a folder's embeddedfolderview),
    "download" (a download request without a confirmation) and "confirmed" (the virus-scan form
    submitted); `bytes_served[file_id]`; `range_headers` as (file_id, Range header or None) per byte
    answer; `captchas` counts captcha answers (injected or for going over `captcha_over_per_s`).
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        scan_threshold_bytes: int = DEFAULT_SCAN_THRESHOLD_BYTES,
        captcha_over_per_s: float | None = None,
        download_base_url: str | None = None,
        latency_s: float = 0.0,
    ) -> None:
        super().__init__(seed=seed)
        self.scan_threshold_bytes = scan_threshold_bytes
        # Where the virus-scan form submits to; None = the address that served the form.
        self.download_base_url = download_base_url
        self.latency_s = latency_s
        self.requests: Counter[tuple[str, str]] = Counter()
        self.bytes_served: Counter[str] = Counter()
        self.range_headers: list[tuple[str, str | None]] = []
        self.captchas = 0
        self._uuids: dict[str, str] = {}
        self._uuid_rng = random.Random(seed + 1)
        self._fault_rules: list[_PublicFaultRule] = []
        # Google's per-address limit, as a bucket holding one second of it: past it, a captcha.
        self.captcha_over_per_s = captcha_over_per_s
        self._bucket = captcha_over_per_s or 0.0
        self._bucket_at_s = time.monotonic()

    # -- counters and faults -------------------------------------------------------------------------

    def count(self, kind: str, item_id: str) -> int:
        return self.requests[(kind, item_id)]

    @property
    def total_requests(self) -> int:
        return sum(self.requests.values())

    def reset_counters(self) -> None:
        self.requests.clear()
        self.bytes_served.clear()
        self.range_headers.clear()
        self.captchas = 0

    def inject(
        self, target_id: str | None, fault: PublicFault, *, times: int | None = 1, on: PublicFaultOn = "download"
    ) -> None:
        """Apply `fault` to the next `times` matching requests (None: all of them); `target_id` is the
        folder for pages and the file for downloads, None any."""
        self._fault_rules.append(_PublicFaultRule(fault, target_id, on, times))

    def clear_faults(self) -> None:
        self._fault_rules.clear()

    def _take_fault(self, kind: str, item_id: str, *, body_stage: bool) -> PublicFault | None:
        for rule in self._fault_rules:
            if rule.matches(kind, item_id, body_stage):
                if rule.remaining is not None:
                    rule.remaining -= 1
                return rule.fault
        return None

    def _over_limit(self) -> bool:
        if self.captcha_over_per_s is None:
            return False
        now_s = time.monotonic()
        rate = self.captcha_over_per_s
        self._bucket = min(rate, self._bucket + (now_s - self._bucket_at_s) * rate)
        self._bucket_at_s = now_s
        if self._bucket < 1.0:
            return True
        self._bucket -= 1.0
        return False

    # -- HTTP ----------------------------------------------------------------------------------------

    def make_app(self, *, pages: bool = True, downloads: bool = True) -> web.Application:
        """The folder pages (drive.google.com's part) and the downloads (drive.usercontent.google.com's)."""
        app = web.Application()
        if pages:
            app.router.add_get("/embeddedfolderview", self._handle_folder)
        if downloads:
            app.router.add_get("/download", self._handle_download)
        return app

    @staticmethod
    def _html(text: str, status: int = 200) -> web.Response:
        return web.Response(status=status, text=text, content_type="text/html", charset="utf-8")

    @staticmethod
    def _sign_in(request: web.Request) -> web.Response:
        back = quote(str(request.url), safe="")
        location = f"{SIGN_IN_URL}?service=wise&passive=1209600&continue={back}&followup={back}"
        return web.Response(status=302, headers={"Location": location})

    def _captcha(self, request: web.Request, status: int = 429) -> web.Response:
        self.captchas += 1
        peer = request.remote or "127.0.0.1"
        return self._html(captcha_page(str(request.url), peer), status)

    async def _request_fault(self, request: web.Request, kind: str, item_id: str) -> web.StreamResponse | None:
        if self._over_limit():
            return self._captcha(request)
        fault = self._take_fault(kind, item_id, body_stage=False)
        if fault is None:
            return None
        if fault.kind == "latency":
            await asyncio.sleep(fault.latency_s)
            return None
        if fault.kind == "drop":
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=500)
        if fault.kind == "captcha":
            return self._captcha(request, fault.status)
        if fault.kind == "sorry_redirect":
            self.captchas += 1
            return web.Response(status=302, headers={"Location": f"{SORRY_URL}?continue={quote(str(request.url))}"})
        if fault.kind == "sign_in":
            return self._sign_in(request)
        if fault.kind == "html_instead":
            return self._html("<!DOCTYPE html><html><body><p>Something else entirely.</p></body></html>")
        headers = {"Retry-After": f"{fault.retry_after_s:g}"} if fault.retry_after_s is not None else {}
        response = self._html(server_error_page(fault.status), fault.status)
        response.headers.update(headers)
        return response

    async def _handle_folder(self, request: web.Request) -> web.StreamResponse:
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        folder_id = request.query.get("id", "")
        self.requests[("page", folder_id)] += 1
        if (failure := await self._request_fault(request, "page", folder_id)) is not None:
            return failure
        folder = self.items.get(folder_id)
        if folder is None or folder.kind != "folder":
            return self._html(folder_not_found_page(), 404)
        if not self.accessible(folder, request.query.get("resourcekey")):
            return self._sign_in(request)
        return self._html(folder_page(folder, self.visible_children(folder_id)))

    async def _handle_download(self, request: web.Request) -> web.StreamResponse:
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        query = request.query
        file_id = query.get("id", "")
        confirmed = bool(query.get("confirm")) and self._uuids.get(query.get("uuid", "")) == file_id
        self.requests[("confirmed" if confirmed else "download", file_id)] += 1
        if (failure := await self._request_fault(request, "download", file_id)) is not None:
            return failure
        item = self.items.get(file_id)
        if item is None or item.kind != "file" or item.content is None:
            return self._html(file_not_found_page(), 404)
        if not self.accessible(item, query.get("resourcekey")):
            return self._sign_in(request)
        if item.redirect_to is not None:
            return web.Response(status=302, headers={"Location": item.redirect_to})
        if item.quota_exceeded:
            return self._html(quota_page())
        content = item.content
        size_bytes = await asyncio.to_thread(lambda: content.size_bytes)
        if size_bytes > self.scan_threshold_bytes and not confirmed:
            token = str(uuid.UUID(int=self._uuid_rng.getrandbits(128), version=4))
            self._uuids[token] = file_id
            action = f"{(self.download_base_url or str(request.url.origin())).rstrip('/')}/download"
            return self._html(virus_scan_page(item, size_bytes, action, token))
        return await self._serve_bytes(request, item, size_bytes)

    @staticmethod
    def _disposition(name: str) -> str:
        ascii_name = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in name)
        return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}"

    async def _serve_bytes(self, request: web.Request, item: PublicItem, size_bytes: int) -> web.StreamResponse:
        content = item.content
        assert content is not None
        range_header = request.headers.get("Range")
        self.range_headers.append((item.id, range_header))
        fault = self._take_fault("download", item.id, body_stage=True)
        headers = {
            "Content-Type": item.mime_type,
            "Content-Disposition": self._disposition(item.name),
            "Accept-Ranges": "bytes",
        }
        start, end, status = 0, size_bytes, 200
        if range_header is not None and not (fault is not None and fault.kind == "ignore_range"):
            byte_range = parse_range(range_header, size_bytes)
            if byte_range is None:
                return web.Response(status=416, headers={"Content-Range": f"bytes */{size_bytes}"})
            start, end = byte_range
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{size_bytes}"
        response = web.StreamResponse(status=status, headers=headers)
        stop = end
        if fault is not None and fault.kind in ("reset", "truncate"):
            stop = min(end, start + fault.after_bytes)
        if fault is not None and fault.kind == "truncate":
            response.enable_chunked_encoding()
        else:
            response.content_length = end - start
        await response.prepare(request)
        try:
            for chunk in content.iter_bytes(start, stop, _SERVE_CHUNK_BYTES):
                await response.write(chunk)
                self.bytes_served[item.id] += len(chunk)
        except ConnectionResetError:
            return response
        if fault is not None and fault.kind == "reset":
            if request.transport is not None:
                request.transport.abort()
            return response
        await response.write_eof()
        return response
