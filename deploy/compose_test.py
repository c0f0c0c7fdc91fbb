"""`make compose-test`: build the image and run docker-compose.yml for real, then take it down again.

1. Tools: podman (with runc, netavark and aardvark-dns), debootstrap and podman-compose are
   installed where missing and allowed (root with apt-get); Docker with `docker compose` is used
   instead where it runs and podman does not (or with --engine docker).
2. Stand-in images for the upstream ones, which no registry may be reachable for: a Debian bookworm
   base made with debootstrap from the Debian mirror, and on it Python 3.11 (PYTHON_IMAGE), Node
   (NODE_IMAGE), PostgreSQL, Redis and SeaweedFS (deploy/standins/). Built once, cached by tag and by
   a hash of their recipe (a label), rebuilt only when the recipe changes.
3. The fotoowl image, from the real Dockerfile, the stand-ins passed as build args.
4. The real docker-compose.yml, with deploy/compose-test.yml on top (a Drive emulator container of
   the same image and FOTOOWL_DRIVE_API_URL pointing at it), the image names and secrets from the
   environment, `--scale worker=2`. Services are started in the order their depends_on conditions
   demand (service_healthy, service_completed_successfully), each as soon as its conditions hold, and
   every healthcheck is waited for. Podman without systemd never runs healthchecks by itself, so
   here this script runs them (`podman healthcheck run`), once a second until healthy, then at the
   configured interval.
5. An import of the emulator's demo folder through the API; one worker container is killed (SIGKILL
   of its process, as a crash) and the api container restarted while the import runs.
6. Checks: every image of the folder landed exactly once (API rows and S3 objects), each reads back
   with the emulator's bytes (through the API and straight from S3), the counters add up, no open
   multipart upload, no stray object; the killed worker came back; every service stopped gracefully
   on SIGTERM.
7. Teardown (also on failure, Ctrl-C or SIGTERM): containers, volumes and network removed, checked.

Prints each service's time to healthy and the import's counts; exits non-zero on any failed check.
Run with the project's venv (PyYAML): `.venv/bin/python deploy/compose_test.py --help`.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
STANDINS = DEPLOY / "standins"
CACHE = ROOT / ".cache" / "compose-test"
LOGS = CACHE / "logs"
COMPOSE_FILES = (ROOT / "docker-compose.yml", DEPLOY / "compose-test.yml")
PROJECT = "fotoowl-compose-test"
FOTOOWL_TAG = "compose-test"
FOTOOWL_IMAGE = f"fotoowl:{FOTOOWL_TAG}"
STANDIN_REPO = "localhost/fotoowl-standin"
STANDIN_LABEL = "org.fotoowl.standin.recipe"
PODMAN_COMPOSE = "podman-compose==1.6.0"
PODMAN_PACKAGES = ("podman", "runc", "netavark", "aardvark-dns")
DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = os.environ.get("DEBIAN_MIRROR", "http://deb.debian.org/debian")
DEBIAN_SECURITY_MIRROR = os.environ.get("DEBIAN_SECURITY_MIRROR", "http://deb.debian.org/debian-security")
HOST_CA_DIR = Path("/usr/local/share/ca-certificates")
SCALE = {"worker": 2}
EMULATOR = "drive-emulator"


class Failed(Exception):
    """A step could not go on."""


class Interrupted(BaseException):
    """SIGINT, SIGTERM or SIGHUP: tear down and leave."""


# --- output -----------------------------------------------------------------------------------------

T0 = time.monotonic()


def log(message: str) -> None:
    print(f"[{time.monotonic() - T0:6.1f}s] {message}", flush=True)


@dataclass
class Report:
    checks: list[tuple[str, bool, str]] = field(default_factory=list)
    builds: dict[str, str] = field(default_factory=dict)
    health: list[tuple[str, str, str, str]] = field(default_factory=list)
    counts: dict[str, Any] = field(default_factory=dict)
    stops: list[tuple[str, float, int | None, float]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    stack_healthy_s: float | None = None

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        self.checks.append((name, ok, detail))
        log(f"{'ok  ' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}")
        return ok

    @property
    def failed(self) -> list[tuple[str, bool, str]]:
        return [c for c in self.checks if not c[1]]

    def print(self) -> None:
        print("\n==== compose-test summary " + "=" * 60)
        if self.builds:
            print("images:")
            for name, text in self.builds.items():
                print(f"  {name:<28} {text}")
        if self.health:
            print("services (started: after the first `compose up`; after: from the container's start to its first")
            print("passing healthcheck, or to its exit for one-shot jobs):")
            print(f"  {'container':<40} {'started':>9}  {'became':<24} {'after':>8}")
            for name, started, became, after in self.health:
                print(f"  {name:<40} {started:>9}  {became:<24} {after:>8}")
            if self.stack_healthy_s is not None:
                print(f"  every service healthy {self.stack_healthy_s:.1f} s after the first `compose up`")
        if self.counts:
            print("import:")
            for key, value in self.counts.items():
                print(f"  {key:<28} {value}")
        if self.stops:
            print("graceful stop (the stop signal until exit; the engine kills at the end of the grace period):")
            for name, seconds, code, grace in self.stops:
                print(f"  {name:<40} {seconds:5.1f} s of {grace:.0f} s  exit {code}")
        for note in self.notes:
            print(f"note: {note}")
        print(f"checks: {len(self.checks) - len(self.failed)} passed, {len(self.failed)} failed")
        for name, _, detail in self.failed:
            print(f"  FAILED {name}: {detail}")
        print(f"total: {time.monotonic() - T0:.0f} s")


# --- running things -----------------------------------------------------------------------------------


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()

    def cap(self, seconds: float) -> float:
        left = self.left()
        if left <= 0:
            raise Failed("the overall time limit (--timeout) ran out")
        return min(seconds, left)


def run(
    cmd: list[str],
    *,
    timeout: float,
    env: dict[str, str] | None = None,
    check: bool = True,
    input: str | None = None,
    cwd: Path = ROOT,
    log_to: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    try:
        if log_to is not None:
            log_to.parent.mkdir(parents=True, exist_ok=True)
            with log_to.open("w") as out:
                result = subprocess.run(
                    cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, text=True, timeout=timeout, check=False
                )
            result.stdout = log_to.read_text(errors="replace")
        else:
            result = subprocess.run(
                cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False, input=input
            )
    except subprocess.TimeoutExpired:
        raise Failed(f"timed out after {timeout:.0f} s: {' '.join(cmd)}") from None
    except FileNotFoundError:
        raise Failed(f"not found: {cmd[0]}") from None
    if check and result.returncode != 0:
        tail = "\n".join(((result.stdout or "") + (result.stderr or "")).strip().splitlines()[-25:])
        where = f" (log: {log_to})" if log_to else ""
        raise Failed(f"`{' '.join(cmd)}` exited with {result.returncode}{where}:\n{tail}")
    return result


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def parse_time(text: str) -> float | None:
    """An engine's RFC 3339 time (nanoseconds, Z or offset) as a Unix time."""
    match = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)?", text or "")
    if not match or match.group(1).startswith("0001"):
        return None
    fraction = (match.group(2) or ".0")[:7]
    zone = match.group(3) or "Z"
    return datetime.fromisoformat(match.group(1) + fraction + ("+00:00" if zone == "Z" else zone)).timestamp()


