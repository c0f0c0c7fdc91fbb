"""Health, readiness, metrics and logs."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import pytest

from conftest import RunningEmulator, wait_for_import
from fotoowl import embedded
from fotoowl.config import AppSettings, Secret
from fotoowl.testing.drive_emulator import Fault
from fotoowl.web.app import create_app


def metric(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = re.escape(name) + (r"\{" + re.escape(want) + r"\}" if labels else "") + r" ([0-9.e+-]+)$"
    match = re.search(pattern, text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


async def test_healthz_and_readyz(client: Any) -> None:
    resp = await client.get("/healthz")
    assert resp.status == 200 and await resp.json() == {"status": "ok"}
    resp = await client.get("/readyz")
    assert resp.status == 200
    assert await resp.json() == {
        "status": "ready",
        "checks": {"database": "ok", "redis": "ok", "storage": "ok", "workers": "ok"},
    }


async def test_readyz_names_the_dependency_that_is_down(
    settings: AppSettings, aiohttp_client: Any, tmp_path: Path
) -> None:
    valkey = embedded.start_valkey(tmp_path / "valkey", durable=False)
    try:
        app_client = await aiohttp_client(create_app(settings.replace(redis_url=valkey.url), run_worker=False))
        assert (await app_client.get("/readyz")).status == 200
        valkey.stop()
        resp = await app_client.get("/readyz")
        assert resp.status == 503
        body = await resp.json()
        assert body["error"]["code"] == "not_ready"
        assert body["checks"]["redis"].startswith("unavailable")
        assert body["checks"]["database"] == "ok" and body["checks"]["storage"] == "ok"
        assert "redis" in body["error"]["message"]
    finally:
        valkey.stop()


async def test_metrics_count_a_finished_import(client: Any, drive: RunningEmulator) -> None:
    before = await (await client.get("/metrics")).text()
    root = drive.emu.add_folder(None, "Metrics")
    for i in range(4):
        drive.emu.add_image(root, f"{i}.png", fmt="png")
    drive.emu.add_native(root, "doc")
    resp = await client.post("/import/google-drive", json={"folder_url": root})
    await wait_for_import(client, (await resp.json())["import_id"])
    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain")
    after = await resp.text()
    assert (
        metric(after, "fotoowl_files_total", outcome="imported", reason="")
        - metric(before, "fotoowl_files_total", outcome="imported", reason="")
        == 4
    )
    assert (
        metric(after, "fotoowl_files_total", outcome="skipped", reason="google_native")
        - metric(before, "fotoowl_files_total", outcome="skipped", reason="google_native")
        == 1
    )
    assert metric(after, "fotoowl_imports", status="completed") == 1
    assert metric(after, "fotoowl_bytes_transferred_total") > metric(before, "fotoowl_bytes_transferred_total")
    assert metric(after, "fotoowl_drive_requests_total", kind="list", status="200") >= 1
    assert "fotoowl_transfer_duration_seconds_bucket" in after
    assert "fotoowl_queue_depth" in after


async def test_the_api_key_never_reaches_the_logs(
    app_settings: AppSettings, drive: RunningEmulator, aiohttp_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    secret_key = "AIzaSyTOPSECRET-0123456789abcdefghijk"
    drive.emu.api_keys = frozenset({secret_key})
    settings = app_settings.replace(google_api_key=Secret(secret_key))
    app_client = await aiohttp_client(create_app(settings))
    root = drive.emu.add_folder(None, "Logs")
    ids = [drive.emu.add_image(root, f"{i}.jpg") for i in range(3)]
    drive.emu.inject(ids[0], Fault.download_quota(), times=None)
    drive.emu.inject(ids[1], Fault.http(503, "backendError"), times=1)
    caplog.set_level(logging.DEBUG)
    resp = await app_client.post("/import/google-drive", json={"folder_url": root})
    body = await wait_for_import(app_client, (await resp.json())["import_id"])
    assert body["counts"]["failed"] == 1
    failures = await (await app_client.get(f"/imports/{body['id']}/failures")).text()
    assert caplog.records, "the import logged nothing at all"
    assert secret_key not in caplog.text
    assert secret_key not in failures
    assert secret_key not in str(body)
