"""What a contender run produces."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

MB = 1_000_000


@dataclass
class Row:
    contender: str
    images: int
    bytes: int
    seconds: float
    ok: bool = True
    peak_rss_kib: list[int] = field(default_factory=list)  # one per process, where measured
    # Of the processes those started (a worker's preview process), where measured.
    child_rss_kib: list[int] = field(default_factory=list)
    note: str = ""
    kind: str = ""  # "fotoowl", "naive", "limit", "rclone", "memory", "scaling"
    in_flight: int = 0  # files in flight, for rows that have a fixed number
    cpu_s: dict[str, float] = field(default_factory=dict)  # CPU seconds per process group during the run
    variant: str = ""  # fotoowl rows: "" = product defaults, else which settings were changed
    # fotoowl rows: from the import's creation until its last preview was recorded (previews follow the
    # import, which `seconds` times); 0 = not measured.
    previews_seconds: float = 0.0
    # fotoowl rows: previews made (or known impossible) by the time the import completed.
    previews_with_originals: int = 0

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    @property
    def mb_per_s(self) -> float:
        return self.bytes / MB / self.seconds if self.seconds > 0 else 0.0

    @property
    def peak_rss_mb(self) -> float | None:
        return max(self.peak_rss_kib) * 1024 / MB if self.peak_rss_kib else None


@dataclass
class Latency:
    endpoint: str
    phase: str  # "idle" or "during import"
    samples_ms: list[float]
    errors: int = 0

    def percentile(self, q: float) -> float:
        if not self.samples_ms:
            return float("nan")
        ordered = sorted(self.samples_ms)
        # Nearest-rank percentile: p99 of 200 samples is the 198th value.
        rank = max(1, -(-len(ordered) * q // 100))
        return ordered[int(rank) - 1]

    @property
    def p50(self) -> float:
        return self.percentile(50)

    @property
    def p99(self) -> float:
        return self.percentile(99)


@dataclass
class ApiLoad:
    latencies: list[Latency]
    import_row: Row | None
    note: str = ""


@dataclass
class Results:
    rows: list[Row] = field(default_factory=list)
    memory: list[Row] = field(default_factory=list)
    scaling: list[Row] = field(default_factory=list)  # 1 and 2 workers on a latency-bound folder
    api: ApiLoad | None = None
    notes: list[str] = field(default_factory=list)

    def find(self, contender: str) -> Row | None:
        return next((row for row in self.rows if row.contender == contender), None)


def to_json(results: Results, **meta: Any) -> dict[str, Any]:
    return {"meta": meta, "results": asdict(results)}


def from_json(data: dict[str, Any]) -> tuple[Results, dict[str, Any]]:
    """The inverse of to_json, for re-rendering a report without re-running (`--report-from`)."""
    raw = data["results"]
    api = raw.get("api")
    return Results(
        rows=[Row(**row) for row in raw["rows"]],
        memory=[Row(**row) for row in raw["memory"]],
        scaling=[Row(**row) for row in raw.get("scaling", [])],
        api=None
        if api is None
        else ApiLoad(
            latencies=[Latency(**lat) for lat in api["latencies"]],
            import_row=Row(**api["import_row"]) if api.get("import_row") else None,
            note=api.get("note", ""),
        ),
        notes=list(raw["notes"]),
    ), data["meta"]
