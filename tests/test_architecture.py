"""The shape of the code, pinned: no import circle, no module over ~400 lines, no two classes with one
name, the pipeline's stages as its file names, and one status enum that the SQL checks agree with."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

from fotoowl.statuses import ImportStatus, ItemStatus

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "fotoowl"
SQL = Path(__file__).resolve().parents[1] / "sql"
MAX_LINES = 430


def modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        yield name, path


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Every fotoowl module this one imports, at any depth of the file (function-level included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert not node.level, f"{name}: relative import (the code imports absolutely)"
            base = node.module or ""
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(t for t in targets if t in known and t != name)
    return found


def test_no_import_circle() -> None:
    graph = {name: set[str]() for name, _ in modules()}
    for name, path in modules():
        graph[name] = imports_of(name, path, set(graph))
    # A package's __init__ importing nothing is what keeps `from fotoowl.pipeline import x` acyclic.
    visiting: list[str] = []
    done: set[str] = set()

    def visit(node: str) -> None:
        if node in done:
            return
        assert node not in visiting, "import circle: " + " -> ".join([*visiting[visiting.index(node) :], node])
        visiting.append(node)
        for nxt in sorted(graph[node]):
            visit(nxt)
        visiting.pop()
        done.add(node)

    for node in sorted(graph):
        visit(node)


def test_no_module_is_too_long() -> None:
    long = {name: n for name, path in modules() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_no_two_classes_share_a_name() -> None:
    seen: dict[str, str] = {}
    clashes = []
    for name, path in modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                if node.name in seen and seen[node.name] != name:
                    clashes.append(f"{node.name}: {seen[node.name]} and {name}")
                seen[node.name] = name
    assert not clashes, clashes


def test_the_pipeline_reads_by_its_file_names() -> None:
    stages = {p.stem for p in (PACKAGE / "pipeline").glob("*.py")}
    assert {"listing", "claims", "transfer", "previews", "finalise", "sweeper", "limits"} <= stages


def test_status_checks_in_sql_list_the_enums() -> None:
    # In migration order: a later migration replaces a table's CHECK with its own, so the last one
    # listing imports' (queued) and items' (pending) statuses is the one in force.
    sql = "\n".join(p.read_text() for p in sorted(SQL.glob("*.sql")))
    checks = re.findall(r"CHECK \(status IN \(([^)]*)\)\)", sql, flags=re.S)
    listed = [{v.strip().strip("'") for v in check.split(",")} for check in checks]
    assert [c for c in listed if "queued" in c][-1] == {status.value for status in ImportStatus}
    assert [c for c in listed if "pending" in c][-1] == {status.value for status in ItemStatus}


def test_only_the_registry_knows_the_sources() -> None:
    """The pipeline, the worker, the API, the pages and the CLI reach sources through sources/base.py."""
    known = {name for name, _ in modules()}
    specific = ("fotoowl.sources.google_drive", "fotoowl.sources.dropbox")
    offenders = []
    for name, path in modules():
        if not name.startswith(("fotoowl.pipeline", "fotoowl.web", "fotoowl.worker", "fotoowl.cli")):
            continue
        offenders += [f"{name} -> {target}" for target in imports_of(name, path, known) if target.startswith(specific)]
    assert not offenders, offenders
