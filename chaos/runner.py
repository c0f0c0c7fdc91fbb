"""One scenario from clean state to verdict: fresh database, Redis db and S3 prefix; fotoowl's processes;
the import posted through the web API; the fault at ~30 %; the wait for a final status within the
bound; the checks; then a small second import to show the workers still take work."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from bench.procs import Children
from bench.stack import Stack

from chaos import checks, emulator
from chaos.emulator import DriveManifest, Folder
from chaos.fleet import Fleet
from chaos.scenarios import FaultContext, Faults, Scenario
from chaos.servers import Servers
from fotoowl.storage_backends import open_storage

FINISHED = ("completed", "completed_with_errors", "failed", "cancelled")
POLL_S = 0.25
PROGRESS_EVERY_S = 10.0  # a progress line in the timeline: stalls show


@dataclass(frozen=True)
class Plan:
    quick: bool
    images: int
    big: int
    probe_images: int
    latency_s: float
    seed: int
    slack_s: float  # added to the clean run's time (and the fault's) to make a scenario's bound
    clean_timeout_s: float  # the clean run's own bound
    max_fault_s: float  # a fault that has not lifted by then no longer holds the bound open
    probe_timeout_s: float
    sample: int | None  # objects read back per scenario besides the multipart ones; None = all
    trigger_fraction: float
    faults: Faults = field(default_factory=Faults)


@dataclass
class Outcome:
    name: str
    requirement: str
    title: str
    layout: str
    expected_status: str
    finished: bool = False
    status: str = "-"
    seconds: float = 0.0
    bound_s: float = 0.0
    ratio: float | None = None
    verdict: checks.Verdict | None = None
    workers_usable: bool = False
    probe_note: str = ""
    web_errors: int = 0
    fault_injected: bool = False
    timeline: list[str] = field(default_factory=list)
    evidence: list[str] = field(default_factory=list)
    error: str = ""

    @property
    def problems(self) -> list[str]:
        v = self.verdict
        found = []
        if self.error:
            found.append(f"harness error: {self.error}")
        if not self.finished:
            found.append(f"no final status within {self.bound_s:.0f} s (still {self.status})")
        elif self.status != self.expected_status:
            found.append(f"status {self.status}, expected {self.expected_status}")
        if v is not None:
            if not v.exactly_once:
                found.append(f"images exactly once: {v.once_text()}")
            if v.bad_objects:
                found.append(f"{v.bad_objects} bad objects (size/MD5)")
            if v.open_multipart:
                found.append(f"{len(v.open_multipart)} open multipart uploads")
            found += v.counter_problems + v.failure_problems
        elif not self.error:
            found.append("not verified")
        if not self.workers_usable:
            found.append(f"workers not usable: {self.probe_note}")
        return found

    @property
    def passed(self) -> bool:
        return not self.problems


class Runner:
    def __init__(self, plan: Plan, servers: Servers, stack: Stack, manifest: DriveManifest, log_dir: Path) -> None:
        self.plan = plan
        self.servers = servers
        self.stack = stack
        self.manifest = manifest
        self.log_dir = log_dir
        self.baseline_s: float | None = None

    def say(self, text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)

    async def run(self, index: int, scenario: Scenario) -> Outcome:
        label = f"{index:02d}-{scenario.name}"
        outcome = Outcome(
            scenario.name, scenario.requirement, scenario.describe(self.plan.faults), "", scenario.expected_status
        )
        self.say(f"{label}: {outcome.title}")
        try:
            await self._run(label, index, scenario, outcome)
        except Exception as exc:  # the harness's own failure becomes this scenario's, the run goes on
            outcome.error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
            if len(str(exc).splitlines()) > 1:
                outcome.evidence.append("```\n" + "\n".join(str(exc).splitlines()[-15:]) + "\n```")
            traceback.print_exc()
        if scenario.name == "clean" and outcome.finished:
            self.baseline_s = outcome.seconds
        if self.baseline_s:
            outcome.ratio = outcome.seconds / self.baseline_s
        self.say(
            f"{label}: {'PASS' if outcome.passed else 'FAIL'} in {outcome.seconds:.1f} s"
            + "".join(f"\n    - {p}" for p in outcome.problems)
        )
        return outcome

    async def _run(self, label: str, index: int, scenario: Scenario, outcome: Outcome) -> None:
        database_url = await self.stack.fresh_database(label)
        redis_url = await self.stack.fresh_redis()
        prefix = f"{label}/"
        env = self.stack.fotoowl_env(
            database_url=database_url, redis_url=redis_url, prefix=prefix, source_env=self.manifest.source_env()
        )
        fleet = Fleet(Children(self.log_dir / label), env, embedded=scenario.embedded)
        outcome.layout = fleet.describe()
        ctx = FaultContext(
            self.servers,
            fleet,
            self.manifest.control_url,
            self.plan.faults,
            random.Random(self.plan.seed * 1000 + index),
            baseline_s=self.baseline_s,
            timeline=outcome.timeline,
        )
        # No idle connection to keep up: during a PostgreSQL outage the harness only waits.
        pool = await asyncpg.create_pool(database_url, min_size=0, max_size=4)
        fault_task: asyncio.Task[None] | None = None
        try:
            await fleet.start()
            folder = self.manifest.folders[scenario.folder]
            ctx.t0 = time.monotonic()
            if scenario.fault is not None and scenario.at_start:
                fault_task = asyncio.create_task(self._fault(scenario, ctx))
                outcome.fault_injected = True
            import_id = await fleet.post_import(folder.link)
            ctx.note(f"import {import_id} posted ({folder.found} files in the folder)")
            fault_task = await self._follow(scenario, ctx, fleet, import_id, folder, outcome, fault_task)
            await self._settle(ctx, fault_task)
            # Now that the fault's duration is known, the bound is exact; an import that ended while the
            # fault still held ended before it anyway.
            outcome.bound_s = self._limit(ctx, scenario) - ctx.t0
            for repair in await self.servers.heal():
                ctx.note(f"harness repair before the checks (the fault did not lift itself): {repair}")
            await self._verify(pool, import_id, folder, prefix, outcome)
            await self._probe(pool, fleet, ctx, outcome)
        finally:
            ctx.finished.set()
            if fault_task is not None and not fault_task.done():
                fault_task.cancel()
                await asyncio.gather(fault_task, return_exceptions=True)
            for repair in await self.servers.heal():
                ctx.note(f"harness clean-up: {repair}")
            with contextlib.suppress(Exception):
                await emulator.set_faults(self.manifest.control_url, 0.0)
            outcome.evidence += self._process_evidence(fleet)
            await fleet.stop()
            await pool.close()

    @staticmethod
    async def _fault(scenario: Scenario, ctx: FaultContext) -> None:
        assert scenario.fault is not None
        ctx.fault_started = time.monotonic()
        try:
            await scenario.fault(ctx)
        finally:
            ctx.fault_ended = time.monotonic()

    def _limit(self, ctx: FaultContext, scenario: Scenario) -> float:
        """The moment the import must have ended by: clean time + the fault's duration + slack."""
        if self.baseline_s is None:
            return ctx.t0 + self.plan.clean_timeout_s
        base = ctx.t0 + self.baseline_s + self.plan.slack_s
        if scenario.fault is None or scenario.allowance == "none":
            return base
        if ctx.fault_started is not None and ctx.fault_ended is not None:
            return base + (ctx.fault_ended - ctx.fault_started)
        return base + self.plan.max_fault_s

    async def _follow(
        self,
        scenario: Scenario,
        ctx: FaultContext,
        fleet: Fleet,
        import_id: int,
        folder: Folder,
        outcome: Outcome,
        fault_task: asyncio.Task[None] | None,
    ) -> asyncio.Task[None] | None:
        """Poll GET /imports/{id} until a final status or the bound; inject the fault at the trigger point."""
        reported: set[str] = set()
        reported_tasks: set[asyncio.Task[None]] = set()
        next_progress = ctx.t0 + PROGRESS_EVERY_S
        body: dict[str, Any] | None = None
        while True:
            got = await fleet.get_import(import_id)
            if got is None:
                outcome.web_errors += 1
            else:
                body = got
                outcome.status = body["status"]
                counts = body["counts"]
                done = counts["found"] - counts["pending"]
                if (
                    scenario.fault is not None
                    and fault_task is None
                    and done >= self.plan.trigger_fraction * folder.found
                ):
                    ctx.note(f"{done}/{folder.found} files done: injecting the fault")
                    fault_task = asyncio.create_task(self._fault(scenario, ctx))
                    outcome.fault_injected = True
                if time.monotonic() >= next_progress:
                    next_progress += PROGRESS_EVERY_S
                    ctx.note(f"progress: {body['status']}, {done}/{folder.found} done")
                if body["status"] in FINISHED:
                    outcome.finished = True
                    ctx.note(f"import {body['status']}: {counts}")
                    break
            if fault_task is not None and fault_task.done() and fault_task not in reported_tasks:
                reported_tasks.add(fault_task)
                if fault_task.exception() is not None:
                    ctx.note(f"the fault itself failed: {fault_task.exception()!r}")
            for proc in fleet.unexpected_exits():
                if proc.name not in reported:
                    reported.add(proc.name)
                    ctx.note(f"{proc.name} exited on its own with code {proc.child.proc.returncode}")
            limit = self._limit(ctx, scenario)
            outcome.bound_s = limit - ctx.t0
            if time.monotonic() > limit:
                ctx.note(
                    f"bound of {outcome.bound_s:.0f} s reached; status still {outcome.status}: "
                    f"{body['counts'] if body else 'no answer from the web app'}"
                )
                break
            await asyncio.sleep(POLL_S)
        if scenario.fault is not None and not outcome.fault_injected:
            ctx.note("the fault was never injected: the import ended before the trigger point")
        outcome.seconds = time.monotonic() - ctx.t0
        return fault_task

    async def _settle(self, ctx: FaultContext, fault_task: asyncio.Task[None] | None) -> None:
        """Let the fault lift itself (it is bounded), so checks and the probe see a healthy system."""
        ctx.finished.set()
        if fault_task is not None and not fault_task.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(fault_task), self.plan.max_fault_s)

    async def _fetch_row(self, pool: asyncpg.Pool, import_id: int, timeout_s: float = 60) -> asyncpg.Record:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                row = await pool.fetchrow("SELECT * FROM imports WHERE id = $1", import_id)
                assert row is not None
                return row
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(1.0)

    async def _verify(self, pool: asyncpg.Pool, import_id: int, folder: Folder, prefix: str, outcome: Outcome) -> None:
        row = await self._fetch_row(pool, import_id)
        outcome.status = row["status"]
        if outcome.finished and row["finished_at"] is not None:
            outcome.seconds = (row["finished_at"] - row["created_at"]).total_seconds()
        async with open_storage(self.stack.settings(prefix=prefix)) as storage:
            outcome.verdict = await checks.verify(pool, storage, prefix, import_id, folder, sample=self.plan.sample)
        outcome.evidence += await checks.evidence(pool, import_id)
        outcome.evidence += await checks.odd_names(pool, import_id, folder)
        if outcome.verdict.open_multipart:
            outcome.evidence.append("open multipart uploads: " + ", ".join(outcome.verdict.open_multipart[:5]))

    async def _probe(self, pool: asyncpg.Pool, fleet: Fleet, ctx: FaultContext, outcome: Outcome) -> None:
        """A second, small import through the same processes: are the workers still taking work?"""
        if not fleet.web.alive:
            outcome.probe_note = f"the web app ({fleet.web.name}) is not running"
            return
        if not fleet.embedded and not fleet.live_workers():
            outcome.probe_note = "no worker process is alive"
            return
        folder = self.manifest.folders["probe"]
        started = time.monotonic()
        import_id = await fleet.post_import(folder.link)
        body = None
        while time.monotonic() - started < self.plan.probe_timeout_s:
            body = await fleet.get_import(import_id) or body
            if body is not None and body["status"] in FINISHED:
                break
            await asyncio.sleep(POLL_S)
        rows = await pool.fetch("SELECT google_drive_id, md5 FROM images WHERE import_id = $1", import_id)
        good = {f.id for f in folder.files} == {r["google_drive_id"] for r in rows} and all(
            r["md5"] == f.md5
            for r, f in zip(
                sorted(rows, key=lambda r: r["google_drive_id"]), sorted(folder.files, key=lambda f: f.id), strict=False
            )
        )
        status = body["status"] if body else "no answer"
        outcome.workers_usable = status == "completed" and good
        outcome.probe_note = (
            f"second import ({len(folder.files)} images) {status} in "
            f"{time.monotonic() - started:.1f} s, {len(rows)} rows"
        )
        ctx.note(outcome.probe_note)

    def _process_evidence(self, fleet: Fleet) -> list[str]:
        """Per fotoowl process: how it ended, its tracebacks and errors, the last traceback."""
        lines = []
        for proc in fleet.procs:
            text = proc.child.log_text()
            errors = sum(1 for line in text.splitlines() if " ERROR " in line or '"level": "error"' in line)
            tracebacks = text.count("Traceback (most recent call last)")
            code = proc.child.proc.returncode
            ended = (
                "running"
                if code is None
                else f"ended by the harness ({proc.ended_by_us}), exit {code}"
                if proc.ended_by_us
                else f"**exited on its own with code {code}**"
            )
            if errors or tracebacks or (code is not None and not proc.ended_by_us):
                lines.append(
                    f"{proc.name}: {ended}; {errors} ERROR lines, {tracebacks} tracebacks "
                    f"(log {proc.child.log_path.name})"
                )
                last_error = checks.last_error_line(text)
                if last_error:
                    lines.append(f"{proc.name}, last ERROR line: `{last_error}`")
                last = checks.last_traceback(text)
                if last:
                    lines.append("```\n" + last + "\n```")
        return lines
