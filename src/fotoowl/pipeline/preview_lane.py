"""The preview lane: each worker process makes pending previews, of any import, beside its copies.

Why a lane in every worker process and not arq jobs: arq runs a process's jobs in `max_jobs` slots
taken in queue order, and an import's transfer jobs hold every slot until its last file is copied
(each claims until nothing is left), so a preview job queued behind them would start only once the
originals are done, and one queued ahead would take a transfer's slot. Previews queue in the
database instead (`images.preview_status = 'pending'`, claimed oldest first under a lease with FOR
UPDATE SKIP LOCKED, like items), and each process claims them whenever it has room: previews never
wait for a transfer slot nor take one; a worker killed mid-preview leaves its claims to expire and
be claimed again by any lane; and previews go on while Redis is down.

Lower priority, bounded share. Previews share the process's event loop with its copies, and work on
that loop delays every copy in flight (each waits its turn on the loop several times per file): in
the benchmark, one preview at a time beside the copies took 10 % off the originals' rate. So while
the process has copies in flight, its lane makes one preview a second (a trickle, so that a steady
stream of imports cannot keep previews waiting for ever), and a batch under way when copies start
hands back what it has not started. Once the process copies nothing, the lane makes previews a few
at a time per thumbnail thread (FOTOOWL_THUMBNAIL_THREADS), the decoding in those threads at a lower
OS priority. Another process with nothing to copy makes them at full pace meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator
from functools import partial

from fotoowl.pipeline.deps import Deps
from fotoowl.pipeline.previews import (
    PendingPreview,
    PreviewDeferred,
    PreviewMade,
    claim_previews,
    defer_previews,
    drop_strays,
    lease_s,
    make_preview,
    memory_bytes,
    record_previews,
    renew_previews,
)
from fotoowl.resilience import LONGEST_WAIT_S, is_db_outage, with_database
from fotoowl.timeouts import within

log = logging.getLogger("fotoowl.pipeline.preview_lane")

# Previews claimed at once by a process that copies nothing: a second or so of work, so each claim and
# record serves many, and other processes get their share.
BATCH_SIZE = 128
# How often an idle lane looks for pending previews.
IDLE_POLL_S = 1.0
# While the process copies: one preview per this long.
TRICKLE_EVERY_S = 1.0
# Previews in flight per thumbnail thread (reading back and storing overlap the decoding).
IN_FLIGHT_PER_THREAD = 8
# Originals the lane holds in memory at once, however many previews are in flight.
MEMORY_BYTES = 24 * 1024 * 1024
# A preview storage failed is tried again after about this long (doubling with each attempt).
RETRY_BACKOFF_S = 2.0
# How often the lane deletes spooled originals nobody took (preview_spool.py).
SPOOL_SWEEP_EVERY_S = 60.0
# A hand-back on the way out is bounded; the lease expires otherwise.
RELEASE_TIMEOUT_S = 10.0


def copying(deps: Deps) -> bool:
    """Whether this process has copies in flight (or claimed, about to be)."""
    return deps.claim_room.held_items > 0


def in_flight(deps: Deps) -> int:
    return max(1, deps.settings.thumbnail_threads) * IN_FLIGHT_PER_THREAD


@contextlib.asynccontextmanager
async def running(deps: Deps) -> AsyncIterator[None]:
    """The lane of this process, from start-up to shutdown."""
    task = asyncio.create_task(run_lane(deps), name="fotoowl-preview-lane")
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def run_lane(deps: Deps) -> None:
    """Make pending previews until cancelled; an error pauses the lane, never ends it."""
    failures = 0
    swept_at_s = float("-inf")
    while True:
        if deps.preview_spool is not None and time.monotonic() - swept_at_s >= SPOOL_SWEEP_EVERY_S:
            swept_at_s = time.monotonic()
            deps.preview_spool.sweep()
        try:
            claimed = await make_batch(deps)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            failures += 1
            delay_s = min(LONGEST_WAIT_S * 6, 0.5 * 2 ** min(failures, 6))
            if is_db_outage(exc):
                log.warning("preview lane: the database is unavailable (%s); waiting", type(exc).__name__)
            else:
                log.exception("preview lane: a batch failed; going on in %.1f s", delay_s)
            await asyncio.sleep(delay_s)
            continue
        failures = 0
        if copying(deps):
            await asyncio.sleep(TRICKLE_EVERY_S)
        elif not claimed:
            await asyncio.sleep(IDLE_POLL_S)


async def make_batch(deps: Deps, *, limit: int | None = None) -> int:
    """Claim up to `limit` pending previews (one while the process copies), make and record them;
    returns how many were claimed."""
    pool = deps.pool
    trickle = copying(deps)
    size = limit or (1 if trickle else BATCH_SIZE)
    await deps.storage_gate.wait_until_up()
    token = uuid.uuid4()
    # A claim whose answer is lost (an outage mid-statement) is left to its lease, which is short.
    claimed = await with_database(pool, lambda: claim_previews(pool, token, size, lease_s(deps)))
    if not claimed:
        return 0
    log.debug("previews claimed", extra={"previews": len(claimed)})
    unfinished = {p.image_id for p in claimed}
    made: list[PreviewMade] = []
    renewer = asyncio.create_task(_renew(deps, token, unfinished))
    running: set[asyncio.Task[PreviewMade | PreviewDeferred]] = set()
    holding: dict[asyncio.Task[PreviewMade | PreviewDeferred], int] = {}
    held_bytes = 0
    try:
        waiting = list(claimed)
        while waiting or running:
            if waiting and not trickle and copying(deps):
                # Copies have started: they come first.
                await with_database(pool, partial(_hand_back, deps, token, waiting))
                unfinished.difference_update(p.image_id for p in waiting)
                waiting.clear()
                if not running:
                    break
            while waiting and len(running) < in_flight(deps):
                # One at a time beyond the memory bound: a run of large originals cannot pile up.
                if running and held_bytes + memory_bytes(waiting[0]) > MEMORY_BYTES:
                    break
                pending = waiting.pop(0)
                held_bytes += memory_bytes(pending)
                task = asyncio.create_task(make_preview(deps, pending))
                holding[task] = memory_bytes(pending)
                running.add(task)
            done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                held_bytes -= holding.pop(task)
                outcome = task.result()
                if isinstance(outcome, PreviewMade):
                    made.append(outcome)
                    continue
                unfinished.discard(outcome.image_id)
                await with_database(pool, partial(_defer, deps, token, outcome, claimed))
        recorded = await with_database(pool, lambda: record_previews(pool, token, made))
        unfinished.clear()
        try:
            await drop_strays(deps, made, recorded)
        except Exception as exc:
            log.warning("could not delete the previews of deleted images: %s", f"{type(exc).__name__}: {exc}"[:300])
    except BaseException:
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        # What was made is kept; the rest goes back at once, its attempt given back (a shutdown or an
        # outage of our own is not the image's fault), or else when its lease runs out.
        with contextlib.suppress(Exception):
            await within(asyncio.shield(record_previews(pool, token, made)), RELEASE_TIMEOUT_S)
            rest = sorted(unfinished - {m.image_id for m in made})
            await within(
                asyncio.shield(defer_previews(pool, token, rest, backoff_s=0.0, attempt_spent=False)),
                RELEASE_TIMEOUT_S,
            )
        raise
    finally:
        renewer.cancel()
        await asyncio.gather(renewer, return_exceptions=True)
    return len(claimed)


async def _hand_back(deps: Deps, token: uuid.UUID, previews: list[PendingPreview]) -> None:
    ids = [p.image_id for p in previews]
    await defer_previews(deps.pool, token, ids, backoff_s=0.0, attempt_spent=False)


async def _defer(deps: Deps, token: uuid.UUID, outcome: PreviewDeferred, claimed: list[PendingPreview]) -> None:
    attempts = next((p.attempts for p in claimed if p.image_id == outcome.image_id), 1)
    # Exponential with jitter, so previews that failed together do not all come back together.
    backoff_s = min(300.0, RETRY_BACKOFF_S * 2 ** max(0, attempts - 1)) * random.uniform(0.5, 1.5)
    await defer_previews(deps.pool, token, [outcome.image_id], backoff_s=backoff_s, attempt_spent=outcome.attempt_spent)


async def _renew(deps: Deps, token: uuid.UUID, image_ids: set[int]) -> None:
    """Keep the batch's lease while it runs (a slow storage read can outlast it); a failed renewal is
    tried again a second later."""
    lease = lease_s(deps)
    renewed_at = time.monotonic()
    while True:
        await asyncio.sleep(1.0)
        if time.monotonic() - renewed_at < lease / 3:
            continue
        try:
            await renew_previews(deps.pool, token, sorted(image_ids), lease)
            renewed_at = time.monotonic()
        except Exception as exc:
            log.warning("preview lease renewal failed (%s); trying again", type(exc).__name__)
