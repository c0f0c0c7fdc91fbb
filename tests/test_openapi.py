"""The OpenAPI document against the app: it describes every route, and real answers fit its schemas."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
import referencing
import referencing.jsonschema
from aiohttp import web
from openapi_spec_validator import validate as validate_spec

from conftest import RunningEmulator, wait_for_import, wait_for_previews
from fotoowl.config import AppSettings, Secret
from fotoowl.testing.drive_emulator import Fault
from fotoowl.web.app import create_app
from fotoowl.web.openapi import build_document

JSON = "application/json"
DOC_URI = "urn:fotoowl:openapi"
RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)")
FORMATS = jsonschema.FormatChecker(formats=())


@FORMATS.checks("date-time")
def _is_rfc3339(value: object) -> bool:
    return not isinstance(value, str) or RFC3339.fullmatch(value) is not None


def is_html_page(path: str) -> bool:
    return path == "/" or path.startswith(("/ui/", "/static/")) or path == "/static"


def app_routes(app: web.Application) -> dict[tuple[str, str], str | None]:
    """(method, path) → route name, for every JSON route; add_get's automatic HEAD twins left out."""
    routes: dict[tuple[str, str], str | None] = {}
    for route in app.router.routes():
        assert route.resource is not None
        path = route.resource.canonical
        if route.method != "HEAD" and not is_html_page(path):
            routes[(route.method, path)] = route.resource.name
    return routes


def documented(doc: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(method.upper(), path): op for path, item in doc["paths"].items() for method, op in item.items()}


class Contract:
    """Looks up the schema the document gives for an answer, and validates bodies against it."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        resource = referencing.Resource.from_contents(doc, default_specification=referencing.jsonschema.DRAFT202012)
        self.registry: referencing.Registry[Any] = referencing.Registry().with_resource(DOC_URI, resource)

    def _deref(self, obj: dict[str, Any], pointer: str) -> tuple[dict[str, Any], str]:
        while "$ref" in obj:
            pointer = obj["$ref"]
            node: Any = self.doc
            for part in pointer.removeprefix("#/").split("/"):
                node = node[part.replace("~1", "/").replace("~0", "~")]
            obj = node
        return obj, pointer

    def response(self, method: str, path: str, status: int) -> tuple[dict[str, Any], str]:
        responses = self.doc["paths"][path][method.lower()]["responses"]
        assert str(status) in responses, f"{method} {path} answered {status}, which the document does not list"
        pointer = "#/paths/" + _escape(path) + f"/{method.lower()}/responses/{status}"
        return self._deref(responses[str(status)], pointer)

    def media_types(self, method: str, path: str, status: int) -> list[str]:
        response, _ = self.response(method, path, status)
        return list(response.get("content", {}))

    def check(self, method: str, path: str, status: int, body: Any) -> None:
        response, pointer = self.response(method, path, status)
        assert JSON in response.get("content", {}), f"{method} {path} {status} is not JSON in the document"
        self.validate(body, f"{pointer}/content/{_escape(JSON)}/schema")

    def validate(self, instance: Any, pointer: str) -> None:
        validator = jsonschema.Draft202012Validator(
            {"$ref": DOC_URI + pointer}, registry=self.registry, format_checker=FORMATS
        )
        validator.validate(instance)

    async def call(self, client: Any, method: str, path: str, url: str, **kwargs: Any) -> tuple[int, Any]:
        """Call `url` (an instance of the templated `path`), check the JSON answer, return it."""
        resp = await client.request(method, url, allow_redirects=False, **kwargs)
        assert resp.content_type == JSON, (method, url, resp.status, resp.content_type)
        body = await resp.json()
        self.check(method, path, resp.status, body)
        return resp.status, body


def _escape(part: str) -> str:
    return part.replace("~", "~0").replace("/", "~1")


def media_objects(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every media type object with its JSON pointer (responses, request bodies, shared responses)."""
    for path, item in doc["paths"].items():
        for method, op in item.items():
            base = f"#/paths/{_escape(path)}/{method}"
            for media, obj in op.get("requestBody", {}).get("content", {}).items():
                yield f"{base}/requestBody/content/{_escape(media)}", obj
            for status, response in op["responses"].items():
                for media, obj in response.get("content", {}).items():
                    yield f"{base}/responses/{status}/content/{_escape(media)}", obj
    for name, response in doc["components"]["responses"].items():
        for media, obj in response.get("content", {}).items():
            yield f"#/components/responses/{name}/content/{_escape(media)}", obj


# --- the document alone ---------------------------------------------------------------------------


