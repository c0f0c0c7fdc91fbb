"""The OpenAPI 3.1 description of the JSON API, served at GET /openapi.json.

The schemas are generated from the pydantic models the handlers answer with (fotoowl.models); the
paths, parameters and error answers are a small table kept here. Schemas are strict (every field
required, no others allowed), so the tests that validate real answers against them catch any drift.
"""

from __future__ import annotations

import copy
import functools
import json
from importlib import metadata
from types import ModuleType
from typing import Any

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from fotoowl.models import SCHEMA_MODELS, ImportRequest
from fotoowl.web import openapi_paths, openapi_sync, openapi_webhooks
from fotoowl.web.keys import SETTINGS
from fotoowl.web.openapi_parts import PARAMETERS, RESPONSES, response_ref
from fotoowl.web.params import INT64_MAX

Schema = dict[str, Any]

JSON = "application/json"
# Modules describing a part of the API of their own: `MODELS` (schemas), `paths(auth_required)` and,
# optionally, `WEBHOOKS` (what the server sends: OpenAPI 3.1 webhooks).
EXTENSIONS: tuple[ModuleType, ...] = (openapi_sync, openapi_webhooks)


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


STRING: Schema = {"type": "string"}
# What a URL may name: PostgreSQL's bigint.
ID_PARAM: Schema = {"type": "integer", "minimum": 1, "maximum": INT64_MAX}


def schemas() -> dict[str, Schema]:
    """Generated from the models in fotoowl.models: bodies as they are validated, answers as they are
    written (every field required, no other field allowed)."""
    # Bodies are described as they are validated; everything else as it is written.
    requests = {ImportRequest, *(m for ext in EXTENSIONS for m in getattr(ext, "REQUESTS", ()))}
    pairs: list[tuple[type[BaseModel], JsonSchemaMode]] = [
        (model, "validation" if model in requests else "serialization")
        for model in (*SCHEMA_MODELS, *(m for ext in EXTENSIONS for m in ext.MODELS))
    ]
    _, top = models_json_schema(pairs, ref_template="#/components/schemas/{model}")
    return {name: _without_titles(schema) for name, schema in top["$defs"].items()}


def _without_titles(schema: Any) -> Any:
    """Pydantic titles every schema after its Python name; the document's names say it already."""
    if isinstance(schema, dict):
        return {k: _without_titles(v) for k, v in schema.items() if not (k == "title" and isinstance(v, str))}
    if isinstance(schema, list):
        return [_without_titles(v) for v in schema]
    return schema


def build_document(*, auth_required: bool) -> dict[str, Any]:
    """The document; `auth_required` marks the write endpoints as needing the bearer token."""
    operations = openapi_paths.operations(auth_required)
    for ext in EXTENSIONS:
        for path, methods in ext.paths(auth_required).items():
            operations.setdefault(path, {}).update(methods)
    for path_item in operations.values():
        for op in path_item.values():
            op["responses"].setdefault("500", response_ref("Internal"))
            op["responses"].setdefault("503", response_ref("Unavailable"))
    auth_note = "This server requires it." if auth_required else "This server has none set, so they are open."
    # A deep copy: the shared constants above must not change when a caller edits its document.
    return copy.deepcopy(
        {
            "openapi": "3.1.0",
            "jsonSchemaDialect": "https://spec.openapis.org/oas/3.1/dialect/base",
            "info": {
                "title": "fotoowl",
                "version": _version(),
                "description": "Copies every image of a public Google Drive folder into S3-compatible storage, "
                "with metadata in PostgreSQL. Lists are keyset-paginated: pass `next_cursor` back "
                "as `cursor`. Write endpoints take `Content-Type: application/json` only, even "
                "without a body, refuse what a browser marks as cross-site, and need "
                "`Authorization: Bearer <token>` when the server sets FOTOOWL_API_TOKEN. "
                f"{auth_note}",
            },
            "tags": [
                {"name": "imports"},
                {"name": "images"},
                {"name": "watches"},
                {"name": "operations"},
                {"name": "webhooks"},
            ],
            "paths": operations,
            "webhooks": {name: op for ext in EXTENSIONS for name, op in getattr(ext, "WEBHOOKS", {}).items()},
            "components": {
                "schemas": schemas(),
                "responses": RESPONSES,
                "parameters": PARAMETERS,
                "securitySchemes": {
                    "bearerAuth": {
                        "type": "http",
                        "scheme": "bearer",
                        "description": "The value of FOTOOWL_API_TOKEN; only checked when the server sets one.",
                    }
                },
            },
        }
    )


def _version() -> str:
    try:
        return metadata.version("fotoowl")
    except metadata.PackageNotFoundError:
        return "0.0.0"


@functools.cache
def _document_text(auth_required: bool) -> str:
    return json.dumps(build_document(auth_required=auth_required), indent=1)


async def openapi_json(request: web.Request) -> web.Response:
    text = _document_text(bool(request.app[SETTINGS].api_token))
    return web.Response(text=text, content_type="application/json")


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/openapi.json", openapi_json, name="openapi")