# --- the engine ---------------------------------------------------------------------------------------


def is_root() -> bool:
    return os.geteuid() == 0


def apt_install(packages: list[str]) -> None:
    missing = [
        p
        for p in packages
        if subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", p], capture_output=True, text=True, check=False
        ).stdout.strip()
        != "install ok installed"
    ]
    if not missing:
        return
    if not (is_root() and shutil.which("apt-get")):
        raise Failed(
            f"missing {', '.join(missing)}: install them (apt-get install {' '.join(missing)}), "
            "or run this as root on Debian/Ubuntu to have them installed"
        )
    log(f"installing {' '.join(missing)} (apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    command = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing]
    if run(command, timeout=600, env=env, check=False, log_to=LOGS / "apt-get.log").returncode != 0:
        run(["apt-get", "update", "-q"], timeout=300, env=env, log_to=LOGS / "apt-get-update.log")
        run(command, timeout=600, env=env, log_to=LOGS / "apt-get.log")


class Engine:
    def __init__(self, kind: str, compose: list[str], env: dict[str, str]) -> None:
        self.kind = kind
        self.compose_cmd = compose
        self.env = env
        # Podman without systemd schedules no healthcheck; this script runs them.
        self.drives_healthchecks = kind == "podman"

    def __call__(
        self, *args: str, timeout: float = 120, check: bool = True, input: str | None = None, log_to: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        return run([self.kind, *args], timeout=timeout, env=self.env, check=check, input=input, log_to=log_to)

    def compose(
        self, *args: str, env: dict[str, str], timeout: float = 300, check: bool = True, log_to: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        files = [arg for path in COMPOSE_FILES for arg in ("-f", str(path))]
        empty_env = CACHE / "empty.env"
        empty_env.write_text("")
        front = [*self.compose_cmd, "--env-file", str(empty_env), "-p", PROJECT, *files]
        if self.kind == "podman":
            # Plain containers on the project's network, as Docker Compose makes them (no pod).
            front[len(self.compose_cmd) : len(self.compose_cmd)] = ["--in-pod", "false"]
        return run([*front, *args], timeout=timeout, env={**self.env, **env}, check=check, log_to=log_to)

    def image_labels(self, ref: str) -> dict[str, str] | None:
        result = self("image", "inspect", ref, timeout=60, check=False)
        if result.returncode != 0:
            return None
        data = json.loads(result.stdout)[0]
        labels = (data.get("Config") or {}).get("Labels") or data.get("Labels") or {}
        return dict(labels)

    def image_id(self, ref: str) -> str:
        return self("image", "inspect", "--format", "{{.Id}}", ref, timeout=60).stdout.strip()

    def containers(self) -> list[dict[str, Any]]:
        ids = self("ps", "-aq", "--filter", f"label=com.docker.compose.project={PROJECT}", timeout=60).stdout.split()
        if not ids:
            return []
        result = self("inspect", *ids, timeout=60, check=False)
        # A container removed between the two calls: inspect what is left.
        if result.returncode != 0:
            result = self(
                "inspect",
                *[i for i in ids if self("inspect", i, timeout=30, check=False).returncode == 0],
                timeout=60,
                check=False,
            )
        try:
            return list(json.loads(result.stdout or "[]"))
        except json.JSONDecodeError:
            return []


def podman_works(env: dict[str, str], image: str) -> tuple[bool, str]:
    result = run(["podman", "run", "--rm", "--network", "none", image, "true"], timeout=120, env=env, check=False)
    lines = ((result.stderr or "") + (result.stdout or "")).strip().splitlines()
    return result.returncode == 0, lines[-1] if lines else ""


def podman_conf(report: Report) -> Path:
    """Podman settings for machines like this one (see README): runc instead of crun, no default
    ulimits (raising rlimits is forbidden), cgroupfs and file events without systemd."""
    lines = ["[containers]", "default_ulimits = []", "", "[engine]"]
    if shutil.which("runc"):
        lines.append('runtime = "runc"')
    if not Path("/run/systemd/system").is_dir():
        lines += ['cgroup_manager = "cgroupfs"', 'events_logger = "file"']
    if shutil.which("netavark") or Path("/usr/lib/podman/netavark").exists():
        lines += ["", "[network]", 'network_backend = "netavark"']
    path = CACHE / "containers.conf"
    path.write_text("\n".join(lines) + "\n")
    return path


def setup_engine(choice: str, report: Report) -> Engine:
    docker_ok = bool(shutil.which("docker")) and run(["docker", "info"], timeout=30, check=False).returncode == 0
    if choice == "docker" or (choice == "auto" and not shutil.which("podman") and docker_ok):
        if not docker_ok:
            raise Failed("--engine docker: `docker info` fails (no engine running?)")
        if run(["docker", "compose", "version"], timeout=30, check=False).returncode != 0:
            raise Failed("Docker Compose v2 (`docker compose`) is needed with the Docker engine")
        log("engine: Docker, `docker compose`")
        return Engine("docker", ["docker", "compose"], dict(os.environ))
    debian = bool(shutil.which("apt-get") and shutil.which("dpkg-query"))
    if debian and (not shutil.which("podman") or is_root()):
        # Without podman this fails unless it can install; with it, what is missing is added if allowed.
        apt_install(list(PODMAN_PACKAGES))
    if not shutil.which("podman"):
        raise Failed("podman is not installed (and could not be): install podman, or Docker with `docker compose`")
    env = dict(os.environ)
    version = run(["podman", "--version"], timeout=30, env=env).stdout.split()[-1]
    compose = podman_compose()
    compose_version = run([*compose, "--version"], timeout=60, env=env, check=False).stdout.split("\n")[0]
    log(f"engine: podman {version}; {compose_version}")
    return Engine("podman", compose, env)


def podman_compose() -> list[str]:
    """podman-compose, pinned, in a venv of its own under .cache (the one on PATH if pip cannot)."""
    venv = CACHE / "podman-compose"
    binary = venv / "bin" / "podman-compose"
    stamp = venv / f".{PODMAN_COMPOSE}"
    if not stamp.exists():
        log(f"installing {PODMAN_COMPOSE} into {venv.relative_to(ROOT)}")
        try:
            run([sys.executable, "-m", "venv", "--clear", str(venv)], timeout=120)
            run(
                [str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", PODMAN_COMPOSE],
                timeout=300,
                log_to=LOGS / "pip-podman-compose.log",
            )
            stamp.touch()
        except Failed as exc:
            if shutil.which("podman-compose"):
                log(f"pip could not install podman-compose ({exc}); using the one on PATH")
                return ["podman-compose"]
            raise
    return [str(binary)]


# --- stand-in images ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Standin:
    name: str
    tag: str
    needs: tuple[str, ...] = ()

    @property
    def ref(self) -> str:
        return f"{STANDIN_REPO}/{self.name}:{self.tag}"


BASE = Standin("debian", DEBIAN_SUITE)
STANDIN_IMAGES = (
    Standin("python", "3.11", ("debian",)),
    Standin("node", "18", ("debian",)),
    Standin("postgres", "15", ("debian",)),
    Standin("redis", "7", ("debian",)),
    Standin("seaweedfs", "4.48", ("debian", "python")),
)
# Which stand-in takes the place of which upstream image, and through which variable.
BUILD_ARGS = {"PYTHON_IMAGE": "python", "NODE_IMAGE": "node"}
COMPOSE_IMAGES = {"POSTGRES_IMAGE": "postgres", "REDIS_IMAGE": "redis", "SEAWEEDFS_IMAGE": "seaweedfs"}


def host_ca_files() -> list[Path]:
    """CAs this machine trusts beyond the system's (a TLS-inspecting proxy's, say): the stand-ins
    trust them too, so pip and npm inside image builds reach PyPI and npm as the host does."""
    return sorted(p for p in HOST_CA_DIR.rglob("*.crt") if p.is_file()) if HOST_CA_DIR.is_dir() else []


def base_recipe() -> str:
    # "v1": the recipe is build_base below; a change to it bumps this.
    parts = [DEBIAN_SUITE, DEBIAN_MIRROR, DEBIAN_SECURITY_MIRROR, "minbase+ca-certificates", "v1"]
    parts += [hashlib.sha256(p.read_bytes()).hexdigest() for p in host_ca_files()]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def build_base(engine: Engine, rebuild: bool, report: Report) -> None:
    recipe = base_recipe()
    labels = engine.image_labels(BASE.ref)
    if labels is not None and labels.get(STANDIN_LABEL) == recipe and not rebuild:
        report.builds[BASE.ref] = "cached"
        return
    if not is_root():
        raise Failed(f"{BASE.ref} is missing and debootstrap needs root: run this once as root")
    if not shutil.which("debootstrap"):
        apt_install(["debootstrap"])
    started = time.monotonic()
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rootfs-", dir=CACHE) as tmp:
        rootfs = Path(tmp) / "rootfs"
        log(f"debootstrap {DEBIAN_SUITE} from {DEBIAN_MIRROR} (about 30 s)")
        run(
            ["debootstrap", "--variant=minbase", "--include=ca-certificates", DEBIAN_SUITE, str(rootfs), DEBIAN_MIRROR],
            timeout=900,
            log_to=LOGS / "debootstrap.log",
        )
        (rootfs / "etc/apt/sources.list").write_text(
            f"deb {DEBIAN_MIRROR} {DEBIAN_SUITE} main\n"
            f"deb {DEBIAN_MIRROR} {DEBIAN_SUITE}-updates main\n"
            f"deb {DEBIAN_SECURITY_MIRROR} {DEBIAN_SUITE}-security main\n"
        )
        (rootfs / "etc/apt/apt.conf.d/90fotoowl-standin").write_text(
            'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\nAcquire::Retries "3";\n'
        )
        cas = host_ca_files()
        if cas:
            target = rootfs / "usr/local/share/ca-certificates"
            for ca in cas:
                shutil.copy2(ca, target / ca.name)
            run(["chroot", str(rootfs), "update-ca-certificates"], timeout=120)
            report.notes.append(f"the stand-in base trusts this machine's extra CAs ({', '.join(c.name for c in cas)})")
        for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for path in (rootfs / leftover).glob("*"):
                if path.is_file():
                    path.unlink()
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE)
        try:
            imported = subprocess.run(
                [
                    engine.kind,
                    "import",
                    "--change",
                    "ENV LANG=C.UTF-8",
                    "--change",
                    'CMD ["/bin/bash"]',
                    "--change",
                    f"LABEL {STANDIN_LABEL}={recipe}",
                    "-",
                    BASE.ref,
                ],
                stdin=tar.stdout,
                env=engine.env,
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
        finally:
            assert tar.stdout is not None
            tar.stdout.close()
            tar.wait(timeout=60)
        if imported.returncode != 0:
            raise Failed(f"{engine.kind} import failed: {imported.stderr.strip()[-2000:]}")
    report.builds[BASE.ref] = f"built in {time.monotonic() - started:.0f} s (debootstrap + import)"


def standin_recipe(engine: Engine, standin: Standin) -> str:
    digest = hashlib.sha256()
    for path in sorted(STANDINS.glob(f"{standin.name}*")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    for need in standin.needs:
        digest.update(engine.image_id(f"{STANDIN_REPO}/{need}:{standin_by_name(need).tag}").encode())
    return digest.hexdigest()[:16]


def standin_by_name(name: str) -> Standin:
    return BASE if name == BASE.name else next(s for s in STANDIN_IMAGES if s.name == name)


def build_standin(engine: Engine, standin: Standin, rebuild: bool, timeout: float) -> str:
    recipe = standin_recipe(engine, standin)
    labels = engine.image_labels(standin.ref)
    if labels is not None and labels.get(STANDIN_LABEL) == recipe and not rebuild:
        return "cached"
    started = time.monotonic()
    args = [
        "build",
        "-f",
        str(STANDINS / f"{standin.name}.Containerfile"),
        "-t",
        standin.ref,
        "--label",
        f"{STANDIN_LABEL}={recipe}",
        "--build-arg",
        f"BASE={BASE.ref}",
        "--build-arg",
        f"PYTHON_BASE={standin_by_name('python').ref}",
    ]
    if engine.kind == "podman":
        args += ["--format", "docker"]
    previous = engine("image", "inspect", "--format", "{{.Id}}", standin.ref, timeout=60, check=False).stdout.strip()
    engine(*args, str(STANDINS), timeout=timeout, log_to=LOGS / f"build-{standin.name}.log")
    if previous and previous != engine.image_id(standin.ref):
        engine("rmi", previous, timeout=120, check=False)  # the outdated one, untagged now
    return f"built in {time.monotonic() - started:.0f} s"


def build_standins(engine: Engine, rebuild: bool, deadline: Deadline, report: Report) -> None:
    done: set[str] = {BASE.name}
    left = list(STANDIN_IMAGES)
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        while left:
            ready = [s for s in left if set(s.needs) <= done]
            futures = {pool.submit(build_standin, engine, s, rebuild, deadline.cap(900)): s for s in ready}
            log(f"stand-ins: {', '.join(s.ref for s in ready)}")
            for future in concurrent.futures.as_completed(futures):
                standin = futures[future]
                report.builds[standin.ref] = future.result()
                done.add(standin.name)
            left = [s for s in left if s.name not in done]


def build_fotoowl(engine: Engine, deadline: Deadline, report: Report) -> None:
    args = ["build", "-f", str(ROOT / "Dockerfile"), "-t", FOTOOWL_IMAGE]
    for arg, name in BUILD_ARGS.items():
        args += ["--build-arg", f"{arg}={standin_by_name(name).ref}"]
    if engine.kind == "podman":
        # The OCI format has no HEALTHCHECK; Docker's keeps the Dockerfile's.
        args += ["--format", "docker"]
    started = time.monotonic()
    previous = engine("image", "inspect", "--format", "{{.Id}}", FOTOOWL_IMAGE, timeout=60, check=False).stdout.strip()
    log(f"building {FOTOOWL_IMAGE} from the Dockerfile (PYTHON_IMAGE and NODE_IMAGE: the stand-ins)")
    engine(*args, str(ROOT), timeout=deadline.cap(900), log_to=LOGS / "build-fotoowl.log")
    if previous and previous != engine.image_id(FOTOOWL_IMAGE):
        # The last run's image, untagged now: not kept around run after run.
        engine("rmi", previous, timeout=120, check=False)
    report.builds[FOTOOWL_IMAGE] = f"built in {time.monotonic() - started:.0f} s (Dockerfile)"


# --- the stack ----------------------------------------------------------------------------------------


def service_of(container: dict[str, Any]) -> str:
    return str((container.get("Config") or {}).get("Labels", {}).get("com.docker.compose.service", "?"))


def name_of(container: dict[str, Any]) -> str:
    return str(container.get("Name", "?")).lstrip("/")


def health_of(container: dict[str, Any]) -> str | None:
    state = container.get("State") or {}
    health = state.get("Health") or state.get("Healthcheck")
    if not has_healthcheck(container):
        return None
    return str((health or {}).get("Status") or "starting")


def has_healthcheck(container: dict[str, Any]) -> bool:
    test = ((container.get("Config") or {}).get("Healthcheck") or {}).get("Test") or []
    return bool(test) and test[0] != "NONE"


def interval_of(container: dict[str, Any]) -> float:
    ns = ((container.get("Config") or {}).get("Healthcheck") or {}).get("Interval") or 30_000_000_000
    return float(ns) / 1e9


class HealthDriver(threading.Thread):
    """What the engine's scheduler would do: run each running container's healthcheck, every second
    until it passes after a (re)start, then at the container's own interval."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(name="healthchecks", daemon=True)
        self.engine = engine
        self.stop_event = threading.Event()
        self.containers: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.passed: dict[tuple[str, str], float] = {}  # (id, StartedAt) -> first pass
        self.last_run: dict[str, float] = {}
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=8)
        self.in_flight: dict[str, concurrent.futures.Future[None]] = {}
        self.log_lock = threading.Lock()
        (LOGS / "healthchecks.log").write_text("")

    def update(self, containers: list[dict[str, Any]]) -> None:
        with self.lock:
            self.containers = containers

    def run(self) -> None:
        while not self.stop_event.wait(1.0):
            # Its own look every second: a container restarted since is due for a check at once.
            with contextlib.suppress(Failed, KeyError, ValueError):
                self.update(self.engine.containers())
            with self.lock:
                containers = list(self.containers)
            now = time.monotonic()
            for c in containers:
                cid = c["Id"]
                if not has_healthcheck(c) or not (c.get("State") or {}).get("Running"):
                    continue
                if cid in self.in_flight and not self.in_flight[cid].done():
                    continue
                key = (cid, (c.get("State") or {}).get("StartedAt", ""))
                every = interval_of(c) if key in self.passed else 1.0
                if now - self.last_run.get(cid, 0.0) < every:
                    continue
                self.last_run[cid] = now
                self.in_flight[cid] = self.pool.submit(self.check, key)

    def check(self, key: tuple[str, str]) -> None:
        if self.stop_event.is_set():
            return
        started = time.time()
        result = run([self.engine.kind, "healthcheck", "run", key[0]], timeout=30, env=self.engine.env, check=False)
        if result.returncode == 0 and key not in self.passed:
            self.passed[key] = time.time()
        output = " ".join(((result.stdout or "") + (result.stderr or "")).split())[:300]
        with self.log_lock, (LOGS / "healthchecks.log").open("a") as out:
            out.write(
                f"{datetime.fromtimestamp(started).isoformat(timespec='milliseconds')} {key[0][:12]} "
                f"started {key[1][:23]} took {time.time() - started:.2f}s rc={result.returncode} {output}\n"
            )

    def close(self) -> None:
        self.stop_event.set()
        self.pool.shutdown(wait=True, cancel_futures=True)


class Stack:
    def __init__(self, engine: Engine, env: dict[str, str], report: Report, deadline: Deadline) -> None:
        self.engine = engine
        self.env = env
        self.report = report
        self.deadline = deadline
        self.config: dict[str, Any] = {}
        self.driver = HealthDriver(engine) if engine.drives_healthchecks else None
        self.first_healthy: dict[tuple[str, str], float] = {}
        self.started_up: set[str] = set()
        self._current: list[dict[str, Any]] = []
        self._inspected_at = 0.0
        self.started_at = time.time()
        self.volumes_before: set[str] | None = None

    # -- state
    def containers(self, service: str | None = None) -> list[dict[str, Any]]:
        """The project's containers (of one service), inspected at most twice a second."""
        if time.monotonic() - self._inspected_at > 0.5:
            self._current = self._inspect()
            self._inspected_at = time.monotonic()
        return [c for c in self._current if service is None or service_of(c) == service]

    def _inspect(self) -> list[dict[str, Any]]:
        found = self.engine.containers()
        if self.driver is not None:
            self.driver.update(found)
        now = time.time()
        for c in found:
            key = (c["Id"], (c.get("State") or {}).get("StartedAt", ""))
            if key not in self.first_healthy:
                passed = self.driver.passed.get(key) if self.driver else None
                if passed is not None or (self.driver is None and health_of(c) == "healthy"):
                    self.first_healthy[key] = passed or now
        found.sort(key=name_of)
        return found

    def healthy(self, c: dict[str, Any]) -> bool:
        key = (c["Id"], (c.get("State") or {}).get("StartedAt", ""))
        return (c.get("State") or {}).get("Running", False) and key in self.first_healthy

    def load_config(self) -> None:
        text = self.engine.compose("config", env=self.env, timeout=120).stdout
        self.config = yaml.safe_load(text[text.index("services:") :] if "services:" in text else text)

    def services(self) -> dict[str, dict[str, Any]]:
        services: dict[str, dict[str, Any]] = self.config["services"]
        return {name: s for name, s in services.items() if not s.get("profiles")}

    @staticmethod
    def depends(service: dict[str, Any]) -> dict[str, str]:
        raw = service.get("depends_on") or {}
        if isinstance(raw, list):
            return {name: "service_started" for name in raw}
        return {name: (cond or {}).get("condition", "service_started") for name, cond in raw.items()}

    def condition_state(self, dep: str, condition: str) -> str:
        """'met', 'waiting' or a reason it never will be."""
        found = self.containers(dep)
        if not found:
            return "waiting"
        for c in found:
            state = c.get("State") or {}
            if condition == "service_completed_successfully":
                if state.get("Running") or state.get("Status") in ("created", "configured", "initialized"):
                    return "waiting"
                if state.get("ExitCode") != 0:
                    return f"{name_of(c)} exited with {state.get('ExitCode')}"
            elif condition == "service_healthy":
                if not state.get("Running"):
                    return f"{name_of(c)} is {state.get('Status')} (exit {state.get('ExitCode')})"
                if health_of(c) == "unhealthy":
                    return f"{name_of(c)} is unhealthy"
                if not self.healthy(c):
                    return "waiting"
            elif not state.get("Running"):
                return "waiting"
        return "met"

    # -- up
    def up(self) -> float:
        """Every service, each started once the conditions of its depends_on hold; returns the start time."""
        if self.driver is not None:
            self.driver.start()
        self.volumes_before = set(self.engine("volume", "ls", "-q", timeout=60).stdout.split())
        services = self.services()
        pending = dict(services)
        stack_started = self.started_at = time.time()
        log(f"compose up, in depends_on order: {', '.join(services)} (worker x{SCALE['worker']})")
        while pending:
            ready = []
            for name, service in sorted(pending.items()):
                states = {dep: self.condition_state(dep, cond) for dep, cond in self.depends(service).items()}
                broken = {dep: s for dep, s in states.items() if s not in ("met", "waiting")}
                if broken:
                    raise Failed(f"{name} cannot start: {broken}")
                if all(s == "met" for s in states.values()):
                    ready.append(name)
            for name in ready:
                scale = [f"--scale={name}={SCALE[name]}"] if name in SCALE else []
                log(f"  up {name}" + (f" x{SCALE[name]}" if name in SCALE else ""))
                self.engine.compose(
                    "up",
                    "-d",
                    "--no-build",
                    "--no-deps",
                    *scale,
                    name,
                    env=self.env,
                    timeout=self.deadline.cap(180),
                    log_to=LOGS / f"up-{name}.log",
                )
                self.started_up.add(name)
                del pending[name]
            if pending:
                if self.deadline.left() < 0:
                    raise Failed(f"still waiting to start {', '.join(pending)}")
                time.sleep(1.0)
        self.wait_all_healthy(stack_started, timeout=240)
        self.report.stack_healthy_s = time.time() - stack_started
        return stack_started

    def wait_all_healthy(self, since: float, timeout: float) -> None:
        services = self.services()
        until = time.monotonic() + self.deadline.cap(timeout)
        while True:
            waiting, broken = [], []
            for name in services:
                for c in self.containers(name):
                    state = c.get("State") or {}
                    if not has_healthcheck(c):
                        if not state.get("Running") and state.get("ExitCode") not in (0, None):
                            broken.append(f"{name_of(c)} exited with {state.get('ExitCode')}")
                        continue
                    if not state.get("Running"):
                        broken.append(f"{name_of(c)} is {state.get('Status')}")
                    elif not self.healthy(c):
                        waiting.append(name_of(c))
            if broken:
                raise Failed("; ".join(broken))
            if not waiting:
                return
            if time.monotonic() > until:
                raise Failed(f"not healthy after {timeout:.0f} s: {', '.join(waiting)}")
            time.sleep(1.0)

    def record_health(self, since: float) -> None:
        for c in self.containers():
            state = c.get("State") or {}
            started = parse_time(state.get("StartedAt", ""))
            at = f"+{started - since:.1f} s" if started else "?"
            key = (c["Id"], state.get("StartedAt", ""))
            if has_healthcheck(c):
                passed = self.first_healthy.get(key)
                after = f"{passed - started:.1f} s" if passed and started else "never"
                self.report.health.append((name_of(c), at, "healthy", after))
            else:
                finished = parse_time(state.get("FinishedAt", ""))
                if state.get("Running"):
                    self.report.health.append((name_of(c), at, "running (no healthcheck)", "-"))
                else:
                    after = f"{finished - started:.1f} s" if finished and started else "?"
                    self.report.health.append((name_of(c), at, f"exited {state.get('ExitCode')} (one-shot)", after))

    # -- down
    def stop_gracefully(self) -> None:
        """Stop every container with SIGTERM (the engine kills after the grace period) and time it."""
        grace = {name: s.get("stop_grace_period", "10s") for name, s in self.services().items()}
        running = [c for c in self.containers() if (c.get("State") or {}).get("Running")]

        def stop(c: dict[str, Any]) -> tuple[str, float, int | None, float]:
            seconds = _seconds(grace.get(service_of(c), "10s"))
            started = time.monotonic()
            self.engine("stop", "-t", str(int(seconds)), c["Id"], timeout=seconds + 60, check=False)
            took = time.monotonic() - started
            after = self.engine("inspect", "--format", "{{.State.ExitCode}}", c["Id"], timeout=30, check=False)
            code = int(after.stdout.strip()) if after.stdout.strip().lstrip("-").isdigit() else None
            return name_of(c), took, code, seconds

        # Dependents first, as compose does: the app, then what it uses.
        order = ["api", "worker", EMULATOR, "postgres", "redis", "s3"]
        ranked = sorted(running, key=lambda c: order.index(service_of(c)) if service_of(c) in order else 0)
        with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
            for group in (
                [c for c in ranked if service_of(c) in ("api", "worker", EMULATOR)],
                [c for c in ranked if service_of(c) not in ("api", "worker", EMULATOR)],
            ):
                self.report.stops += list(pool.map(stop, group))

    def down(self) -> list[str]:
        """Remove everything of the project; returns what is left (nothing, when all went well)."""
        if self.driver is not None and self.driver.is_alive():
            self.driver.close()
        self.engine.compose("down", "-v", "-t", "5", env=self.env, timeout=240, check=False, log_to=LOGS / "down.log")
        # Whatever compose left (podman-compose keeps named volumes, for one).
        ids = self.engine(
            "ps", "-aq", "--filter", f"label=com.docker.compose.project={PROJECT}", timeout=60, check=False
        ).stdout.split()
        if ids:
            self.engine("rm", "-f", "-v", *ids, timeout=120, check=False)
        volumes = self.engine(
            "volume", "ls", "-q", "--filter", f"label=com.docker.compose.project={PROJECT}", timeout=60, check=False
        ).stdout.split()
        if volumes:
            self.engine("volume", "rm", "-f", *volumes, timeout=120, check=False)
        networks = [
            n
            for n in self.engine("network", "ls", "--format", "{{.Name}}", timeout=60, check=False).stdout.split()
            if n.startswith(PROJECT)
        ]
        if networks:
            self.engine("network", "rm", "-f", *networks, timeout=120, check=False)
        left = self.engine(
            "ps", "-aq", "--filter", f"label=com.docker.compose.project={PROJECT}", timeout=60, check=False
        ).stdout.split()
        left += self.engine(
            "volume", "ls", "-q", "--filter", f"label=com.docker.compose.project={PROJECT}", timeout=60, check=False
        ).stdout.split()
        if self.volumes_before is not None:
            # Anonymous volumes (an image's VOLUME not mounted by compose) carry no project label.
            now = set(self.engine("volume", "ls", "-q", timeout=60, check=False).stdout.split())
            left += sorted(now - self.volumes_before - set(left))
        left += [
            n
            for n in self.engine("network", "ls", "--format", "{{.Name}}", timeout=60, check=False).stdout.split()
            if n.startswith(PROJECT)
        ]
        return left


def _seconds(text: Any) -> float:
    match = re.fullmatch(r"(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?", str(text).strip())
    if not match or not any(match.groups()):
        return float(text) if str(text).replace(".", "", 1).isdigit() else 10.0
    return int(match.group(1) or 0) * 60 + float(match.group(2) or 0)


# --- the import ---------------------------------------------------------------------------------------


class Api:
    def __init__(self, base: str, token: str) -> None:
        self.base = base
        self.token = token

    def request(self, method: str, path: str, body: Any = None, timeout: float = 15) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.base + path,
            data=data,
            method=method,
            headers={
                "Authorization": f"Bearer {self.token}",
                "Content-Type": "application/json",
                "Accept": "application/json",
            },
        )
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            raw = answer.read()
        return json.loads(raw) if raw else None

    def content(self, path: str) -> tuple[int, str]:
        request = urllib.request.Request(self.base + path, headers={"Authorization": f"Bearer {self.token}"})
        digest, size = hashlib.md5(), 0
        with urllib.request.urlopen(request, timeout=60) as answer:
            while chunk := answer.read(1 << 20):
                digest.update(chunk)
                size += len(chunk)
        return size, digest.hexdigest()

    def up(self) -> bool:
        try:
            self.request("GET", "/healthz", timeout=3)
            return True
        except (OSError, ValueError):
            return False


FINAL = {"completed", "completed_with_errors", "failed", "cancelled"}


def host_kill(engine: Engine, container: dict[str, Any]) -> str:
    """A crash: SIGKILL to the container's main process from outside, so the engine sees it die on its
    own (and its restart policy applies), unlike `kill`/`stop`, which count as stopping it by hand."""
    pid = int((container.get("State") or {}).get("Pid") or 0)
    if pid > 0:
        try:
            os.kill(pid, signal.SIGKILL)
            return f"SIGKILL to its process {pid}"
        except (PermissionError, ProcessLookupError):
            pass
    engine("kill", "--signal", "KILL", container["Id"], timeout=60)
    return "`kill --signal KILL` (the engine may treat it as stopped by hand)"


def run_import(
    stack: Stack, api: Api, n_images: int, deadline: Deadline, report: Report, faults: bool
) -> tuple[int, dict[str, Any]]:
    emulator = stack.containers(EMULATOR)[0]
    logs = stack.engine("logs", emulator["Id"], timeout=60)
    text = logs.stdout + logs.stderr
    link = re.search(r"Folder link:\s+(\S+)", text)
    served = re.search(r"serving (\d+) images", text)
    if not link:
        raise Failed(f"no folder link in the emulator's output:\n{text[-1500:]}")
    log(f"emulator serves {served.group(1) if served else '?'} images; folder {link.group(1)}")
    started = time.monotonic()
    accepted = api.request("POST", "/import/google-drive", {"folder_url": link.group(1), "recursive": True})
    import_id = int(accepted["import_id"])
    log(f"import {import_id} accepted ({accepted.get('status')})")
    killed = restarted = False
    worker_kill: dict[str, Any] = {}
    last: dict[str, Any] = {}
    last_print = 0.0
    until = time.monotonic() + deadline.cap(420)
    while True:
        try:
            last = api.request("GET", f"/imports/{import_id}")
        except (OSError, ValueError) as exc:
            if not restarted:
                raise Failed(f"GET /imports/{import_id} failed: {exc}") from exc
        counts = last.get("counts", {})
        done = counts.get("imported", 0) + counts.get("skipped", 0) + counts.get("failed", 0)
        found = counts.get("found", 0)
        if time.monotonic() - last_print > 5:
            log(
                f"  import {import_id}: {last.get('status')} {done}/{found} "
                f"(imported {counts.get('imported')}, skipped {counts.get('skipped')}, failed {counts.get('failed')})"
            )
            last_print = time.monotonic()
        if last.get("status") in FINAL:
            break
        # Once files are moving (listing runs alongside the first copies): a worker killed then
        # holds files in flight, and waiting out its death (about 20 s) keeps the import going
        # while the api restarts.
        active = last.get("status") in ("listing", "running")
        if faults and not killed and active and counts.get("imported", 0) >= max(1, n_images // 20):
            workers = [c for c in stack.containers("worker") if (c.get("State") or {}).get("Running")]
            victim = workers[-1]
            how = host_kill(stack.engine, victim)
            killed = True
            worker_kill = {
                "name": name_of(victim),
                "id": victim["Id"],
                "at": time.time(),
                "old_started": (victim.get("State") or {}).get("StartedAt", ""),
                "imported_then": counts.get("imported", 0),
            }
            log(f"  killed worker {name_of(victim)} mid-import ({how}) at {counts.get('imported')} imported")
        if faults and killed and not restarted and active:
            (api_container,) = stack.containers("api")
            log(f"  restarting {name_of(api_container)} mid-import")
            t = time.monotonic()
            stack.engine("restart", "-t", "10", api_container["Id"], timeout=90)
            stop_start_s = time.monotonic() - t
            while not api.up():
                if time.monotonic() - t > 60:
                    raise Failed("the api did not answer within 60 s of its restart")
                time.sleep(0.2)
            restarted = True
            report.check(
                "api restart mid-import",
                True,
                f"stopped and started in {stop_start_s:.1f} s, answering {time.monotonic() - t:.1f} s after",
            )
        if time.monotonic() > until:
            raise Failed(f"import {import_id} not finished after {time.monotonic() - started:.0f} s: {last}")
        time.sleep(0.5)
    took = time.monotonic() - started
    counts = last["counts"]
    report.counts.update(
        {
            "import id": import_id,
            "status": last["status"],
            "found": counts["found"],
            "imported": counts["imported"],
            "skipped": counts["skipped"],
            "failed": counts["failed"],
            "pending": counts.get("pending"),
            "bytes imported": last.get("bytes", {}).get("imported"),
            "took": f"{took:.1f} s",
        }
    )
    if faults:
        report.check("a worker was killed mid-import", killed, str(worker_kill.get("name", "the import ended first")))
        report.check("the api was restarted mid-import", restarted, "" if restarted else "the import ended first")
        if killed:
            check_worker_came_back(stack, worker_kill, report)
    return import_id, last


def check_worker_came_back(stack: Stack, kill: dict[str, Any], report: Report) -> None:
    """restart: unless-stopped: a crashed worker is started again, and becomes healthy."""
    until = time.monotonic() + stack.deadline.cap(90)
    while time.monotonic() < until:
        for c in stack.containers("worker"):
            if c["Id"] != kill["id"]:
                continue
            state = c.get("State") or {}
            if state.get("StartedAt") != kill["old_started"] and stack.healthy(c):
                started = parse_time(state.get("StartedAt", "")) or kill["at"]
                key = (c["Id"], state.get("StartedAt", ""))
                healthy_at = stack.first_healthy.get(key, time.time())
                report.check(
                    "the killed worker was restarted (restart: unless-stopped) and is healthy",
                    True,
                    f"restarted {started - kill['at']:.1f} s after the kill, "
                    f"healthy {healthy_at - started:.1f} s later",
                )
                return
        time.sleep(1.0)
    (c,) = [c for c in stack.containers("worker") if c["Id"] == kill["id"]] or [{}]
    state = c.get("State") or {}
    report.check(
        "the killed worker was restarted (restart: unless-stopped) and is healthy",
        False,
        f"state {state.get('Status')}, exit {state.get('ExitCode')}, "
        f"restarts {c.get('RestartCount')}, started {state.get('StartedAt')}",
    )


def verify(
    stack: Stack, api: Api, import_id: int, final: dict[str, Any], n_images: int, seed: int, report: Report
) -> None:
    (api_container,) = stack.containers("api")
    check_script = (DEPLOY / "compose_check.py").read_text()
    result = stack.engine(
        "exec",
        "-i",
        api_container["Id"],
        "python",
        "-",
        str(n_images),
        str(seed),
        input=check_script,
        timeout=stack.deadline.cap(300),
    )
    found = json.loads(result.stdout.strip().splitlines()[-1])
    files: dict[str, dict[str, Any]] = found["manifest"]["files"]
    skipped_expected: dict[str, str] = found["manifest"]["skipped"]
    objects: dict[str, dict[str, Any]] = found["storage"]["objects"]
    bucket = found["storage"]["bucket"]

    images: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        page = api.request("GET", f"/images?import_id={import_id}&limit=100" + (f"&cursor={cursor}" if cursor else ""))
        images += page["images"]
        cursor = page.get("next_cursor")
        if not cursor:
            break
    ids = [str(i.get("google_drive_id") or i.get("source_id")) for i in images]
    counts = final["counts"]
    report.counts.update(
        {
            "files in the folder": len(files) + len(skipped_expected),
            "images in the folder": len(files),
            "non-images in the folder": len(skipped_expected),
            "image rows (API)": len(images),
        }
    )
    report.check("the import completed", final["status"] == "completed", final["status"])
    report.check(
        "every image of the folder imported",
        set(ids) == set(files),
        f"{len(set(ids) & set(files))}/{len(files)}; missing {sorted(set(files) - set(ids))[:5]}, "
        f"unexpected {sorted(set(ids) - set(files))[:5]}",
    )
    report.check(
        "each exactly once (no duplicate rows)", len(ids) == len(set(ids)), f"{len(ids)} rows, {len(set(ids))} ids"
    )
    report.check(
        "the counters add up",
        counts["found"] == counts["imported"] + counts["skipped"] + counts["failed"]
        and counts.get("pending", 0) == 0
        and counts["imported"] == len(images)
        and counts["found"] == len(files) + len(skipped_expected)
        and counts["failed"] == 0,
        json.dumps(counts),
    )
    rows_ok = [
        i
        for i in images
        if files.get(str(i.get("google_drive_id") or i.get("source_id")), {}).get("md5") == i.get("md5")
        and files[str(i.get("google_drive_id") or i.get("source_id"))]["size"] == i.get("size")
    ]
    report.check(
        "size and MD5 of every row match the emulator's file",
        len(rows_ok) == len(images),
        f"{len(rows_ok)}/{len(images)}",
    )

    # The bucket: one object per row, holding the file's bytes; nothing else beside them.
    keys = {}
    for i in images:
        path = str(i.get("storage_path", ""))
        prefix = f"s3://{bucket}/"
        keys[path[len(prefix) :] if path.startswith(prefix) else path] = str(
            i.get("google_drive_id") or i.get("source_id")
        )
    folders = {key.rsplit("/", 1)[0] + "/" for key in keys}
    originals = {key for key in objects if key.rsplit("/", 1)[0] + "/" in folders}
    stray = sorted(originals - set(keys))
    missing = sorted(set(keys) - set(objects))
    bad = [
        key
        for key, file_id in keys.items()
        if key in objects
        and (objects[key]["size"], objects[key]["md5"]) != (files[file_id]["size"], files[file_id]["md5"])
    ]
    report.counts.update(
        {
            "objects in the bucket": len(objects),
            "originals": len(originals),
            "open multipart uploads": len(found["storage"]["open_uploads"]),
        }
    )
    report.check(
        "one S3 object per image, none missing, no stray",
        not missing and not stray and len(originals) == len(images),
        f"{len(originals)} objects for {len(images)} rows; missing {missing[:3]}, stray {stray[:3]}",
    )
    report.check(
        "every object reads back from S3 with the file's bytes", not bad, f"{len(keys) - len(bad)}/{len(keys)}"
    )
    report.check(
        "no open multipart upload", not found["storage"]["open_uploads"], str(found["storage"]["open_uploads"][:3])
    )

    # Through the API, as a user downloads them.
    def one(image: dict[str, Any]) -> bool:
        size, md5 = api.content(f"/images/{image['id']}/content")
        want = files.get(str(image.get("google_drive_id") or image.get("source_id")), {})
        return (size, md5) == (want.get("size"), want.get("md5"))

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        read_ok = sum(pool.map(one, images))
    report.counts["read back through the API"] = f"{read_ok}/{len(images)}"
    report.check(
        "every image reads back through the API with the file's bytes",
        read_ok == len(images),
        f"{read_ok}/{len(images)}",
    )


# --- main ---------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", choices=("auto", "podman", "docker"), default="auto")
    parser.add_argument(
        "--images",
        type=int,
        default=int(os.environ.get("COMPOSE_TEST_IMAGES", "400")),
        help="images in the emulator's demo folder (default 400)",
    )
    parser.add_argument(
        "--latency-ms",
        type=float,
        default=float(os.environ.get("COMPOSE_TEST_LATENCY_MS", "40")),
        help="the emulator's delay per request, so the faults land mid-import (default 40)",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-faults", action="store_true", help="no worker kill, no api restart")
    parser.add_argument("--rebuild-standins", action="store_true", help="rebuild the stand-in images")
    parser.add_argument(
        "--timeout",
        type=float,
        default=float(os.environ.get("COMPOSE_TEST_TIMEOUT", "840")),
        help="for the whole run, builds included (default 840 s)",
    )
    parser.add_argument("--keep", action="store_true", help="leave the stack running at the end (debugging)")
    args = parser.parse_args()

    def interrupted(signum: int, _frame: Any) -> None:
        raise Interrupted(signal.Signals(signum).name)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupted)

    CACHE.mkdir(parents=True, exist_ok=True)
    LOGS.mkdir(parents=True, exist_ok=True)
    report = Report()
    deadline = Deadline(args.timeout)
    stack: Stack | None = None
    try:
        engine = setup_engine(args.engine, report)
        build_base(engine, args.rebuild_standins, report)
        if engine.kind == "podman":
            ok, error = podman_works(engine.env, BASE.ref)
            if not ok:
                conf = podman_conf(report)
                engine.env["CONTAINERS_CONF"] = str(conf)
                ok2, error2 = podman_works(engine.env, BASE.ref)
                if not ok2:
                    raise Failed(f"podman cannot run a container: {error}; with {conf}: {error2}")
                report.notes.append(f"podman's defaults fail here ({error[:160]}); ran with CONTAINERS_CONF={conf}")
                log(f"podman needs {conf.relative_to(ROOT)} here: {error[:120]}")
        build_standins(engine, args.rebuild_standins, deadline, report)
        build_fotoowl(engine, deadline, report)

        demo_key = engine(
            "run",
            "--rm",
            "--network",
            "none",
            FOTOOWL_IMAGE,
            "python",
            "-c",
            "from fotoowl.testing.drive_emulator.serving import DEMO_API_KEY; print(DEMO_API_KEY)",
            timeout=120,
        ).stdout.strip()
        port = free_port()
        token = secrets.token_urlsafe(16)
        env = {
            **{var: standin_by_name(name).ref for var, name in COMPOSE_IMAGES.items()},
            "FOTOOWL_IMAGE_TAG": FOTOOWL_TAG,
            "FOTOOWL_PORT": f"127.0.0.1:{port}",
            "GOOGLE_API_KEY": demo_key,
            "FOTOOWL_API_TOKEN": token,
            # Not the local-only defaults: the variables must reach every service that uses them.
            "POSTGRES_PASSWORD": secrets.token_hex(8),
            "S3_ACCESS_KEY_ID": "ct" + secrets.token_hex(6),
            "S3_SECRET_ACCESS_KEY": secrets.token_hex(16),
            "COMPOSE_TEST_IMAGES": str(args.images),
            "COMPOSE_TEST_SEED": str(args.seed),
            "COMPOSE_TEST_LATENCY_MS": str(args.latency_ms),
        }
        stack = Stack(engine, env, report, deadline)
        leftovers = stack.down()  # a previous run's, if it was killed before its own teardown
        if leftovers:
            raise Failed(f"could not remove a previous run's {leftovers}")
        stack.load_config()
        since = stack.up()
        stack.record_health(since)
        report.check("every service healthy, every one-shot job done", True)
        api = Api(f"http://127.0.0.1:{port}", token)
        if not api.up():
            raise Failed(f"the api does not answer on 127.0.0.1:{port}")
        import_id, final = run_import(stack, api, args.images, deadline, report, faults=not args.no_faults)
        verify(stack, api, import_id, final, args.images, args.seed, report)
        if args.keep:
            log(
                f"--keep: the stack stays up (api on 127.0.0.1:{port}, token {token}); "
                f"remove it with: {' '.join(engine.compose_cmd)} -p {PROJECT} down -v"
            )
            return 0 if not report.failed else 1
        stack.stop_gracefully()
        slow = [
            f"{name} ({seconds:.0f} s, exit {code})"
            for name, seconds, code, grace in report.stops
            if code in (137, None) or seconds >= grace - 0.5
        ]
        report.check(
            "every container stopped gracefully (stop signal, within its grace period)",
            not slow,
            "killed after the grace period: " + ", ".join(slow)
            if slow
            else f"slowest {max((s for _, s, _, _ in report.stops), default=0):.1f} s",
        )
    except Failed as exc:
        report.check("run", False, str(exc))
    except Interrupted as exc:
        report.check("run", False, f"interrupted ({exc})")
    except Exception as exc:  # a bug here, or an answer not as expected: still tear down and report
        import traceback

        traceback.print_exc()
        report.check("run", False, f"{type(exc).__name__}: {exc}")
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        if stack is not None and not args.keep:
            if not report.health and stack.config:
                with contextlib.suppress(Exception):
                    stack.record_health(stack.started_at)
            dump_logs(stack, show=bool(report.failed))
            log("tearing down")
            left = stack.down()
            report.check("nothing left running (containers, volumes, network)", not left, ", ".join(left))
    report.print()
    return 1 if report.failed else 0


def dump_logs(stack: Stack, *, show: bool) -> None:
    """Every container's output into .cache/compose-test/logs/; on failure, their last lines here too."""
    with contextlib.suppress(Exception):
        for c in stack.containers():
            result = stack.engine("logs", c["Id"], timeout=60, check=False)
            text = (result.stdout or "") + (result.stderr or "")
            (LOGS / f"container-{name_of(c)}.log").write_text(text)
            if show:
                print(f"---- {name_of(c)} ({(c.get('State') or {}).get('Status')}), last lines:")
                print("\n".join(text.strip().splitlines()[-15:]))


if __name__ == "__main__":
    sys.exit(main())
