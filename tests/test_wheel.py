"""The wheel is the product: it carries sql/, templates/ and static/, and once installed anywhere it serves.

The wheel is built once per session from a copy of the build inputs (so a stale build/ folder of the
checkout cannot leak into it), installed with its dependencies from the package index pip is
configured for into a fresh virtualenv outside the checkout, and `fotoowl serve` is started from there
against the session's PostgreSQL, Redis and S3. Slow: installing the dependencies takes up to a minute
and a half (pip's cache makes it faster).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
import zipfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from conftest import TEST_BUCKET, SessionServers, _with_database
from fotoowl.config import AppSettings
from fotoowl.db import load_migrations
from fotoowl.resources import FOLDERS

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[1]
# What the Dockerfile's builder stage copies: enough to build the wheel.
BUILD_INPUTS = ("pyproject.toml", "README.md", "src", "sql", "templates", "static")
HTMX = Path("static/vendor/htmx.min.js")
PIP_TIMEOUT_S = 240
START_TIMEOUT_S = 60


def clean_env() -> dict[str, str]:
    """This process's environment minus whatever could point Python or fotoowl back at the checkout."""
    return {
        key: value
        for key, value in os.environ.items()
        if key not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV") and not key.startswith(("FOTOOWL_", "AWS_"))
    }


def run_pip(python: Path, *args: str, cwd: Path) -> None:
    done = subprocess.run(
        [str(python), "-m", "pip", *args],
        cwd=cwd,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=PIP_TIMEOUT_S,
        check=False,
    )
    if done.returncode == 0:
        return
    output = (done.stdout + done.stderr)[-4000:]
    # Building needs setuptools and installing needs every dependency from the index: only when the
    # index cannot be reached at all is this no verdict on the package.
    probe = subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-cache-dir",
            "--timeout",
            "15",
            "--retries",
            "1",
            "--dest",
            str(cwd / "probe"),
            "setuptools",
        ],
        cwd=cwd,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=PIP_TIMEOUT_S,
        check=False,
    )
    if probe.returncode != 0:
        pytest.skip(f"the package index pip is configured for cannot be reached: {probe.stderr.strip()[-500:]}")
    pytest.fail(f"pip {' '.join(args)} failed:\n{output}")


def copy_build_inputs(target: Path, *, with_htmx: bool) -> Path:
    ignored = ["__pycache__", "*.egg-info"] + ([] if with_htmx else ["vendor"])
    target.mkdir(parents=True, exist_ok=True)
    for name in BUILD_INPUTS:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, target / name, ignore=shutil.ignore_patterns(*ignored))
        else:
            shutil.copy2(source, target / name)
    return target


def build_wheel(source: Path, dist: Path) -> Path:
    run_pip(Path(sys.executable), "wheel", "--no-deps", "--wheel-dir", str(dist), str(source), cwd=source)
    (wheel,) = dist.glob("fotoowl-*.whl")
    return wheel


def wheel_names(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        return set(archive.namelist())


def tree_files(folder: Path) -> list[Path]:
    return [
        path.relative_to(folder) for path in folder.rglob("*") if path.is_file() and "__pycache__" not in path.parts
    ]


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = copy_build_inputs(tmp_path_factory.mktemp("wheel-source"), with_htmx=True)
    return build_wheel(source, tmp_path_factory.mktemp("dist"))


@pytest.fixture(scope="session")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("installed") / "venv"
    assert not venv.is_relative_to(ROOT)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], env=clean_env(), check=True, timeout=120)
    run_pip(venv / "bin" / "python", "install", str(wheel), cwd=venv.parent)
    return venv


# --- what the wheel holds --------------------------------------------------------------------------


def test_wheel_holds_every_module_and_the_data_folders_inside_the_package(wheel: Path) -> None:
    names = wheel_names(wheel)
    expected = {f"fotoowl/{path.as_posix()}" for path in tree_files(ROOT / "src" / "fotoowl")}
    expected |= {f"fotoowl/{folder}/{path.as_posix()}" for folder in FOLDERS for path in tree_files(ROOT / folder)}
    assert {
        "fotoowl/py.typed",
        "fotoowl/sql/001_init.sql",
        "fotoowl/templates/base.html",
        "fotoowl/static/app.css",
    } <= expected
    missing = sorted(expected - names)
    assert not missing, f"left out of the wheel (a package missing from pyproject.toml's list?): {missing}"
    # Nothing at the top level of site-packages but the package and its metadata.
    assert {name.split("/")[0] for name in names} == {"fotoowl", "fotoowl-0.1.0.dist-info"}
    with zipfile.ZipFile(wheel) as archive:
        entry_points = archive.read("fotoowl-0.1.0.dist-info/entry_points.txt").decode()
    assert "fotoowl = fotoowl.cli:main" in entry_points


