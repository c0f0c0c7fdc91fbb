"""fotoowl's own processes in one scenario, and the HTTP API the harness drives the import through.

Two shapes: `fotoowl serve --no-worker` plus separate `fotoowl worker` processes, or one `fotoowl serve`
with its embedded worker pool. Each process logs to its own file; whichever ends without the harness
having asked for it is reported with the tail of its log.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from bench.procs import PYTHON, Child, Children, wait_for_log

from fotoowl.embedded import free_port

FOTOOWL = str(Path(PYTHON).parent / "fotoowl")
READY_TIMEOUT_S = 120.0
WORKER_READY = "worker started"


@dataclass
class Proc:
    child: Child
    role: str  # "web" or "worker"
    ended_by_us: str = ""  # "SIGKILL", "SIGTERM" when the harness ended it

    @property
    def name(self) -> str:
        return self.child.name

    @property
    def alive(self) -> bool:
        return self.child.proc.returncode is None


class Fleet:
    def __init__(self, children: Children, env: dict[str, str], *, embedded: bool, workers: int = 2) -> None:
        self.children = children
        self.embedded = embedded
        self.n_workers = 0 if embedded else workers
        self.port = free_port()
        self.env = {**env, "FOTOOWL_PORT": str(self.port), "FOTOOWL_EMBEDDED_WORKERS": str(embedded).lower()}
        self.procs: list[Proc] = []
        self._numbers: dict[str, itertools.count[int]] = {"web": itertools.count(1), "worker": itertools.count(1)}
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15))

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def web(self) -> Proc:
        return [p for p in self.procs if p.role == "web"][-1]

    def live_workers(self) -> list[Proc]:
        return [p for p in self.procs if p.role == "worker" and p.alive]

    def ready_workers(self) -> list[Proc]:
        return [p for p in self.live_workers() if WORKER_READY in p.child.log_text()]

    def describe(self) -> str:
        if self.embedded:
            return "`fotoowl serve` with embedded workers"
        return f"`fotoowl serve --no-worker` + {self.n_workers} `fotoowl worker` processes"

    # -- processes -----------------------------------------------------------------------------------

    async def _spawn(self, role: str, args: list[str]) -> Proc:
        child = await self.children.spawn(f"{role}-{next(self._numbers[role])}", args, self.env)
        proc = Proc(child, role)
        self.procs.append(proc)
        return proc

    async def spawn_web(self) -> Proc:
        return await self._spawn(
            "web", [FOTOOWL, "serve", "--port", str(self.port), *([] if self.embedded else ["--no-worker"])]
        )

    async def spawn_worker(self) -> Proc:
        return await self._spawn("worker", [FOTOOWL, "worker"])

    async def start(self) -> None:
        web = await self.spawn_web()
        workers = [await self.spawn_worker() for _ in range(self.n_workers)]
        await self.wait_healthy(web)
        if self.embedded:
            await wait_for_log(web.child, "embedded worker started", READY_TIMEOUT_S)
        for worker in workers:
            await wait_for_log(worker.child, WORKER_READY, READY_TIMEOUT_S)

    async def wait_healthy(self, web: Proc, timeout_s: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not web.alive:
                raise RuntimeError(f"{web.name} exited with {web.child.proc.returncode}:\n{web.child.tail()}")
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with self._session.get(f"{self.base_url}/healthz") as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.2)
        raise TimeoutError(f"{web.name} did not answer /healthz in {timeout_s} s:\n{web.child.tail()}")

    async def kill(self, proc: Proc) -> None:
        proc.ended_by_us = "SIGKILL"
        with contextlib.suppress(ProcessLookupError):
            proc.child.proc.send_signal(signal.SIGKILL)
        await proc.child.proc.wait()

    async def restart_web(self) -> str:
        """SIGTERM (a graceful stop, as a deploy does), then a new process on the same port."""
        old = self.web
        old.ended_by_us = "SIGTERM"
        code = await old.child.stop()
        new = await self.spawn_web()
        await self.wait_healthy(new)
        return f"{old.name} stopped by SIGTERM (exit {code}), {new.name} started on the same port"

    def unexpected_exits(self) -> list[Proc]:
        return [p for p in self.procs if not p.alive and not p.ended_by_us]

    async def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.alive:
                proc.ended_by_us = proc.ended_by_us or "SIGTERM (end of scenario)"
            await self.children.stop(proc.child)
        await self._session.close()

    # -- the API -------------------------------------------------------------------------------------

    async def post_import(self, folder_link: str, timeout_s: float = 60.0) -> int:
        """POST /import/google-drive, retried while the web app is unreachable (it may be restarting)."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                async with self._session.post(
                    f"{self.base_url}/import/google-drive", json={"folder_url": folder_link}
                ) as response:
                    body = await response.json(content_type=None)
                    if response.status == 202:
                        return int(body["import_id"])
                    problem = f"HTTP {response.status}: {body}"
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                problem = f"{type(exc).__name__}: {exc}"
            if time.monotonic() > deadline:
                raise RuntimeError(f"POST /import/google-drive failed: {problem}")
            await asyncio.sleep(1.0)

    async def get_import(self, import_id: int) -> dict[str, Any] | None:
        """GET /imports/{id}; None when the app cannot answer right now (the caller counts those)."""
        try:
            async with self._session.get(f"{self.base_url}/imports/{import_id}") as response:
                if response.status != 200:
                    return None
                body: dict[str, Any] = await response.json()
                return body
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None
