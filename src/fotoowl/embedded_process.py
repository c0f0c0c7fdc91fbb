"""Child processes of the embedded servers: free ports, spawning (as another user when root), waiting
for them to listen, stopping them in order. Every child dies with us (PR_SET_PDEATHSIG)."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("fotoowl.embedded")

_PR_SET_PDEATHSIG = 1


class EmbeddedError(RuntimeError):
    """An embedded server could not be started; the message includes the tail of its log."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_ports_with_offset(count: int, offset: int) -> list[int]:
    """`count` free loopback ports p with every p + offset free too, all 2 * count numbers distinct.

    SeaweedFS derives each gRPC port as port + 10000 and refuses a port that equals another's gRPC port.
    Each accepted pair stays bound until the whole set is chosen: closed early, the OS could hand the same
    port out again, or give a later probe a number already promised as someone's p + offset.
    """
    held: list[socket.socket] = []
    chosen: list[int] = []
    taken: set[int] = set()
    try:
        for _ in range(200 * count):
            probe = _bind_loopback(0)
            if probe is None:
                continue
            port = int(probe.getsockname()[1])
            grpc = port + offset
            # Held sockets already keep these apart; the set states the promise without relying on the OS.
            clash = grpc >= 65536 or port in taken or grpc in taken
            grpc_probe = None if clash else _bind_loopback(grpc)
            if grpc_probe is None:
                probe.close()
                continue
            held += (probe, grpc_probe)
            chosen.append(port)
            taken.update((port, grpc))
            if len(chosen) == count:
                return chosen
        raise EmbeddedError(f"no {count} free loopback ports with free port + {offset} found")
    finally:
        for sock in held:
            sock.close()


def _bind_loopback(port: int) -> socket.socket | None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError:
        sock.close()
        return None
    return sock


def _die_with_parent() -> None:
    # Runs in the child between fork and exec.
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _name(proc: subprocess.Popen[bytes]) -> str:
    args = proc.args
    return Path(str(args[0] if isinstance(args, list) else args)).name


def _wait_tcp(port: int, timeout_s: float, proc: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise EmbeddedError(f"{_name(proc)} exited with {proc.returncode}:\n{_tail(log_path)}")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise EmbeddedError(f"{_name(proc)} did not listen on port {port} in {timeout_s} s:\n{_tail(log_path)}")


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass
class Server:
    name: str
    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    stop_signal: signal.Signals = signal.SIGTERM
    extra: dict[str, str] = field(default_factory=dict)

    def stop(self, timeout_s: float = 20.0) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(self.stop_signal)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %s s; killing it", self.name, timeout_s)
                self.proc.kill()
                self.proc.wait()


def _spawn(
    args: list[str],
    log_path: Path,
    *,
    env: dict[str, str] | None = None,
    user: str | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log_file:
        return subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            **_as_user(user),
            # Own session: a Ctrl-C in the terminal reaches only us, and we stop the children in order.
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )


def _as_user(user: str | None) -> dict[str, Any]:
    # Without group and extra_groups the child keeps root's groups, and folders open to "other" stay shut.
    return {} if user is None else {"user": user, "group": user, "extra_groups": []}


@contextlib.contextmanager
def running(*starters: Callable[[], Server]) -> Iterator[list[Server]]:
    """Start servers in order and stop them in reverse order, also when the body fails."""
    servers: list[Server] = []
    try:
        for start in starters:
            servers.append(start())
        yield servers
    finally:
        for server in reversed(servers):
            server.stop()
