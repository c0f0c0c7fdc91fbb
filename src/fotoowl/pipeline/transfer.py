"""Transfers: claim batches of items and copy each file's bytes from the source into storage.

Outages of our own storage or database pause the claims and hand the files back without spending an
attempt; an unexpected error fails the file, never its batch or the job."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from fotoowl.pipeline.claims import (
    ClaimedItem,
    Copied,
    CopyFailed,
    CopyPaused,
    claim,
    fail_exhausted,
    record_done,
    record_failure,
    release,
    release_token,
)
from fotoowl.pipeline.control import enqueue_transfers
from fotoowl.pipeline.dedupe import StoredCopy, find_stored_copies
from fotoowl.pipeline.deps import Deps, folder_link
from fotoowl.pipeline.file_copy import Origin, copy_item
from fotoowl.pipeline.finalise import finalise
from fotoowl.resilience import with_database
from fotoowl.statuses import ImportStatus, ItemStatus
from fotoowl.timeouts import within

log = logging.getLogger("fotoowl.pipeline.transfer")

# Stored copies wait at most this long to be recorded.
FLUSH_EVERY_S = 1.0
# How long a hand-back on the way out may take before the leases are left to expire instead.
RELEASE_TIMEOUT_S = 10.0


class ImportCancelled(Exception):
    pass


@dataclass
class _Batch:
    """One claim in flight: what to hand back however its task ends."""

    token: uuid.UUID
    item_ids: list[int]


async def transfer_import(deps: Deps, import_id: int) -> int:
    """The transfer job: claim batches of items and copy them until none is left to claim.

    A new batch is claimed as soon as the process has room for it, while earlier batches are still
    finishing: a batch's slowest file never leaves the others' places idle. Outages of storage or the
    database pause the claims and resume them; they never end the job.
    """
    row = await with_database(
        deps.pool,
        lambda: deps.pool.fetchrow(
            "SELECT source, reader, folder_url, link_password FROM imports WHERE id = $1", import_id
        ),
    )
    if row is None:
        return 0
    source = deps.source(row["source"], row["reader"])
    origin = Origin(source, folder_link(source, row))
    moved = 0
    batches: dict[asyncio.Task[int], _Batch] = {}
    # Hand over to a fresh job well before arq's job timeout, which would fail this one for good.
    deadline = time.monotonic() + deps.settings.job_timeout_s / 2

    async def harvest(wait: bool) -> None:
        nonlocal moved
        if wait and batches:
            await asyncio.wait(batches, return_when=asyncio.FIRST_COMPLETED)
        for task in [t for t in batches if t.done()]:
            batch = batches.pop(task)
            if task.cancelled():
                continue
            if (exc := task.exception()) is not None:
                # Nobody foresaw this one: the batch handed its items back with the attempt spent, so
                # the attempt budget ends a file that keeps causing it; the job goes on.
                log.error(
                    "a transfer batch failed: %s",
                    exc,
                    exc_info=exc,
                    extra={"import_id": import_id, "items": len(batch.item_ids)},
                )
                continue
            moved += task.result()

    try:
        while True:
            await harvest(wait=False)
            if time.monotonic() > deadline:
                await asyncio.wait(batches)
                await harvest(wait=False)
                await enqueue_transfers(deps.redis, import_id, f"cont-{uuid.uuid4().hex[:8]}")
                return moved
            if not await deps.storage_gate.wait_until_up(max(1.0, deadline - time.monotonic())):
                continue
            token = uuid.uuid4()
            room = await deps.claim_room.reserve(deps.settings.batch_size)
            items: list[ClaimedItem] = []
            try:
                items = await with_database(deps.pool, lambda: _claim(deps, import_id, token, room))  # noqa: B023
            except BaseException:
                # The claim may have landed with its answer lost: whatever the token holds goes back
                # now, not when its lease runs out (nothing else would renew it).
                with contextlib.suppress(Exception):
                    await within(asyncio.shield(release_token(deps.pool, import_id, token)), RELEASE_TIMEOUT_S)
                raise
            finally:
                deps.claim_room.give_back(room - len(items))
            if items:
                log.info("batch claimed", extra={"import_id": import_id, "items": len(items)})
                places = [deps.claim_room.place() for _ in items]
                task = asyncio.create_task(_transfer_batch(deps, origin, import_id, token, items, places))
                # However the batch ends, cancelled before it ever ran included, its places come back.
                task.add_done_callback(_giving_back(places))
                batches[task] = _Batch(token, [item.id for item in items])
                continue
            if batches:
                # Nothing to claim now; a batch that ends may hand items back for a retry.
                await harvest(wait=True)
                continue
            # Items waiting out a retry backoff: wait here if it is short, else leave them to the sweeper.
            wait_s = await with_database(
                deps.pool,
                lambda: deps.pool.fetchval(
                    """SELECT extract(epoch FROM min(not_before) - now()) FROM import_items
                   WHERE import_id = $1 AND status = 'pending'""",
                    import_id,
                ),
            )
            if wait_s is not None and wait_s < 30:
                await asyncio.sleep(max(0.05, float(wait_s)))
                continue
            break
    finally:
        # Cancelled (shutdown) or done: each batch hands its unfinished items back itself, and a batch
        # cancelled before it ever ran is handed back here (a release touches only items it still holds).
        for task in batches:
            task.cancel()
        await asyncio.gather(*batches, return_exceptions=True)
        for batch in batches.values():
            await _release_bounded(deps, batch.token, batch.item_ids)
    await with_database(deps.pool, lambda: fail_exhausted(deps, import_id))
    await with_database(deps.pool, lambda: finalise(deps, import_id))
    return moved


def _giving_back(places: Sequence[Callable[[], None]]) -> Callable[[asyncio.Task[Any]], None]:
    def give_back(_task: asyncio.Task[Any]) -> None:
        for give in places:
            give()

    return give_back


async def _release_bounded(
    deps: Deps, token: uuid.UUID, item_ids: Sequence[int], *, attempt_spent: bool = False
) -> None:
    """A hand-back on the way out that cannot hold a shutdown up: if the database is down too, the
    items' leases expire and they are claimed again then."""
    try:
        await within(
            asyncio.shield(release(deps.pool, token, item_ids, "pending", attempt_spent=attempt_spent)),
            RELEASE_TIMEOUT_S,
        )
    except Exception as exc:
        log.warning("could not hand %d items back (%s); their leases will expire", len(item_ids), type(exc).__name__)


