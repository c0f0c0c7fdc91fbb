"""AppSettings, migrations, and the embedded stack of `make run`."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from conftest import SessionServers
from fotoowl.config import AppSettings, ConfigError, Secret
from fotoowl.db import load_migrations, migrate


def test_settings_from_env_parses_types_and_aliases() -> None:
    settings = AppSettings.from_env(
        {
            "FOTOOWL_PORT": "9000",
            "FOTOOWL_EMBEDDED_WORKERS": "false",
            "FOTOOWL_DRIVE_RATE_PER_S": "12.5",
            "GOOGLE_API_KEY": "AIza-secret-key",
            "AWS_SECRET_ACCESS_KEY": "aws-secret",
            "FOTOOWL_API_TOKEN": "tok-secret",
            "FOTOOWL_S3_PREFIX": "/shoots/",
            "FOTOOWL_FILE_ROOT": "/srv/photos",
        }
    )
    assert settings.port == 9000
    assert settings.embedded_workers is False
    assert settings.drive_rate_per_s == 12.5
    assert settings.google_api_key.get() == "AIza-secret-key"
    assert settings.s3_prefix_normalised == "shoots/"
    assert settings.file_root == Path("/srv/photos")
    # The FOTOOWL_ name wins over the generic one.
    assert AppSettings.from_env({"GOOGLE_API_KEY": "a", "FOTOOWL_GOOGLE_API_KEY": "b"}).google_api_key.get() == "b"


def test_secrets_never_show_in_repr() -> None:
    settings = AppSettings(
        google_api_key=Secret("AIza-secret-key"),
        api_token=Secret("tok-secret"),
        aws_secret_access_key=Secret("aws-secret"),
    )
    text = repr(settings) + str(settings)
    for secret in ("AIza-secret-key", "tok-secret", "aws-secret"):
        assert secret not in text


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"FOTOOWL_PORT": "eighty"}, "FOTOOWL_PORT"),
        ({"FOTOOWL_PORT": "70000"}, "FOTOOWL_PORT"),
        ({"FOTOOWL_STORAGE": "ftp"}, "FOTOOWL_STORAGE"),
        ({"FOTOOWL_DATABASE_URL": "mysql://x"}, "FOTOOWL_DATABASE_URL"),
        ({"FOTOOWL_REDIS_URL": "localhost:6379"}, "FOTOOWL_REDIS_URL"),
        ({"FOTOOWL_PART_SIZE_BYTES": "1024"}, "5 MiB"),
        ({"FOTOOWL_EMBEDDED_WORKERS": "maybe"}, "FOTOOWL_EMBEDDED_WORKERS"),
        ({"FOTOOWL_FILES_IN_FLIGHT": "0"}, "FOTOOWL_FILES_IN_FLIGHT"),
    ],
)
def test_bad_settings_are_rejected_with_the_variable_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        AppSettings.from_env(env)


def test_a_bad_database_url_does_not_leak_its_password() -> None:
    with pytest.raises(ConfigError) as info:
        AppSettings.from_env({"FOTOOWL_DATABASE_URL": "mysql://user:hunter2@db/x"})
    assert "hunter2" not in str(info.value)


def test_migrations_are_numbered_and_ordered() -> None:
    migrations = load_migrations()
    assert migrations and migrations[0].name == "001_init.sql"
    assert [m.version for m in migrations] == sorted({m.version for m in migrations})


async def test_migrate_is_recorded_idempotent_and_safe_concurrently(servers: SessionServers) -> None:
    admin = await asyncpg.connect(servers.pg_admin_url)
    name = f"fotoowl_m_{os.getpid()}_{int(time.time() * 1000) % 100000}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = servers.pg_admin_url.rsplit("/", 1)[0] + "/" + name
    try:
        conns = [await asyncpg.connect(url) for _ in range(4)]
        try:
            results = await asyncio.gather(*(migrate(c) for c in conns))
            # Exactly one process applied each migration; the others waited on the lock and found it done.
            applied = [name for result in results for name in result]
            assert sorted(applied) == [m.name for m in load_migrations()]
            assert await migrate(conns[0]) == []
            rows = await conns[0].fetch("SELECT version, name FROM schema_migrations ORDER BY version")
            assert [r["name"] for r in rows] == [m.name for m in load_migrations()]
        finally:
            for conn in conns:
                await conn.close()
    finally:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Field 4 is the parent pid; the command name in field 2 may contain spaces.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            found.add(int(entry.name))
    return found


@pytest.mark.slow
@pytest.mark.timeout(180)
def _import_and_wait(port: int, folder_url: str) -> dict[str, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/imports",
        method="POST",
        data=json.dumps({"folder_url": folder_url}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        status_url = json.loads(resp.read())["status_url"]
    deadline = time.monotonic() + 90
    while True:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{status_url}", timeout=10) as resp:
            body: dict[str, Any] = json.loads(resp.read())
        if body["status"] not in ("queued", "listing", "running") or time.monotonic() > deadline:
            return body
        time.sleep(0.3)


def test_dev_serves_on_embedded_servers_and_stops_clean(tmp_path: Path) -> None:
    """`fotoowl dev` (what `make run` calls) from nothing: real servers, a page, no process left behind."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FOTOOWL_", "AWS_", "GOOGLE_"))}
    port = _free_port()
    env.update({"FOTOOWL_DATA_DIR": str(tmp_path / "data"), "FOTOOWL_PORT": str(port), "FOTOOWL_LOG_FORMAT": "text"})
    proc = subprocess.Popen(
        [sys.executable, "-m", "fotoowl.cli", "dev", "--demo-images", "12"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            output.append(line)
            if "Press Ctrl-C to stop" in line:
                break
        text = "".join(output)
        assert f"http://127.0.0.1:{port}/" in text, text
        link = r"sample folder: https://drive\.google\.com/drive/folders/[A-Za-z0-9_-]{10,}(\?\S*)?\n"
        assert re.search(link, text), text
        children = _children(proc.pid)
        assert len(children) == 3, text  # postgres, valkey, weed
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=10) as resp:
            assert resp.status == 200
        dropbox_link = r"sample folder: (https://www\.dropbox\.com/scl/fo/\S+)\n"
        assert re.search(dropbox_link, text), text
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as resp:
            assert resp.status == 200
            page = resp.read().decode()
            assert "drive.google.com/drive/folders/" in page and "www.dropbox.com/scl/fo/" in page
        # Both sample folders import, with no credentials and no network.
        for sample in re.findall(r"sample folder: (\S+)\n", text):
            assert _import_and_wait(port, sample)["status"] == "completed"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            rest, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            rest, _ = proc.communicate()
    assert proc.returncode == 0, "".join(output) + rest
    assert "fotoowl dev: stopped" in rest
    for child in children:
        assert not Path(f"/proc/{child}").exists() or "zombie" in Path(f"/proc/{child}/status").read_text()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)
    assert (tmp_path / "data" / "postgres" / "pgdata" / "PG_VERSION").exists(), "data is kept for the next run"


def _free_port() -> int:
    from fotoowl.embedded import free_port

    return free_port()