@pytest.mark.parametrize("auth_required", [False, True])
def test_document_is_valid_openapi_31(auth_required: bool) -> None:
    doc = build_document(auth_required=auth_required)
    assert doc["openapi"].startswith("3.1.")
    validate_spec(doc)


def test_every_route_is_documented_and_every_documented_route_exists() -> None:
    routes = app_routes(create_app(AppSettings()))
    ops = documented(build_document(auth_required=False))
    assert set(routes) - set(ops) == set(), "routes missing from the OpenAPI document"
    assert set(ops) - set(routes) == set(), "documented operations with no route"
    # Route names are the operation ids, so the two stay easy to cross-reference.
    assert {key: op["operationId"] for key, op in ops.items()} == routes


def test_the_route_list_covers_the_whole_api() -> None:
    # A guard on the guard: had app_routes lost routes, the comparison above would pass vacuously.
    assert set(app_routes(create_app(AppSettings()))) >= {
        ("POST", "/import/google-drive"),
        ("GET", "/imports"),
        ("GET", "/imports/{id}"),
        ("GET", "/imports/{id}/failures"),
        ("POST", "/imports/{id}/retry"),
        ("POST", "/imports/{id}/cancel"),
        ("GET", "/images"),
        ("GET", "/images/{id}"),
        ("GET", "/images/{id}/content"),
        ("GET", "/images/{id}/thumbnail"),
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/metrics"),
        ("GET", "/openapi.json"),
    }


def test_examples_fit_their_schemas() -> None:
    doc = build_document(auth_required=True)
    contract = Contract(doc)
    checked = 0
    for pointer, media in media_objects(doc):
        if "example" in media:
            contract.validate(media["example"], pointer + "/schema")
            checked += 1
    assert checked >= 15


def test_page_sizes_and_filters_match_the_api() -> None:
    ops = documented(build_document(auth_required=False))
    contract = Contract(build_document(auth_required=False))

    def params(key: tuple[str, str]) -> dict[str, dict[str, Any]]:
        resolved = [contract._deref(p, "")[0] for p in ops[key].get("parameters", [])]
        return {p["name"]: p for p in resolved}

    images = params(("GET", "/images"))
    assert set(images) == {"limit", "cursor", "import_id", "source", "folder", "mime_type", "q", "count"}
    for key, default in (
        (("GET", "/imports"), 50),
        (("GET", "/images"), 100),
        (("GET", "/imports/{id}/failures"), 100),
    ):
        assert params(key)["limit"]["schema"] == {"type": "integer", "minimum": 1, "maximum": 500, "default": default}


