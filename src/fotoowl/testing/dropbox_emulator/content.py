"""Sending a file's bytes: single byte ranges (206, 416) and the body-stage faults that cut them short."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable

from aiohttp import web

from fotoowl.testing.dropbox_emulator.faults import DropboxFault
from fotoowl.testing.images import Content

_SERVE_CHUNK_BYTES = 1 << 16
_RANGE_RE = re.compile(r"bytes=(\d*)-(\d*)")


def parse_range(header: str, size_bytes: int) -> tuple[int, int] | None:
    """[start, end) of a single "bytes=a-b" / "bytes=a-" / "bytes=-n" range; None when unsatisfiable."""
    match = _RANGE_RE.fullmatch(header.strip())
    if match is None or not (match.group(1) or match.group(2)):
        return None
    if not match.group(1):
        start, end = max(0, size_bytes - int(match.group(2))), size_bytes
    else:
        start = int(match.group(1))
        end = min(size_bytes, int(match.group(2)) + 1) if match.group(2) else size_bytes
    return (start, end) if start < end else None


async def serve_content(
    request: web.Request,
    content: Content,
    headers: dict[str, str],
    fault: DropboxFault | None,
    served: Callable[[int], None],
) -> web.StreamResponse:
    """The whole file or the requested range of it; `served` is told each chunk's size as it goes out."""
    size_bytes = await asyncio.to_thread(lambda: content.size_bytes)
    range_header = request.headers.get("Range")
    start, end, status = 0, size_bytes, 200
    if range_header is not None and not (fault is not None and fault.kind == "ignore_range"):
        byte_range = parse_range(range_header, size_bytes)
        if byte_range is None:
            return web.Response(
                status=416, text="Requested Range Not Satisfiable", headers={"Content-Range": f"bytes */{size_bytes}"}
            )
        start, end = byte_range
        status = 206
        headers = {**headers, "Content-Range": f"bytes {start}-{end - 1}/{size_bytes}"}
    response = web.StreamResponse(status=status, headers=headers)
    stop = end
    if fault is not None and fault.kind in ("reset", "truncate"):
        stop = min(end, start + fault.after_bytes)
    if fault is not None and fault.kind == "truncate":
        response.enable_chunked_encoding()
    else:
        response.content_length = end - start
    await response.prepare(request)
    bandwidth = fault.bandwidth_bytes_per_s if fault is not None and fault.kind == "slow" else None
    try:
        for chunk in content.iter_bytes(start, stop, _SERVE_CHUNK_BYTES):
            await response.write(chunk)
            served(len(chunk))
            if bandwidth:
                await asyncio.sleep(len(chunk) / bandwidth)
    except ConnectionResetError:
        # The client went away mid-body (a cancelled import, a killed worker): normal for a server.
        return response
    if fault is not None and fault.kind == "reset":
        if request.transport is not None:
            request.transport.abort()
        return response
    await response.write_eof()
    return response
