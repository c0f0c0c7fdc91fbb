"""PostgreSQL, Valkey and SeaweedFS as real processes, each behind a fault proxy in the harness's loop.

fotoowl processes are only ever given the proxies' ports. A server that is restarted comes back on
whatever port its launcher (fotoowl.embedded) picks, and its proxy is re-pointed there: clients keep
their configured address, exactly as with a server restarted in place. The faults themselves are real:
signals to the server processes (SIGSTOP, SIGKILL, PostgreSQL's fast shutdown on SIGINT), and a fresh
Valkey that knows nothing of the jobs queued before.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from bench.stack import Stack

from fotoowl import embedded
from fotoowl.embedded import EmbeddedError, Server
from fotoowl.testing.faultproxy import HttpFaultProxy, TcpFaultProxy

BUCKET = "chaos"
S3_KEY_ID = "chaos"
HOST = "127.0.0.1"


def _port(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None, url
    return port


async def _wait_exit(proc: subprocess.Popen[bytes], timeout_s: float) -> bool:
    """Whether the process ended within the time (polled: the harness loop must keep proxying)."""
    deadline = time.monotonic() + timeout_s
    while proc.poll() is None:
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


class Servers:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.secret = secrets.token_urlsafe(18)
        self.pg: Server | None = None
        self.valkey: Server | None = None
        self.weed: Server | None = None
        self.pg_proxy = TcpFaultProxy(HOST, 0)
        self.redis_proxy = TcpFaultProxy(HOST, 0)
        self.s3_proxy = HttpFaultProxy(f"http://{HOST}:1")
        self.valkey_runs = 0
        self.weed_paused = False
        self.log_paths: list[Path] = []

    # -- whole stack ---------------------------------------------------------------------------------

    async def start(self) -> Stack:
        await self.pg_proxy.start()
        await self.redis_proxy.start()
        await self.s3_proxy.start()
        await asyncio.gather(self.start_pg(), self.start_redis(), self.start_s3())
        return Stack(
            postgres_admin_url=f"postgresql://postgres@{HOST}:{self.pg_proxy.port}/postgres",
            redis_base_url=f"redis://{HOST}:{self.redis_proxy.port}",
            s3_endpoint_url=self.s3_proxy.url,
            s3_secret=self.secret,
            bucket=BUCKET,
            s3_key_id=S3_KEY_ID,
        )

    async def heal(self) -> list[str]:
        """Undo whatever a scenario left broken (it may have failed half-way); returns what was done."""
        done = []
        if self.weed_paused:
            self.resume_s3()
            done.append("SIGCONT to SeaweedFS")
        if self.s3_proxy.fail_writes:
            self.s3_proxy.fail_writes = False
            done.append("S3 writes failing: turned off")
        for proxy in (self.pg_proxy, self.redis_proxy):
            proxy.restore()
        for name, server, start in (
            ("postgres", self.pg, self.start_pg),
            ("valkey", self.valkey, self.start_redis),
            ("seaweedfs", self.weed, self.start_s3),
        ):
            if server is None or server.proc.poll() is not None:
                await start()
                done.append(f"{name} started again")
        return done

    async def stop(self) -> None:
        if self.weed_paused:
            self.resume_s3()
        for proxy in (self.s3_proxy, self.redis_proxy, self.pg_proxy):
            with contextlib.suppress(Exception):
                await proxy.close()
        for server in (self.weed, self.valkey, self.pg):
            if server is not None:
                await asyncio.to_thread(server.stop)

    def keep_logs(self, dest: Path) -> None:
        dest.mkdir(parents=True, exist_ok=True)
        for path in self.log_paths:
            with contextlib.suppress(OSError):
                shutil.copy(path, dest / f"{path.parent.name}-{path.name}")

    def pids(self) -> dict[str, int]:
        return {s.name: s.proc.pid for s in (self.pg, self.valkey, self.weed) if s is not None}

    async def _launch(self, start: Callable[[], Server], attempts_s: float = 60.0) -> Server:
        """Start in a thread (the launchers block) and retry while a killed predecessor still holds on."""
        deadline = time.monotonic() + attempts_s
        while True:
            try:
                server = await asyncio.to_thread(start)
            except EmbeddedError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(1.0)
                continue
            if server.log_path not in self.log_paths:
                self.log_paths.append(server.log_path)
            return server

    # -- PostgreSQL ----------------------------------------------------------------------------------

    async def start_pg(self) -> None:
        self.pg = await self._launch(
            lambda: embedded.start_postgres(self.data_dir / "postgres", durable=True, database="chaos")
        )
        self.pg_proxy.retarget(HOST, _port(self.pg.url))

    async def pg_fast_restart(self) -> str:
        """SIGINT (fast shutdown: clients disconnected, transactions rolled back), then start again."""
        assert self.pg is not None
        self.pg.proc.send_signal(signal.SIGINT)
        if not await _wait_exit(self.pg.proc, 60):
            self.pg.proc.kill()
            await _wait_exit(self.pg.proc, 10)
        await self.start_pg()
        return f"PostgreSQL fast shutdown (SIGINT) and start on the same data dir, pid {self.pg.proc.pid}"

    async def pg_kill(self) -> str:
        """SIGKILL of the postmaster (its backends notice and exit), then start again: crash recovery."""
        assert self.pg is not None
        old = self.pg.proc.pid
        self.pg.proc.kill()
        await _wait_exit(self.pg.proc, 10)
        await self.start_pg()
        return (
            f"SIGKILL of the postmaster {old}, then start on the same data dir (crash recovery), pid {self.pg.proc.pid}"
        )

    # -- Valkey --------------------------------------------------------------------------------------

    async def start_redis(self) -> None:
        # A new directory each time: nothing of the previous server's data can come back.
        self.valkey_runs += 1
        directory = self.data_dir / f"valkey-{self.valkey_runs}"
        self.valkey = await self._launch(lambda: embedded.start_valkey(directory, durable=False))
        self.redis_proxy.retarget(HOST, _port(self.valkey.url))

    async def kill_redis(self) -> str:
        assert self.valkey is not None
        self.valkey.proc.kill()
        await _wait_exit(self.valkey.proc, 10)
        return f"SIGKILL of Valkey {self.valkey.proc.pid} (non-durable: every queued job is lost)"

    # -- SeaweedFS -----------------------------------------------------------------------------------

    async def start_s3(self) -> None:
        self.weed = await self._launch(
            lambda: embedded.start_seaweedfs(
                self.data_dir / "seaweedfs", bucket=BUCKET, access_key_id=S3_KEY_ID, secret_access_key=self.secret
            )
        )
        self.weed_paused = False
        self.s3_proxy.retarget(self.weed.url)

    def pause_s3(self) -> str:
        assert self.weed is not None
        os.kill(self.weed.proc.pid, signal.SIGSTOP)
        self.weed_paused = True
        return f"SIGSTOP to SeaweedFS {self.weed.proc.pid}"

    def resume_s3(self) -> str:
        assert self.weed is not None
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.weed.proc.pid, signal.SIGCONT)
        self.weed_paused = False
        return f"SIGCONT to SeaweedFS {self.weed.proc.pid}"

    async def kill_s3(self) -> str:
        assert self.weed is not None
        self.weed.proc.kill()
        await _wait_exit(self.weed.proc, 10)
        return f"SIGKILL of SeaweedFS {self.weed.proc.pid}"
