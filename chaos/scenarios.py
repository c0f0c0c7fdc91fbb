"""The scenarios: which fault, when, on which folder and process layout.

A fault function runs once the import is well under way (or from the start, for faults that must reach
the listing), does the damage, lifts it and returns; what it did goes to the scenario's timeline. It
never repairs anything on fotoowl's behalf: no process of ours is restarted (except where the scenario
is the restart), no import is retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass, field
from typing import Literal

from chaos import emulator
from chaos.fleet import Fleet
from chaos.servers import Servers


@dataclass(frozen=True)
class Faults:
    """How hard each fault hits; quick mode shortens the windows."""

    s3_pause_s: float = 30.0
    s3_down_s: float = 30.0
    s3_500_s: float = 20.0
    redis_down_s: float = 5.0
    kills: int = 20
    kill_window_s: float = 30.0
    drive_fault_rate: float = 0.05

    @property
    def drive_fault_pct(self) -> str:
        return f"{self.drive_fault_rate * 100:g}"


@dataclass
class FaultContext:
    servers: Servers
    fleet: Fleet
    control_url: str
    faults: Faults
    rng: random.Random
    baseline_s: float | None = None
    t0: float = field(default_factory=time.monotonic)
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    timeline: list[str] = field(default_factory=list)
    fault_started: float | None = None
    fault_ended: float | None = None

    def note(self, text: str) -> None:
        self.timeline.append(f"{time.monotonic() - self.t0:+7.1f} s  {text}")


FaultFn = Callable[[FaultContext], Coroutine[None, None, None]]


@dataclass(frozen=True)
class Scenario:
    name: str
    requirement: str  # the letter in the issue
    title: str  # formatted with the Faults fields
    fault: FaultFn | None = None
    folder: str = "main"
    embedded: bool = False
    # Faults that must reach the listing are on from before the import is created.
    at_start: bool = False
    # "measured": the time the fault took is added to the scenario's bound; "none": it is not (a fault
    # that lasts the whole import must be absorbed within the ordinary slack).
    allowance: Literal["measured", "none"] = "measured"
    expected_status: str = "completed"

    def describe(self, faults: Faults) -> str:
        return self.title.format(**asdict(faults), drive_fault_pct=faults.drive_fault_pct)


# --- the faults --------------------------------------------------------------------------------------


async def s3_pause(ctx: FaultContext) -> None:
    ctx.note(ctx.servers.pause_s3())
    await asyncio.sleep(ctx.faults.s3_pause_s)
    ctx.note(ctx.servers.resume_s3())


async def s3_kill(ctx: FaultContext) -> None:
    ctx.note(await ctx.servers.kill_s3())
    await asyncio.sleep(ctx.faults.s3_down_s)
    await ctx.servers.start_s3()
    assert ctx.servers.weed is not None
    ctx.note(f"SeaweedFS started again on the same data dir, pid {ctx.servers.weed.proc.pid}")


async def s3_500(ctx: FaultContext) -> None:
    proxy = ctx.servers.s3_proxy
    before = proxy.failed_writes
    proxy.fail_writes = True
    ctx.note("S3 proxy answers 500 InternalError to every PUT/POST/DELETE")
    await asyncio.sleep(ctx.faults.s3_500_s)
    proxy.fail_writes = False
    ctx.note(f"S3 writes pass again ({proxy.failed_writes - before} writes were answered 500)")


async def pg_restart(ctx: FaultContext) -> None:
    ctx.note("SIGINT to the postmaster (fast shutdown)")
    ctx.note(await ctx.servers.pg_fast_restart())


async def pg_kill(ctx: FaultContext) -> None:
    ctx.note("SIGKILL to the postmaster")
    ctx.note(await ctx.servers.pg_kill())


async def redis_restart(ctx: FaultContext) -> None:
    ctx.note(await ctx.servers.kill_redis())
    await asyncio.sleep(ctx.faults.redis_down_s)
    await ctx.servers.start_redis()
    ctx.note("a fresh, empty Valkey started behind the same address")


async def worker_kills(ctx: FaultContext) -> None:
    """SIGKILLs at uniformly random moments of a window, each followed by a replacement worker.

    The window is half the clean run (at least 5 s, at most kill_window_s), so that every kill can land
    while the import runs; each victim is a worker that has started (a kill of a process still
    importing Python would test nothing), so kills wait for a replacement to come up when need be."""
    window = min(ctx.faults.kill_window_s, max(5.0, 0.5 * (ctx.baseline_s or ctx.faults.kill_window_s)))
    moments = sorted(ctx.rng.uniform(0, window) for _ in range(ctx.faults.kills))
    ctx.note(f"{len(moments)} kills planned over {window:.1f} s")
    started = time.monotonic()
    for done, moment in enumerate(moments):
        victim = None
        while victim is None:
            delay = max(0.2, started + moment - time.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ctx.finished.wait(), delay)
            if ctx.finished.is_set():
                ctx.note(f"the import ended after {done} of {len(moments)} kills; the rest were not made")
                return
            ready = ctx.fleet.ready_workers()
            victim = ctx.rng.choice(ready) if ready else None
        await ctx.fleet.kill(victim)
        replacement = await ctx.fleet.spawn_worker()
        ctx.note(f"kill {done + 1}: SIGKILL {victim.name} (pid {victim.child.pid}); {replacement.name} started")


async def web_restart(ctx: FaultContext) -> None:
    ctx.note(await ctx.fleet.restart_web())


async def drive_faults(ctx: FaultContext) -> None:
    before = await emulator.set_faults(ctx.control_url, ctx.faults.drive_fault_rate)
    ctx.note(f"Drive emulator: {ctx.faults.drive_fault_pct} % of requests faulted, every kind at once")
    await ctx.finished.wait()
    after = await emulator.set_faults(ctx.control_url, 0.0)
    # The emulator serves every scenario: its counters are the run's, this scenario's share is the change.
    faults, requests = (_delta(after[key], before[key]) for key in ("faults", "requests"))
    ctx.note(
        f"Drive faults off: {sum(faults.values())} faults in {sum(requests.values())} requests; "
        f"faults {faults}; requests {requests}"
    )


def _delta(after: object, before: object) -> dict[str, int]:
    assert isinstance(after, dict) and isinstance(before, dict)
    return {
        key: int(value) - int(before.get(key, 0))
        for key, value in after.items()
        if int(value) != int(before.get(key, 0))
    }


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("clean", "-", "no fault: the baseline"),
    Scenario("s3-pause", "a", "S3 server paused (SIGSTOP) for {s3_pause_s:g} s, then SIGCONT", s3_pause),
    Scenario("s3-kill", "a", "S3 server killed (SIGKILL), started again {s3_down_s:g} s later", s3_kill),
    Scenario("s3-500", "a", "S3 answers 500 to every write for {s3_500_s:g} s", s3_500),
    Scenario("pg-restart", "b", "PostgreSQL fast restart (SIGINT, start)", pg_restart),
    Scenario("pg-kill", "b", "PostgreSQL postmaster SIGKILL, start (crash recovery)", pg_kill),
    Scenario(
        "redis-restart",
        "c",
        "Valkey killed, a fresh one {redis_down_s:g} s later (queued jobs lost); separate workers",
        redis_restart,
    ),
    Scenario(
        "redis-restart-embedded",
        "c",
        "Valkey killed, a fresh one {redis_down_s:g} s later (queued jobs lost); embedded workers",
        redis_restart,
        embedded=True,
    ),
    Scenario(
        "worker-kills", "d", "{kills} worker SIGKILLs at random moments, a replacement started after each", worker_kills
    ),
    Scenario("web-restart", "e", "web app restarted (SIGTERM, start on the same port)", web_restart),
    Scenario(
        "drive-faults",
        "f",
        "Drive emulator faults {drive_fault_pct} % of requests, every kind at once "
        "(500, 503, 429, 403 rate limit, drop, latency, reset, truncate, ignore_range, slow), "
        "list and media, for the whole import",
        drive_faults,
        at_start=True,
        allowance="none",
    ),
    Scenario(
        "poison-nul",
        "g",
        "a poison file (every download answered 500 or reset) and a NUL byte in a file name",
        folder="nasty",
        expected_status="completed_with_errors",
    ),
)

BY_NAME = {s.name: s for s in SCENARIOS}
