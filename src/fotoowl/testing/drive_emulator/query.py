"""Queries, ranges, times: the `q` subset a folder walk uses, Range headers, RFC 3339 times and the
resource-keys header."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime


@dataclass(frozen=True, slots=True)
class ListQuery:
    parent_id: str | None
    trashed: bool | None


_AND_RE = re.compile(r"\s+and\s+", re.IGNORECASE)
_PARENTS_TERM_RE = re.compile(r"'((?:[^'\\]|\\.)*)'\s+in\s+parents", re.IGNORECASE)
_TRASHED_TERM_RE = re.compile(r"trashed\s*(=|!=)\s*(true|false)", re.IGNORECASE)


def _split_on_and(q: str) -> list[str]:
    """Split on `and` outside single-quoted strings (which escape with a backslash)."""
    terms: list[str] = []
    start = position = 0
    quoted = False
    while position < len(q):
        char = q[position]
        if quoted:
            position += 2 if char == "\\" else 1
            quoted = char != "'"
            continue
        if char == "'":
            quoted = True
        elif match := _AND_RE.match(q, position):
            terms.append(q[start:position])
            start = position = match.end()
            continue
        position += 1
    if quoted:
        raise ValueError("unterminated string")
    terms.append(q[start:])
    return terms


def parse_query(q: str) -> ListQuery:
    """The subset of the `q` language a folder walk uses: `'<id>' in parents` and `trashed = <bool>`."""
    parent_id: str | None = None
    trashed: bool | None = None
    for term in _split_on_and(q.strip()):
        term = term.strip()
        if match := _PARENTS_TERM_RE.fullmatch(term):
            if parent_id is not None:
                raise ValueError("only one parent is supported")
            parent_id = re.sub(r"\\(.)", r"\1", match.group(1))
        elif match := _TRASHED_TERM_RE.fullmatch(term):
            value = match.group(2).lower() == "true"
            trashed = value if match.group(1) == "=" else not value
        else:
            raise ValueError(f"unsupported query term {term!r}")
    return ListQuery(parent_id, trashed)


_RANGE_RE = re.compile(r"bytes=(\d*)-(\d*)")


def parse_range(header: str, size_bytes: int) -> tuple[int, int] | None:
    """[start, end) for a single `bytes=` range, or None when unsatisfiable or malformed."""
    match = _RANGE_RE.fullmatch(header.strip())
    if match is None or size_bytes == 0:
        return None
    first, last = match.groups()
    if not first:
        if not last:
            return None
        return max(0, size_bytes - int(last)), size_bytes
    start = int(first)
    end = min(size_bytes, int(last) + 1) if last else size_bytes
    return (start, end) if start < size_bytes and start < end else None


def rfc3339(moment: datetime) -> str:
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _parse_resource_keys(header: str | None) -> dict[str, str]:
    keys: dict[str, str] = {}
    for part in (header or "").split(","):
        item_id, _, key = part.strip().partition("/")
        if item_id and key:
            keys[item_id] = key
    return keys
