"""Schemathesis fuzzes every operation of the app's own OpenAPI document against the running app.

Each answer must be no 5xx, fit the documented status, media type, headers and schema, refuse data
the document calls invalid, and answer undocumented methods with 405 and `Allow`.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import hypothesis
import pytest
import requests
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck
from schemathesis import APIOperation, GenerationMode

from conftest import RunningEmulator, wait_for_import
from fotoowl.config import AppSettings
from fotoowl.testing.drive_emulator import Fault
from fotoowl.web.app import create_app
from fotoowl.web.openapi import build_document
from test_openapi import documented

MAX_EXAMPLES = 30
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
    "negative_data_rejection",
)

# Explicit, so a schemathesis.toml lying around cannot change what this test does.
CONFIG = schemathesis.Config.from_dict({})


@pytest.fixture
async def seeded_settings(app_settings: AppSettings, drive: RunningEmulator, aiohttp_client: Any) -> AppSettings:
    """A database with a finished import (images, a failure): ids the fuzzer tries can exist."""
    emu = drive.emu
    root = emu.add_folder(None, "Fuzz")
    sub = emu.add_folder(root, "Sub")
    emu.add_image(root, "a.jpg")
    emu.add_image(sub, "b.png", fmt="png")
    emu.add_file(root, "c.heic", "image/heic", b"not a decodable picture")
    emu.inject(emu.add_image(root, "d.jpg"), Fault.download_quota(), times=None)
    client = await aiohttp_client(create_app(app_settings))
    resp = await client.post("/import/google-drive", json={"folder_url": root})
    assert resp.status == 202
    assert (await wait_for_import(client, (await resp.json())["import_id"]))["status"] == "completed_with_errors"
    await client.close()
    return app_settings


@pytest.fixture
def base_url(seeded_settings: AppSettings) -> Iterator[str]:
    """The app served as `fotoowl serve` does, from a thread and loop of its own: schemathesis calls
    are blocking, and would stall a server on the test's loop."""
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(create_app(seeded_settings, run_worker=False))
    started = threading.Event()
    failed: list[BaseException] = []

    def serve() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(runner.setup())
            loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", 0).start())
        except BaseException as exc:
            failed.append(exc)
            started.set()
            return
        started.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    thread = threading.Thread(target=serve, name="fuzzed-app", daemon=True)
    thread.start()
    assert started.wait(60), "the app did not start"
    if failed:
        raise failed[0]
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(60)


@pytest.fixture
def api_schema(base_url: str) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{base_url}/openapi.json", config=CONFIG)


def fuzz(operation: APIOperation, mode: GenerationMode) -> None:
    # One Hypothesis test per operation, from schemathesis' public strategies: its pytest loader for
    # live servers (`schemathesis.pytest.from_fixture`) reads `Node._nodeid`, which pytest 9 removed.
    checks = [getattr(schemathesis.checks, name) for name in CHECKS]

    @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
    # Same cases every run (a regression test, not a lottery), and no example database to replay.
    @hypothesis.settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    def run(case: schemathesis.Case) -> None:
        case.call_and_validate(checks=checks)

    run()


def test_every_operation_keeps_its_contract(
    api_schema: schemathesis.BaseSchema, base_url: str, subtests: pytest.Subtests
) -> None:
    operations = [result.ok() for result in api_schema.get_all_operations()]
    # Everything but the document itself, which schemathesis leaves out when it loads from there.
    every = {f"{method} {path}" for method, path in documented(build_document(auth_required=False))}
    assert {operation.label for operation in operations} == every - {"GET /openapi.json"}
    for operation in operations:
        spec = api_schema.raw_schema["paths"][operation.path][operation.method.lower()]
        # Invalid data needs something to put it in.
        negative = [GenerationMode.NEGATIVE] if spec.get("parameters") or spec.get("requestBody") else []
        for mode in (GenerationMode.POSITIVE, *negative):
            with subtests.test(msg=f"{operation.label} {mode.value}"):
                fuzz(operation, mode)


def test_undocumented_methods_get_405_with_allow(api_schema: schemathesis.BaseSchema, base_url: str) -> None:
    with requests.Session() as session:
        for path, item in api_schema.raw_schema["paths"].items():
            url = base_url + path.replace("{id}", "1")
            documented_methods = {method.upper() for method in item}
            for method in sorted({"GET", "POST", "PUT", "PATCH", "DELETE"} - documented_methods):
                resp = session.request(method, url, json={})
                assert resp.status_code == 405, (method, path, resp.status_code)
                allowed = {m.strip() for m in resp.headers.get("Allow", "").split(",")}
                assert documented_methods <= allowed, (method, path, resp.headers.get("Allow"))
                assert resp.headers["Content-Type"].startswith("application/json")
                assert resp.json()["error"]["code"] == "method_not_allowed"
