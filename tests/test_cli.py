"""`fotoowl import --direct` as a user runs it: a real subprocess writing to PostgreSQL and Redis itself,
exit codes and the JSON summary. (The client of a running server: test_cli_client.py.)

The test app's embedded worker (the `client` fixture) does the work the CLI queued.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

import pytest

from conftest import TEST_API_KEY, RunningEmulator, counts, without_previews
from fotoowl.config import AppSettings
from fotoowl.testing.drive_emulator import Fault


def cli_env(settings: AppSettings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FOTOOWL_", "GOOGLE_"))}
    env.update(
        {
            "FOTOOWL_DATABASE_URL": settings.database_url,
            "FOTOOWL_REDIS_URL": settings.redis_url,
            "FOTOOWL_DRIVE_API_URL": settings.drive_api_url,
            "FOTOOWL_GOOGLE_API_KEY": TEST_API_KEY,
            "FOTOOWL_LOG_FORMAT": "json",
        }
    )
    env.update(extra)
    return env


async def run_cli(env: dict[str, str], *args: str, timeout_s: float = 90) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "fotoowl.cli",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def link(folder_id: str) -> str:
    return f"https://drive.google.com/drive/folders/{folder_id}"


async def test_import_wait_json_exits_0_with_the_summary(
    client: Any, drive: RunningEmulator, app_settings: AppSettings
) -> None:
    root = drive.emu.add_folder(None, "CLI")
    for i in range(6):
        drive.emu.add_image(root, f"{i}.jpg")
    drive.emu.add_file(root, "readme.txt", "text/plain", content=b"hello")
    code, out, err = await run_cli(cli_env(app_settings), "import", link(root), "--direct", "--wait", "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["status"] == "completed"
    assert summary["counts"] == counts(found=7, imported=6, skipped=1)
    assert summary["bytes"]["imported"] > 0
    # --direct builds this object without the web layer: it must stay what the API answers.
    resp = await client.get(f"/imports/{summary['id']}")
    assert without_previews(summary) == without_previews(await resp.json())


async def test_import_with_failed_files_exits_1(client: Any, drive: RunningEmulator, app_settings: AppSettings) -> None:
    root = drive.emu.add_folder(None, "Partly")
    ids = [drive.emu.add_image(root, f"{i}.jpg") for i in range(3)]
    drive.emu.inject(ids[0], Fault.download_quota(), times=None)
    code, out, _ = await run_cli(cli_env(app_settings), "import", link(root), "--direct", "--wait", "--json")
    assert code == 1
    assert json.loads(out)["counts"]["failed"] == 1


async def test_missing_folder_exits_2(client: Any, drive: RunningEmulator, app_settings: AppSettings) -> None:
    code, out, _ = await run_cli(
        cli_env(app_settings), "import", link("1NoSuchFolderAtAll0123456789"), "--direct", "--wait", "--json"
    )
    assert code == 2
    summary = json.loads(out)
    assert summary["status"] == "failed"
    assert summary["error"]["code"] == "folder_not_accessible"
    assert "Anyone with the link" in summary["error"]["message"]


async def test_listing_that_fails_as_a_whole_exits_3(
    client: Any, drive: RunningEmulator, app_settings: AppSettings
) -> None:
    root = drive.emu.add_folder(None, "Quota")
    drive.emu.add_image(root, "a.jpg")
    drive.emu.inject(root, Fault.http(403, "dailyLimitExceeded"), times=None, on="list")
    code, out, _ = await run_cli(cli_env(app_settings), "import", link(root), "--direct", "--wait", "--json")
    assert code == 3
    assert json.loads(out)["status"] == "failed"


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/drive/folders/abc",
        "https://drive.google.com/file/d/1AbCdEfGhIjKlMnOpQrStUvWxYz/view",
        "not a link",
    ],
)
async def test_bad_links_exit_2_without_touching_anything(url: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FOTOOWL_")}
    env["FOTOOWL_GOOGLE_API_KEY"] = "k"
    code, out, _ = await run_cli(env, "import", url, "--direct", "--json")
    assert code == 2
    assert json.loads(out)["error"]["code"] == "invalid_folder_url"


async def test_no_google_key_exits_2_with_a_hint() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FOTOOWL_", "GOOGLE_"))}
    code, _, err = await run_cli(env, "import", link("1AbCdEfGhIjKlMnOpQrStUvWxYz"), "--direct")
    assert code == 2
    assert "FOTOOWL_GOOGLE_API_KEY" in err


async def test_direct_without_a_database_exits_2_naming_the_settings() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FOTOOWL_", "GOOGLE_"))}
    env["FOTOOWL_GOOGLE_API_KEY"] = "k"
    code, out, err = await run_cli(env, "import", link("1AbCdEfGhIjKlMnOpQrStUvWxYz"), "--direct")
    assert (code, out) == (2, "")
    assert err.count("\n") == 1, err
    assert "FOTOOWL_DATABASE_URL and FOTOOWL_REDIS_URL" in err and "FOTOOWL_URL" in err