def test_htmx_ships_when_present_and_its_absence_does_not_break_the_build(wheel: Path, tmp_path: Path) -> None:
    # The wheel fixture's build had htmx exactly when the checkout has it (make install fetches it).
    assert (f"fotoowl/{HTMX.as_posix()}" in wheel_names(wheel)) == (ROOT / HTMX).is_file()
    source = copy_build_inputs(tmp_path / "source", with_htmx=False)
    without = wheel_names(build_wheel(source, tmp_path / "dist"))
    assert "fotoowl/static/app.css" in without
    assert not any(name.startswith("fotoowl/static/vendor/") for name in without)


# --- installed outside the checkout, it serves -----------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
async def empty_database_url(servers: SessionServers) -> AsyncIterator[str]:
    """A database without a single table, so the installed package has to run its own migrations."""
    name = f"fotoowl_w_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(servers.pg_admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    yield _with_database(servers.pg_admin_url, name)
    conn = await asyncpg.connect(servers.pg_admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@dataclass
class Served:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


@pytest.fixture
def served(venv: Path, settings: AppSettings, empty_database_url: str, tmp_path: Path) -> Iterator[Served]:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    port = free_port()
    env = clean_env() | {
        "FOTOOWL_DATABASE_URL": empty_database_url,
        "FOTOOWL_REDIS_URL": settings.redis_url,
        "FOTOOWL_STORAGE": "s3",
        "FOTOOWL_S3_ENDPOINT_URL": settings.s3_endpoint_url,
        "FOTOOWL_S3_BUCKET": TEST_BUCKET,
        "FOTOOWL_S3_PREFIX": settings.s3_prefix,
        "AWS_ACCESS_KEY_ID": settings.aws_access_key_id,
        "AWS_SECRET_ACCESS_KEY": settings.aws_secret_access_key.get(),
        "FOTOOWL_GOOGLE_API_KEY": "test-key",
        "FOTOOWL_DATA_DIR": str(run_dir / "data"),
        "FOTOOWL_FILE_ROOT": str(run_dir / "files"),
        "FOTOOWL_LOG_FORMAT": "text",
    }
    log = tmp_path / "serve.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [str(venv / "bin" / "fotoowl"), "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=run_dir,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    handle = Served(f"http://127.0.0.1:{port}", process, log)
    try:
        wait_until_ready(handle)
        yield handle
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_until_ready(served: Served) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    last = "no answer yet"
    while time.monotonic() < deadline:
        if served.process.poll() is not None:
            pytest.fail(f"fotoowl serve exited with {served.process.returncode}:\n{served.output()}")
        try:
            with urllib.request.urlopen(served.url + "/readyz", timeout=5) as resp:
                if resp.status == 200:
                    return
        except urllib.error.HTTPError as exc:
            last = f"{exc.code}: {exc.read().decode(errors='replace')[:500]}"
        except OSError as exc:
            last = repr(exc)
        time.sleep(0.25)
    pytest.fail(f"GET /readyz did not answer 200 in {START_TIMEOUT_S} s (last: {last}):\n{served.output()}")


def test_the_installed_package_reads_its_folders_from_site_packages(venv: Path, tmp_path: Path) -> None:
    script = (
        "import json; from fotoowl.resources import FOLDERS, folder; "
        "print(json.dumps({name: str(folder(name)) for name in FOLDERS}))"
    )
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-c", script],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    found = {name: Path(path) for name, path in json.loads(done.stdout).items()}
    for name, path in found.items():
        assert path.is_relative_to(venv) and path.parent.name == "fotoowl", (name, path)


async def test_the_installed_wheel_serves_pages_static_files_and_the_api(
    served: Served, empty_database_url: str, session: aiohttp.ClientSession
) -> None:
    async with session.get(served.url + "/") as resp:
        assert resp.status == 200, served.output()
        assert resp.content_type == "text/html"
        page = await resp.text()
    assert page.lstrip().lower().startswith("<!doctype html>")
    # static() hashed the stylesheet at render time, so the templates found the static folder too.
    assert 'href="/static/app.css?v=' in page
    assert ("vendor/htmx.min.js" in page) == (ROOT / HTMX).is_file()

    async with session.get(served.url + "/static/app.css") as resp:
        assert resp.status == 200
        assert await resp.read() == (ROOT / "static" / "app.css").read_bytes()

    async with session.get(served.url + "/imports") as resp:
        assert resp.status == 200
        assert resp.content_type == "application/json"
        assert (await resp.json())["imports"] == []

    # The database started empty: the wheel's own sql/ created the schema.
    conn = await asyncpg.connect(empty_database_url)
    try:
        applied = [row["name"] for row in await conn.fetch("SELECT name FROM schema_migrations ORDER BY version")]
    finally:
        await conn.close()
    assert applied == [migration.name for migration in load_migrations(ROOT / "sql")]

    served.process.terminate()
    try:
        returncode = await asyncio.to_thread(served.process.wait, 20)
    except subprocess.TimeoutExpired:
        pytest.fail(f"fotoowl serve did not stop within 20 s of SIGTERM:\n{served.output()}")
    assert returncode == 0, served.output()
