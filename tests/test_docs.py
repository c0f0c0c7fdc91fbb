"""docs/postman_collection.json and docs/curl.md cover exactly the operations of the OpenAPI document."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fotoowl.web.openapi import build_document
from test_openapi import Contract, documented

ROOT = Path(__file__).resolve().parents[1]
POSTMAN_SCHEMA = "https://schema.getpostman.com/json/collection/v2.1.0/collection.json"
SECTION = re.compile(r"^### `(GET|POST|PUT|PATCH|DELETE) (/\S*)`$", re.MULTILINE)
ANSWER = re.compile(r"^Answer `(\d{3})`:\n\n(?:```(\w+)\n(.*?)\n```)?", re.MULTILINE | re.DOTALL)
SH_BLOCK = re.compile(r"^```sh\n(.*?)\n```", re.MULTILINE | re.DOTALL)


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    # The token-protected variant: it marks which operations are writes.
    return build_document(auth_required=True)


@pytest.fixture(scope="module")
def operations(doc: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return documented(doc)


# --- Postman --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def collection() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((ROOT / "docs" / "postman_collection.json").read_text())
    return data


def requests(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for item in items:
        if "item" in item:
            yield from requests(item["item"])
        else:
            yield item


def postman_key(request: dict[str, Any]) -> tuple[str, str]:
    segments = [f"{{{s[1:]}}}" if s.startswith(":") else s for s in request["url"]["path"]]
    return request["method"], "/" + "/".join(segments)


def test_postman_collection_is_v21_with_base_url_and_token(collection: dict[str, Any]) -> None:
    assert collection["info"]["schema"] == POSTMAN_SCHEMA
    assert collection["info"]["name"] == "fotoowl"
    variables = {v["key"]: v["value"] for v in collection["variable"]}
    assert variables["baseUrl"] == "http://localhost:8000"
    assert "token" in variables


def test_postman_has_every_operation_and_nothing_else(
    collection: dict[str, Any], operations: dict[tuple[str, str], dict[str, Any]]
) -> None:
    keys = [postman_key(item["request"]) for item in requests(collection["item"])]
    assert len(keys) == len(set(keys)), "a request appears twice"
    assert set(operations) - set(keys) == set(), "operations without a Postman request"
    assert set(keys) - set(operations) == set(), "Postman requests the API does not have"


def test_postman_requests_are_well_formed(
    collection: dict[str, Any], operations: dict[tuple[str, str], dict[str, Any]]
) -> None:
    names = [item["name"] for item in requests(collection["item"])]
    assert len(names) == len(set(names))
    defined = {v["key"] for v in collection["variable"]}
    for item in requests(collection["item"]):
        request = item["request"]
        url = request["url"]
        op = operations[postman_key(request)]
        assert url["host"] == ["{{baseUrl}}"]
        assert url["raw"].split("?")[0] == "{{baseUrl}}/" + "/".join(url["path"])
        path_vars = {s[1:] for s in url["path"] if s.startswith(":")}
        assert {v["key"] for v in url.get("variable", [])} == path_vars, item["name"]
        used = set(re.findall(r"\{\{(\w+)\}\}", json.dumps(request)))
        assert used <= defined, (item["name"], used - defined)
        if "security" in op:
            assert request["auth"] == {
                "type": "bearer",
                "bearer": [{"key": "token", "value": "{{token}}", "type": "string"}],
            }, item["name"]
        else:
            assert "auth" not in request, item["name"]


def test_postman_body_fits_the_request_schema(collection: dict[str, Any], doc: dict[str, Any]) -> None:
    contract = Contract(doc)
    (start,) = [
        item["request"]
        for item in requests(collection["item"])
        if postman_key(item["request"]) == ("POST", "/import/google-drive")
    ]
    assert start["body"]["mode"] == "raw"
    body = json.loads(start["body"]["raw"])
    contract.validate(body, "#/paths/~1import~1google-drive/post/requestBody/content/application~1json/schema")


# --- curl.md --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def curl_sections() -> dict[tuple[str, str], str]:
    text = (ROOT / "docs" / "curl.md").read_text()
    matches = list(SECTION.finditer(text))
    sections: dict[tuple[str, str], str] = {}
    for match, following in zip(matches, [*matches[1:], None], strict=True):
        end = following.start() if following else len(text)
        key = (match.group(1), match.group(2))
        assert key not in sections, f"{key} has two sections"
        sections[key] = text[match.end() : end]
    return sections


def test_curl_md_has_every_operation_and_nothing_else(
    curl_sections: dict[tuple[str, str], str], operations: dict[tuple[str, str], dict[str, Any]]
) -> None:
    assert set(operations) - set(curl_sections) == set(), "operations without a cURL example"
    assert set(curl_sections) - set(operations) == set(), "cURL examples the API does not have"


def test_curl_examples_call_their_endpoint(
    curl_sections: dict[tuple[str, str], str], operations: dict[tuple[str, str], dict[str, Any]]
) -> None:
    for (method, path), section in curl_sections.items():
        commands = SH_BLOCK.findall(section)
        assert len(commands) == 1, (method, path)
        command = commands[0]
        assert command.startswith("curl "), (method, path)
        url = re.escape("http://localhost:8000" + path).replace(r"\{id\}", r"\d+")
        assert re.search(url + r"(?=[\s'?]|$)", command), (method, path, command)
        assert ("-X POST" in command) == (method == "POST"), (method, path)
        secured = "security" in operations[(method, path)]
        assert ("Authorization: Bearer $FOTOOWL_API_TOKEN" in command) == secured, (method, path)


def test_curl_sample_answers_fit_the_document(curl_sections: dict[tuple[str, str], str], doc: dict[str, Any]) -> None:
    contract = Contract(doc)
    checked = 0
    for (method, path), section in curl_sections.items():
        answers = ANSWER.findall(section)
        assert answers, f"{method} {path} shows no answer"
        for status, language, body in answers:
            response, _ = contract.response(method, path, int(status))
            if language == "json":
                contract.check(method, path, int(status), json.loads(body))
                checked += 1
            else:
                assert "application/json" not in response.get("content", {}) or path == "/openapi.json", (
                    f"{method} {path} {status} answers JSON: show it as a json block"
                )
    assert checked >= 15
