"""RELIABILITY.md (or the quick run's RESULTS-quick.md): the table, then each scenario's timeline and evidence."""

from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict
from typing import Any

from chaos.runner import Outcome, Plan


def _yes(value: bool) -> str:
    return "yes" if value else "**no**"


def _row(o: Outcome) -> str:
    v = o.verdict
    finished = _yes(o.finished) + ("" if not o.finished or o.status == o.expected_status else f" ({o.status})")
    ratio = f"{o.ratio:.2f}x" if o.ratio is not None else "-"
    once = v.once_text() if v else "-"
    bad = (
        (str(v.bad_objects) if not v.bad_objects else f"**{v.bad_objects}**") + f" of {v.objects_read} read"
        if v
        else "-"
    )
    multipart = (str(len(v.open_multipart)) if not v.open_multipart else f"**{len(v.open_multipart)}**") if v else "-"
    counters = _yes(v.counters_equal) if v else "-"
    result = "pass" if o.passed else "**FAIL**"
    return (
        f"| {o.requirement} | {o.name} | {o.title} | {finished} | {o.seconds:.1f} / {o.bound_s:.0f} | {ratio} "
        f"| {once} | {bad} | {multipart} | {counters} | {_yes(o.workers_usable)} | {result} |"
    )


def _details(o: Outcome) -> list[str]:
    lines = [
        f"### ({o.requirement}) {o.name}: {'pass' if o.passed else 'FAIL'}",
        "",
        f"- Fault: {o.title}.",
        f"- Processes: {o.layout}.",
        f"- Final status: {o.status} (expected {o.expected_status}) after {o.seconds:.1f} s; bound "
        f"{o.bound_s:.0f} s; {o.web_errors} polls the web app could not answer.",
    ]
    if o.verdict is not None:
        lines.append(f"- Objects read back and MD5-checked: {o.verdict.objects_read}.")
    lines.append(f"- Workers usable: {o.probe_note or '-'}.")
    if o.problems:
        lines += ["", "Failed checks:", "", *(f"- {p}" for p in o.problems)]
    lines += ["", "Timeline (seconds from the import's creation):", "", "```", *o.timeline, "```"]
    if o.evidence:
        lines += ["", "Evidence:", ""]
        for item in o.evidence:
            lines.append(item if item.startswith("```") else f"- {item}")
    return [*lines, ""]


def document(
    outcomes: list[Outcome], plan: Plan, *, command: str, date: str, version: str, wall_s: float, manifest_bytes: int
) -> str:
    passed = sum(o.passed for o in outcomes)
    clean = next((o for o in outcomes if o.name == "clean"), None)
    f = plan.faults
    lines = [
        "# fotoowl reliability (chaos suite)" + (" — quick mode" if plan.quick else ""),
        "",
        f"- Date: {date}; fotoowl {version}",
        f"- Machine: {os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()} "
        f"{platform.release()}",
        f"- Command: `{command}`; wall time {wall_s / 60:.1f} min",
        f"- Result: **{passed} of {len(outcomes)} scenarios pass**",
        "",
        "## Setup",
        "",
        f"- Every scenario imports a folder of {plan.images:,} images ({manifest_bytes / 1e6:,.0f} MB: "
        f"20-60 KiB each, {plan.big} of 9-12 MiB so that multipart uploads happen) from the Drive emulator "
        f"in its own process ({plan.latency_s * 1000:.0f} ms per request), into SeaweedFS, through the web API "
        "(`POST /import/google-drive`, progress from `GET /imports/{id}`).",
        "- Separate processes: `fotoowl serve --no-worker`, 2 `fotoowl worker` (or `fotoowl serve` with embedded "
        "workers where marked), PostgreSQL, Valkey, SeaweedFS `weed mini`, the Drive emulator. fotoowl runs "
        "with product defaults (lease 300 s, default attempts); only the service URLs are set.",
        "- fotoowl reaches PostgreSQL, Valkey and S3 through fault proxies in the harness (fixed addresses), so a "
        "server restarted on another port is found again at the same address. Faults are real: signals to the "
        "server processes, a fresh Valkey with no jobs, 500s from the S3 proxy, faults served by the emulator.",
        f"- The fault is injected once {plan.trigger_fraction:.0%} of the files are done (Drive faults: from the "
        "start, so they reach the listing) and lifted by the harness; nothing of fotoowl is restarted or retried "
        "by hand (except the worker replacements of (d) and the restart of (e), which are the scenarios).",
        f"- Bound: the clean run's time + the fault's duration + {plan.slack_s:.0f} s"
        + (f" (clean run {clean.seconds:.1f} s)" if clean and clean.finished else "")
        + "."
        + (
            f" Quick mode shortens the faults: S3 {f.s3_pause_s:g}/{f.s3_down_s:g}/{f.s3_500_s:g} s, Valkey down "
            f"{f.redis_down_s:g} s, {f.kills} kills over {f.kill_window_s:g} s."
            if plan.quick
            else ""
        ),
        "- Checks after each scenario: final status within the bound; every image exactly once (one row per "
        "file of the folder, no other rows, one object per row and no stray object under the prefix); bytes: "
        "every row's size and MD5 against the manifest, and objects read back from S3 and hashed ("
        + ("all" if plan.sample is None else f"{plan.sample} sampled plus every multipart one and every odd name")
        + "); no open multipart upload under the prefix; the import's counters equal to the rows they count; "
        f"workers usable: a second import ({plan.probe_images} images) through the same processes completes "
        f"within {plan.probe_timeout_s:.0f} s.",
        "",
        "## Results",
        "",
        "| | scenario | fault | finished | seconds / bound | x clean | images exactly once | bad objects "
        "| open multipart | counters equal | workers usable | result |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        *(_row(o) for o in outcomes),
        "",
        "## Scenarios",
        "",
    ]
    for outcome in outcomes:
        lines += _details(outcome)
    return "\n".join(lines)


def to_json(outcomes: list[Outcome], plan: Plan) -> str:
    def one(o: Outcome) -> dict[str, Any]:
        data = asdict(o)
        data["passed"], data["problems"] = o.passed, o.problems
        return data

    return json.dumps({"plan": asdict(plan), "outcomes": [one(o) for o in outcomes]}, indent=1, default=str)