@pytest.mark.parametrize("auth_required", [False, True])
def test_bearer_security_only_on_write_endpoints(auth_required: bool) -> None:
    doc = build_document(auth_required=auth_required)
    scheme = doc["components"]["securitySchemes"]["bearerAuth"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    for (method, path), op in documented(doc).items():
        secured = "security" in op
        assert secured == (auth_required and method in ("POST", "PATCH", "DELETE")), (method, path)
        assert ("401" in op["responses"]) == secured, (method, path)
        if secured:
            assert op["security"] == [{"bearerAuth": []}]


# --- real answers ---------------------------------------------------------------------------------


async def test_served_document_is_the_built_one(client: Any) -> None:
    resp = await client.get("/openapi.json")
    assert resp.status == 200
    assert resp.content_type == JSON
    assert await resp.json() == build_document(auth_required=False)


async def test_real_answers_fit_the_document(client: Any, drive: RunningEmulator) -> None:
    contract = Contract(await (await client.get("/openapi.json")).json())
    emu = drive.emu
    root = emu.add_folder(None, "Contract")
    sub = emu.add_folder(root, "Sub")
    emu.add_image(root, "a.jpg", taken_time="2026:04:30 18:22:05", camera_make="Canon", camera_model="EOS R6")
    emu.add_image(sub, "b.png", fmt="png")
    flaky = emu.add_image(root, "c.jpg")
    emu.add_file(root, "d.heic", "image/heic", b"not a decodable picture")
    emu.inject(flaky, Fault.download_quota(), times=1)

    status, accepted = await contract.call(
        client,
        "POST",
        "/import/google-drive",
        "/import/google-drive",
        json={"folder_url": f"https://drive.google.com/drive/folders/{root}"},
    )
    assert status == 202
    import_id = accepted["import_id"]
    # Early, while nulls are likely: the shape holds in every state, not only the final one.
    await contract.call(client, "GET", "/imports/{id}", f"/imports/{import_id}")

    finished = await wait_for_import(client, import_id)
    contract.check("GET", "/imports/{id}", 200, finished)
    assert finished["status"] == "completed_with_errors"
    assert finished["rate"]["files_per_s"] is not None and finished["error"] is None

    status, failures = await contract.call(client, "GET", "/imports/{id}/failures", f"/imports/{import_id}/failures")
    assert status == 200 and [f["file_id"] for f in failures["failures"]] == [flaky]
    status, retried = await contract.call(
        client, "POST", "/imports/{id}/retry", f"/imports/{import_id}/retry", headers={"Content-Type": JSON}
    )
    assert (status, retried["requeued"]) == (202, 1)
    assert (await wait_for_import(client, import_id))["status"] == "completed"
    status, _ = await contract.call(client, "POST", "/imports/{id}/cancel", f"/imports/{import_id}/cancel", json={})
    assert status == 409

    # A second import, so the list has a second page.
    status, second = await contract.call(
        client, "POST", "/import/google-drive", "/import/google-drive", json={"folder_url": sub, "recursive": False}
    )
    assert status == 202
    status, _ = await contract.call(
        client, "POST", "/imports/{id}/cancel", f"/imports/{second['import_id']}/cancel", json={}
    )
    assert status in (202, 409)
    status, page = await contract.call(client, "GET", "/imports", "/imports?limit=1")
    assert status == 200 and len(page["imports"]) == 1 and page["next_cursor"]
    status, rest = await contract.call(client, "GET", "/imports", f"/imports?limit=1&cursor={page['next_cursor']}")
    assert [i["id"] for i in rest["imports"]] == [import_id]

    # Previews follow the import; every one is made (or known impossible) before the images are read.
    await wait_for_previews(client, import_id)
    status, images = await contract.call(client, "GET", "/images", "/images")
    assert status == 200 and len(images["images"]) == 4
    by_name = {image["name"]: image for image in images["images"]}
    assert by_name["a.jpg"]["camera"] == {"make": "Canon", "model": "EOS R6"}
    assert by_name["d.heic"]["thumbnail_url"] is None
    status, filtered = await contract.call(
        client,
        "GET",
        "/images",
        f"/images?import_id={import_id}&source=google_drive&folder=Sub&mime_type=image/png&q=B&limit=500",
    )
    assert [image["name"] for image in filtered["images"]] == ["b.png"]

    image = by_name["a.jpg"]
    status, one = await contract.call(client, "GET", "/images/{id}", f"/images/{image['id']}")
    assert status == 200 and one == image
    for path, url, expected in (
        ("/images/{id}/content", image["url"], "image/jpeg"),
        ("/images/{id}/thumbnail", image["thumbnail_url"], "image/jpeg"),
        ("/images/{id}/content", by_name["d.heic"]["url"], "application/octet-stream"),
    ):
        resp = await client.get(url, allow_redirects=False)
        assert resp.status == 200
        assert resp.content_type == expected
        assert any(_media_matches(media, resp.content_type) for media in contract.media_types("GET", path, 200))
        await resp.read()
    status, _ = await contract.call(
        client, "GET", "/images/{id}/thumbnail", by_name["d.heic"]["url"].replace("content", "thumbnail")
    )
    assert status == 404


def _media_matches(documented_type: str, actual: str) -> bool:
    kind, _, sub = documented_type.partition("/")
    actual_kind, _, actual_sub = actual.partition("/")
    return kind == actual_kind and sub in ("*", actual_sub)


async def test_operations_endpoints_fit_the_document(client: Any) -> None:
    contract = Contract(build_document(auth_required=False))
    assert await contract.call(client, "GET", "/healthz", "/healthz") == (200, {"status": "ok"})
    status, ready = await contract.call(client, "GET", "/readyz", "/readyz")
    assert status == 200 and set(ready["checks"]) >= {"database", "redis", "storage"}
    assert set(ready["checks"].values()) == {"ok"}
    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.content_type in contract.media_types("GET", "/metrics", 200)
    assert "fotoowl" in await resp.text()


@pytest.mark.parametrize(
    ("method", "path", "url", "kwargs", "status", "code"),
    [
        ("GET", "/imports/{id}", "/imports/999999", {}, 404, "not_found"),
        ("GET", "/imports/{id}", "/imports/abc", {}, 404, "not_found"),
        ("GET", "/imports/{id}/failures", "/imports/999999/failures", {}, 404, "not_found"),
        ("GET", "/imports", "/imports?limit=0", {}, 400, "invalid_parameter"),
        ("GET", "/imports", "/imports?limit=501", {}, 400, "invalid_parameter"),
        ("GET", "/imports", "/imports?cursor=bm90LWEtY3Vyc29y", {}, 400, "invalid_cursor"),
        ("GET", "/images", "/images?import_id=x", {}, 400, "invalid_parameter"),
        ("GET", "/images", "/images?q=" + "x" * 201, {}, 400, "invalid_parameter"),
        ("GET", "/images/{id}", "/images/999999", {}, 404, "not_found"),
        ("GET", "/images/{id}/content", "/images/999999/content", {}, 404, "not_found"),
        ("GET", "/images/{id}/thumbnail", "/images/999999/thumbnail", {}, 404, "not_found"),
        (
            "POST",
            "/import/google-drive",
            "/import/google-drive",
            {"data": b"{nope", "headers": {"Content-Type": JSON}},
            400,
            "invalid_json",
        ),
        ("POST", "/import/google-drive", "/import/google-drive", {"json": {}}, 422, "missing_field"),
        ("POST", "/import/google-drive", "/import/google-drive", {"json": {"folder_url": 7}}, 422, "invalid_field"),
        (
            "POST",
            "/import/google-drive",
            "/import/google-drive",
            {"json": {"folder_url": "https://example.com/x"}},
            422,
            "invalid_folder_url",
        ),
        (
            "POST",
            "/import/google-drive",
            "/import/google-drive",
            {"data": json.dumps({"folder_url": "x" * 70_000}), "headers": {"Content-Type": JSON}},
            413,
            None,
        ),
        (
            "POST",
            "/import/google-drive",
            "/import/google-drive",
            {"data": b'{"folder_url": "x"}', "headers": {"Content-Type": "application/json; charset=bogus"}},
            400,
            "invalid_json",
        ),
        (
            "POST",
            "/import/google-drive",
            "/import/google-drive",
            {"data": '{"folder_url": "x"}', "headers": {"Content-Type": "text/plain"}},
            415,
            "unsupported_media_type",
        ),
        (
            "POST",
            "/import/google-drive",
            "/import/google-drive",
            {"json": {"folder_url": "x"}, "headers": {"Origin": "https://evil.example"}},
            403,
            "csrf_failed",
        ),
        ("POST", "/imports/{id}/retry", "/imports/999999/retry", {"headers": {"Content-Type": JSON}}, 404, "not_found"),
        ("POST", "/imports/{id}/retry", "/imports/999999/retry", {}, 415, "unsupported_media_type"),
        (
            "POST",
            "/imports/{id}/retry",
            "/imports/999999/retry",
            {"data": "[1]", "headers": {"Content-Type": JSON}},
            400,
            "invalid_json",
        ),
        (
            "POST",
            "/imports/{id}/retry",
            "/imports/999999/retry",
            {"json": {}, "headers": {"Sec-Fetch-Site": "cross-site"}},
            403,
            "csrf_failed",
        ),
        ("POST", "/imports/{id}/cancel", "/imports/999999/cancel", {"json": {}}, 404, "not_found"),
        (
            "POST",
            "/imports/{id}/cancel",
            "/imports/999999/cancel",
            {"data": b"", "headers": {"Content-Type": "text/plain"}},
            415,
            "unsupported_media_type",
        ),
    ],
)
async def test_errors_fit_the_document(
    client: Any, method: str, path: str, url: str, kwargs: dict[str, Any], status: int, code: str | None
) -> None:
    answered, body = await Contract(build_document(auth_required=False)).call(client, method, path, url, **kwargs)
    assert answered == status
    if code is not None:
        assert body["error"]["code"] == code


async def test_token_protected_server_documents_and_enforces_bearer_auth(
    app_settings: AppSettings, aiohttp_client: Any
) -> None:
    client = await aiohttp_client(create_app(app_settings.replace(api_token=Secret("s3cret")), run_worker=False))
    doc = await (await client.get("/openapi.json")).json()
    assert doc == build_document(auth_required=True)
    contract = Contract(doc)
    for path, url in (
        ("/import/google-drive", "/import/google-drive"),
        ("/imports/{id}/retry", "/imports/1/retry"),
        ("/imports/{id}/cancel", "/imports/1/cancel"),
    ):
        status, body = await contract.call(client, "POST", path, url, json={})
        assert (status, body["error"]["code"]) == (401, "unauthorized")
    status, _ = await contract.call(
        client,
        "POST",
        "/imports/{id}/cancel",
        "/imports/1/cancel",
        headers={"Authorization": "Bearer s3cret", "Content-Type": JSON},
    )
    assert status == 404
    status, _ = await contract.call(client, "GET", "/imports", "/imports")
    assert status == 200