async def _claim(deps: Deps, import_id: int, token: uuid.UUID, limit: int) -> list[ClaimedItem]:
    claiming = asyncio.ensure_future(
        claim(
            deps.pool,
            import_id,
            token,
            limit,
            lease_s=float(deps.settings.lease_s),
            max_attempts=deps.settings.max_attempts,
            worker_id=deps.heartbeat.worker_id,
        )
    )
    try:
        return await asyncio.shield(claiming)
    except asyncio.CancelledError:
        # Shutdown landed mid-claim: the rows are ours in the database, so hand them straight back.
        with contextlib.suppress(Exception):
            # Bounded: a claim hung on a dead connection must not hold the cancellation up.
            items = await within(claiming, RELEASE_TIMEOUT_S)
            await within(release(deps.pool, token, [item.id for item in items], ItemStatus.PENDING), RELEASE_TIMEOUT_S)
        raise


async def _transfer_batch(
    deps: Deps,
    origin: Origin,
    import_id: int,
    token: uuid.UUID,
    items: Sequence[ClaimedItem],
    places: Sequence[Callable[[], None]],
) -> int:
    settings = deps.settings
    pool = deps.pool
    pending_results: list[Copied] = []
    unfinished = {item.id for item in items}
    attempts = {item.id: item.attempts for item in items}
    tasks: dict[asyncio.Task[Copied | CopyFailed | CopyPaused], int] = {}
    stored = await _stored_copies(deps, origin, items) if settings.dedupe else {}
    for item, give_place in zip(items, places, strict=True):
        # A place is free for the next claim once the file is stored, or however else its copy ends.
        task = asyncio.create_task(copy_item(deps, origin, item, token, give_place, stored.get(item.id)))
        task.add_done_callback(_giving_back([give_place]))
        tasks[task] = item.id
    watcher = asyncio.create_task(_watch(deps, import_id, token, set(tasks)))
    flush_at = time.monotonic() + FLUSH_EVERY_S
    moved = 0

    async def flush() -> int:
        done = list(pending_results)
        pending_results.clear()
        try:
            return await with_database(pool, lambda: record_done(pool, settings, import_id, token, done))
        except Exception as exc:
            # One row the database refuses must not cost the others theirs: record one by one.
            log.error(
                "recording %d copies failed (%s); recording them one by one",
                len(done),
                exc,
                extra={"import_id": import_id},
            )
        moved = 0
        for copied in done:
            try:
                moved += await with_database(pool, lambda: record_done(pool, settings, import_id, token, [copied]))  # noqa: B023
            except Exception as exc:
                failure = CopyFailed(
                    copied.item_id,
                    "internal_error",
                    f"recording the image failed: {type(exc).__name__}: {exc}",
                    transient=True,
                )
                await with_database(
                    pool, partial(record_failure, pool, import_id, token, failure, settings, attempts[copied.item_id])
                )
        return moved

    try:
        # Copies are recorded at least every second even while a sibling copy is still running (or
        # hangs): a file that is stored is recorded, whatever the rest of its batch does.
        waiting: set[asyncio.Task[Copied | CopyFailed | CopyPaused]] = set(tasks)
        cancelled = False
        while waiting and not cancelled:
            done, waiting = await asyncio.wait(waiting, timeout=FLUSH_EVERY_S, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                try:
                    result = task.result()
                except asyncio.CancelledError:
                    if watcher.done() and not watcher.cancelled() and isinstance(watcher.exception(), ImportCancelled):
                        cancelled = True
                        continue
                    raise
                unfinished.discard(result.item_id)
                if isinstance(result, Copied):
                    pending_results.append(result)
                elif isinstance(result, CopyPaused):
                    await with_database(pool, partial(release, pool, token, [result.item_id], ItemStatus.PENDING))
                else:
                    await with_database(
                        pool,
                        partial(record_failure, pool, import_id, token, result, settings, attempts[result.item_id]),
                    )
            if len(pending_results) >= 50 or (pending_results and time.monotonic() >= flush_at):
                moved += await flush()
                flush_at = time.monotonic() + FLUSH_EVERY_S
        moved += await flush()
    except BaseException as exc:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # Whatever was copied is kept; the rest goes back for another worker (or stays cancelled).
        with contextlib.suppress(Exception):
            await within(
                asyncio.shield(record_done(pool, settings, import_id, token, pending_results)), RELEASE_TIMEOUT_S
            )
        # Every item of the claim: those recorded are no longer held and stay as they are.
        await _release_bounded(
            deps, token, [item.id for item in items], attempt_spent=not isinstance(exc, asyncio.CancelledError)
        )
        raise
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
    if unfinished:
        # Cancelled import: in-flight copies were aborted; close their items.
        await asyncio.gather(*tasks, return_exceptions=True)
        await with_database(pool, lambda: release(pool, token, list(unfinished), ItemStatus.CANCELLED))
    return moved


async def _stored_copies(deps: Deps, origin: Origin, items: Sequence[ClaimedItem]) -> dict[int, StoredCopy]:
    """Bytes already stored for the batch's files, found in one query; dedupe only saves work, so a
    failed lookup means downloading them as usual."""
    try:
        return await find_stored_copies(deps.pool, origin.source.name, items)
    except Exception as exc:
        log.warning("looking up stored copies failed (%s); downloading the batch", type(exc).__name__)
        return {}


async def _watch(deps: Deps, import_id: int, token: uuid.UUID, tasks: set[asyncio.Task[Any]]) -> None:
    """Renew the batch's lease, and abort its copies when the import is cancelled.

    A failed round (the database is down) is logged and tried again a second later: the lease is a
    few minutes long, so renewals that resume after an outage keep the batch's items its own.
    """
    renew_every_s = max(1.0, deps.settings.lease_s / 3)
    renewed_at = time.monotonic()
    while True:
        await asyncio.sleep(1.0)
        try:
            status = await deps.pool.fetchval("SELECT status FROM imports WHERE id = $1", import_id)
            if status in (ImportStatus.CANCELLED, ImportStatus.DELETING, None):
                for task in tasks:
                    task.cancel()
                raise ImportCancelled(import_id)
            if time.monotonic() - renewed_at >= renew_every_s:
                await deps.pool.execute(
                    """UPDATE import_items SET lease_expires_at = now() + make_interval(secs => $2)
                       WHERE import_id = $3 AND lease_token = $1 AND status = 'in_progress'""",
                    token,
                    float(deps.settings.lease_s),
                    import_id,
                )
                renewed_at = time.monotonic()
        except ImportCancelled:
            raise
        except Exception as exc:
            log.warning("lease renewal failed (%s); trying again", type(exc).__name__, extra={"import_id": import_id})
