"""The scale benchmark's measurements: request latencies per case, and a big import's listing."""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp

from bench.manifest import Manifest
from bench.scale_cases import Case


@dataclass
class CaseLatency:
    case: Case
    phase: str  # "idle" or "during import"
    samples_ms: list[float] = field(default_factory=list)
    errors: int = 0
    rows: int | None = None  # images in a /images answer (the first one)

    def quantile(self, q: float) -> float:
        if not self.samples_ms:
            return math.nan
        ordered = sorted(self.samples_ms)
        # Nearest rank: the p99 of 200 samples is the 2nd largest, never an interpolation below it.
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]

    @property
    def p50(self) -> float:
        return self.quantile(0.50)

    @property
    def p99(self) -> float:
        return self.quantile(0.99)

    def to_json(self) -> dict[str, object]:
        return {
            "label": self.case.label,
            "path": self.case.path,
            "params": self.case.params,
            "group": self.case.group,
            "phase": self.phase,
            "samples_ms": [round(s, 3) for s in self.samples_ms],
            "errors": self.errors,
            "rows": self.rows,
        }


async def _get(session: aiohttp.ClientSession, base: str, case: Case) -> tuple[float, int, int | None]:
    started = time.perf_counter()
    async with session.get(base + case.path, params=case.params) as response:
        if case.path == "/images" and response.status == 200:
            rows: int | None = len((await response.json())["images"])
        else:
            await response.read()
            rows = None
    return (time.perf_counter() - started) * 1000, response.status, rows


async def measure(
    session: aiohttp.ClientSession,
    base: str,
    cases: list[Case],
    phase: str,
    *,
    rounds: int,
    max_s: float,
    until: Callable[[], bool] | None = None,
    think_s: float = 0.0,
) -> tuple[list[CaseLatency], int]:
    """One client, one request at a time: every case once per round, in order, for `rounds` rounds
    (or until `until()` or `max_s`). Returns the latencies and the rounds completed."""
    results = [CaseLatency(case, phase) for case in cases]
    deadline = time.monotonic() + max_s
    done = 0
    while done < rounds and time.monotonic() < deadline and not (until and until()):
        for result in results:
            ms, status, rows = await _get(session, base, result.case)
            if status == 200:
                result.samples_ms.append(ms)
                if result.rows is None:
                    result.rows = rows
            else:
                result.errors += 1
            if think_s:
                await asyncio.sleep(think_s)
        done += 1
    return results, done


def drive_list_requests(manifest: Manifest, page_size: int = 1000) -> int:
    """Requests a Drive listing of the folder makes, one after the other: the root folder's metadata,
    then per folder its pages of files and subfolders (at least one page each)."""
    folders = {""}
    for f in manifest.files:
        path = f.folder_path
        while path and path not in folders:
            folders.add(path)
            path = _parent(path)
    entries = Counter(f.folder_path for f in manifest.files)
    for path in folders - {""}:
        entries[_parent(path)] += 1
    return 1 + sum(max(1, math.ceil(entries[path] / page_size)) for path in folders)


def _parent(path: str) -> str:
    return path.rsplit("/", 1)[0] if "/" in path else ""
