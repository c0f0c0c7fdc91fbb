"""Reading what clients send: numbers, ids, cursors, text bound for PostgreSQL, and JSON bodies.

Each reader refuses bad input with a 4xx ApiError before it reaches `int()`, the database or the JSON
parser's recursion, so malformed requests never surface as 500s.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from fotoowl.web.errors import ApiError

# `int()` also takes " 1", "+1", "1_0" and Arabic-Indic digits, isdigit() passes "²", and both choke
# on 5,000 digits: ids and counts are plain ASCII digits, bounded before conversion.
_DIGITS = re.compile(r"[0-9]+")
_CANONICAL_ID = re.compile(r"[1-9][0-9]{0,18}")
INT64_MAX = 2**63 - 1
JSON_TYPE = "application/json"


def parse_count(raw: str) -> int | None:
    """A whole number written in ASCII digits that fits PostgreSQL's bigint; None for anything else."""
    if not _DIGITS.fullmatch(raw):
        return None
    digits = raw.lstrip("0") or "0"
    if len(digits) > 19:
        return None
    value = int(digits)
    return value if value <= INT64_MAX else None


def int_param(
    request: web.Request,
    name: str,
    default: int | None = None,
    *,
    lo: int = 1,
    hi: int = 2**62,
    blank_is_absent: bool = False,
) -> int | None:
    """`blank_is_absent` for pages, whose GET forms send every field, filled or not."""
    raw = request.query.get(name)
    if raw is None or (raw == "" and blank_is_absent):
        return default
    if not _DIGITS.fullmatch(raw):
        raise ApiError(400, "invalid_parameter", f"'{name}' must be a whole number.")
    value = parse_count(raw)
    if value is None or not lo <= value <= hi:
        raise ApiError(400, "invalid_parameter", f"'{name}' must be between {lo} and {hi}.")
    return value


def path_id(request: web.Request, name: str = "id", message: str = "No such resource.") -> int:
    """The id in the URL, spelled exactly as the API writes ids: anything else names nothing (404)."""
    raw = request.match_info[name]
    if not _CANONICAL_ID.fullmatch(raw) or int(raw) > INT64_MAX:
        raise ApiError(404, "not_found", message)
    return int(raw)


# --- cursors ------------------------------------------------------------------------------------


def encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"id": last_id}).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    invalid = ApiError(400, "invalid_cursor", "'cursor' is not a cursor this API gave out.")
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error, RecursionError):
        raise invalid from None
    value = data.get("id") if isinstance(data, dict) else None
    # `type is int`: True, 1.5, "5" and inf are not ids; the range is what PostgreSQL's bigint holds.
    if type(value) is not int or not 0 <= value <= INT64_MAX:
        raise invalid
    return value


# --- text ---------------------------------------------------------------------------------------


def storable(text: str) -> bool:
    """PostgreSQL text holds neither NUL nor the unpaired surrogates JSON's \\ud800 escapes produce."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def text_param(request: web.Request, name: str, *, max_chars: int | None = None) -> str:
    value = request.query.get(name, "")
    if not storable(value):
        raise ApiError(400, "invalid_parameter", f"'{name}' contains a character that is not allowed (NUL).")
    if max_chars is not None and len(value) > max_chars:
        raise ApiError(400, "invalid_parameter", f"'{name}' is longer than {max_chars} characters.")
    return value


def flag_param(request: web.Request, name: str) -> bool:
    """A yes/no query parameter: true/false (or 1/0); absent or empty is false."""
    value = request.query.get(name, "").strip().lower()
    if value in ("", "false", "0"):
        return False
    if value in ("true", "1"):
        return True
    raise ApiError(400, "invalid_parameter", f"'{name}' must be true or false.")


# --- JSON bodies --------------------------------------------------------------------------------


def require_json(request: web.Request) -> None:
    """Writes take JSON only: a cross-site HTML form can send text/plain, urlencoded or multipart
    without a preflight, never application/json."""
    if request.content_type != JSON_TYPE:
        raise ApiError(415, "unsupported_media_type", "Send the request with 'Content-Type: application/json'.")
    charset = request.charset
    if charset is not None and charset.lower() not in ("utf-8", "utf8"):
        raise ApiError(400, "invalid_json", f"JSON bodies are UTF-8; charset={charset[:40]!r} is not supported.")


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


async def json_object(request: web.Request, *, optional: bool = False) -> dict[str, Any]:
    """The body, a JSON object; with `optional`, an empty body is an empty object."""
    require_json(request)
    raw = await request.read()
    if optional and not raw.strip():
        return {}
    try:
        body = json.loads(raw.decode("utf-8"), parse_constant=_no_constants)
    except (ValueError, RecursionError):
        # ValueError covers bad UTF-8 and bad JSON; RecursionError very deep nesting.
        raise ApiError(400, "invalid_json", "The request body must be JSON.") from None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_json", "The request body must be a JSON object.")
    return body


Body = TypeVar("Body", bound=BaseModel)
_EXPECTED = {"string_type": "a string", "bool_type": "true or false", "int_type": "a whole number"}


def parse_body(model: type[Body], data: dict[str, Any], *, value_codes: dict[str, str] | None = None) -> Body:
    """The body as `model`, or a 422 in the error shape naming the first field that is wrong.

    `value_codes`: the code for a field whose value is of the right type but unusable (the caller's
    own vocabulary, e.g. an unusable link is `invalid_folder_url` wherever it is caught)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        kind = first["type"]
        if kind == "missing":
            raise ApiError(422, "missing_field", f"'{field}' is required.") from None
        expected = _EXPECTED.get(kind)
        if kind == "string_too_long":
            limit = (first.get("ctx") or {}).get("max_length")
            message = f"'{field}' is longer than {limit} characters."
        else:
            message = f"'{field}' must be {expected}." if expected else f"'{field}': {first['msg']}."
        code = (value_codes or {}).get(field, "invalid_field") if expected is None else "invalid_field"
        raise ApiError(422, code, message) from None
