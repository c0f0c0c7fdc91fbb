"""The Scale section of bench/RESULTS.md, from the raw figures of one `python -m bench --scale` run."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.report import machine
from bench.scale_cases import Case
from bench.scale_load import CaseLatency

HEADING = "## Scale"
IMAGES_P99_MS = 20.0
GALLERY_P99_MS = 50.0
WORKER_RSS_MB = 200.0
LISTING_FACTOR = 1.2


def _latencies(out: dict[str, Any]) -> dict[tuple[str, str], CaseLatency]:
    found = {}
    for item in out.get("latencies", []):
        case = Case(item["label"], item["path"], item["params"], item["group"])
        latency = CaseLatency(case, item["phase"], item["samples_ms"], item["errors"], item["rows"])
        found[(item["label"], item["phase"])] = latency
    return found


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.1f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def _query(case: Case) -> str:
    shown = {k: v for k, v in case.params.items() if k != "limit"}
    if "cursor" in shown:
        shown["cursor"] = "…"
    text = "&".join(f"{k}={v}" for k, v in shown.items())
    return f"`{case.path}{'?' + text if text else ''}`".replace("|", "\\|")


def _latency_table(found: dict[tuple[str, str], CaseLatency], groups: tuple[str, ...]) -> tuple[str, list[str]]:
    """The table, and the labels over their target idle."""
    rows, over = [], []
    labels = [label for (label, phase), r in found.items() if phase == "idle" and r.case.group in groups]
    for label in labels:
        idle, during = found[(label, "idle")], found.get((label, "during import"))
        limit = IMAGES_P99_MS if idle.case.group == "images" else GALLERY_P99_MS
        judged = idle.case.group in ("images", "gallery")
        if judged and not idle.p99 <= limit:
            over.append(label)
        rows.append(
            [
                label,
                _query(idle.case),
                "-" if idle.rows is None else str(idle.rows),
                _ms(idle.p50),
                ("**" + _ms(idle.p99) + "**") if label in over else _ms(idle.p99),
                _ms(during.p50) if during else "-",
                _ms(during.p99) if during else "-",
                str(idle.errors + (during.errors if during else 0)),
            ]
        )
    header = ["case", "request", "rows", "idle p50", "idle p99", "import p50", "import p99", "errors"]
    return _table(header, rows), over


def section(out: dict[str, Any]) -> str:
    seed, pg, big, during = out["seed"], out["postgres"], out.get("big", {}), out.get("during", {})
    found = _latencies(out)
    images, images_over = _latency_table(found, ("images",))
    pages, pages_over = _latency_table(found, ("pages", "gallery"))
    gallery = [r for (label, phase), r in found.items() if phase == "idle" and r.case.group == "gallery"]
    idle_images = [r for (label, phase), r in found.items() if phase == "idle" and r.case.group == "images"]
    worst = max(idle_images, key=lambda r: r.p99)
    gallery_worst = max(gallery, key=lambda r: r.p99)
    expected_s = big["list_requests"] * big["latency_s"]
    listing_ok = big["listing_s"] <= LISTING_FACTOR * expected_s
    rows_per_s = big["files"] / big["total_s"] if big.get("total_s") else math.nan

    def verdict(ok: bool) -> str:
        return "pass" if ok else "**FAIL**"

    targets = [
        [
            f"every `GET /images` case, idle: p99 ≤ {IMAGES_P99_MS:.0f} ms",
            f"worst {worst.p99:.1f} ms ({worst.case.label}); over: {len(images_over)} of {len(idle_images)}",
            verdict(not images_over),
        ],
        [
            f"gallery page, idle: p99 ≤ {GALLERY_P99_MS:.0f} ms",
            f"worst {gallery_worst.p99:.1f} ms ({gallery_worst.case.label})",
            verdict(not [label for label in pages_over if found[(label, "idle")].case.group == "gallery"]),
        ],
        [
            f"{big['files']:,}-file import: worker peak RSS ≤ {WORKER_RSS_MB:.0f} MB",
            f"{big['peak_rss_mb']:.0f} MB (its preview process, apart: {big.get('preview_process_rss_mb', 0):.0f} MB)",
            verdict(big["peak_rss_mb"] <= WORKER_RSS_MB),
        ],
        [
            f"its listing ≤ {LISTING_FACTOR} x requests x emulator latency",
            f"{big['listing_s']:.1f} s vs {big['list_requests']} x {big['latency_s'] * 1000:.0f} ms = "
            f"{expected_s:.1f} s ({big['listing_s'] / expected_s:.2f}x)",
            verdict(listing_ok),
        ],
    ]
    mib = 1024 * 1024
    lines = [
        HEADING,
        "",
        f"- Command: `{out['command']}` (`make bench-scale`); date {out['date']}; wall time "
        f"{out['wall_s'] / 60:.1f} min; fotoowl {out['version']}",
        f"- Machine: {machine()}",
        f"- PostgreSQL: {pg['where']}, {seed['version'].split(' on ')[0]}, database collation {pg['collation']}, "
        f"trigram index (pg_trgm): {'yes' if seed['trigram'] else 'no'}",
        f"- Data: {seed['facts']['images']:,} images COPYed in {seed['seconds']:.0f} s (with their import items and "
        f"indexes, then VACUUM ANALYZE): {seed['described']}; images table {seed['table_bytes'] / mib:,.0f} MiB, "
        f"its indexes {seed['index_bytes'] / mib:,.0f} MiB.",
        f"- Latency: `fotoowl serve --no-worker` (server peak RSS {out.get('server_peak_rss_mb', 0):.0f} MB), one "
        "client over HTTP, one request at a time, every case once per round after one untimed round. Idle: "
        f"{out['idle_rounds']} rounds, started once the machine's 1-minute load average was "
        f"{out.get('idle_load_before', math.nan):.1f} (it waits up to 20 min for ≤ 1.0), "
        f"{out.get('idle_load', math.nan):.1f} at its end. During import: while one `arq` worker process imported "
        f"{out['plan']['during_files']:,} photos (~200 KB each) from the Drive emulator "
        f"({out['plan']['latency_s'] * 1000:.0f} ms per request), {during.get('rounds', 0)} rounds in its "
        f"{during.get('seconds', 0):.0f} s"
        f"{' (' + during['problem'] + ')' if during.get('problem') else ''}. p99 is the nearest-rank 99th "
        "percentile. `GET /images` cases ask for `limit=100`.",
        f"- Big import: {big['files']:,} tiny files ({big['bytes'] / 1e6:,.0f} MB) into the same database by a "
        f"fresh worker process, {big['latency_s'] * 1000:.0f} ms per emulator request, the Drive pacer raised "
        f"(FOTOOWL_DRIVE_RATE_PER_S=100000) so its {2 * big['files']:,} requests take minutes; "
        f"{big['total_s']:.0f} s end to end ({rows_per_s:.0f} files/s; {_counts(big.get('counts', {}))}); "
        f"the worker logged {big.get('logged_pages')} listing pages"
        f"{' — ' + big['problem'] if big.get('problem') else ''}.",
        "",
        "### Targets",
        "",
        _table(["target", "measured", "result"], targets),
        "",
        "### GET /images (ms)",
        "",
        images,
        "",
        "### Pages (ms)",
        "",
        pages,
        "",
    ]
    return "\n".join(lines)


def _counts(counts: dict[str, int]) -> str:
    names = ("found", "imported", "deduplicated", "skipped", "unchanged", "failed")
    return ", ".join(f"{name} {counts[name + '_count']:,}" for name in names if counts.get(name + "_count"))


def write_section(path: Path, text: str) -> None:
    """Replace the Scale section of `path` (up to the next `## ` heading), or append it."""
    existing = path.read_text() if path.exists() else ""
    pattern = re.compile(rf"^{re.escape(HEADING)}\n.*?(?=^## |\Z)", re.S | re.M)
    body = text.rstrip("\n") + "\n"
    if pattern.search(existing):
        updated = pattern.sub(lambda _: body + "\n", existing, count=1)
    else:
        updated = existing.rstrip("\n") + "\n\n" + body
    path.write_text(updated.rstrip("\n") + "\n")
