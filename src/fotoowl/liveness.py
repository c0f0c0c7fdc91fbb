"""Which worker processes are alive: each beats in the `workers` table every few seconds.

An item's lease is minutes long so a slow copy keeps it; but a process that was SIGKILLed or lost
with its machine never finishes its items, and waiting out its leases would stall the import for
minutes. The sweeper hands back at once what a process without a recent beat held.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator

import asyncpg

from fotoowl.timeouts import within

log = logging.getLogger("fotoowl.liveness")

BEAT_EVERY_S = 5.0
# Four missed beats: a process this quiet is gone (a busy event loop still beats every few seconds).
DEAD_AFTER_S = 20.0
# A process judges others only after beating this long itself: by then, after a database outage,
# every live process has beaten again.
TRUST_AFTER_S = 3 * BEAT_EVERY_S
_FORGET_AFTER_S = 24 * 3600.0

_BEAT = """
INSERT INTO workers (id, host, pid) VALUES ($1, $2, $3)
ON CONFLICT (id) DO UPDATE SET heartbeat_at = now()
"""

_RECLAIM_FROM_THE_DEAD = """
WITH lost AS (
    UPDATE import_items it SET lease_expires_at = now() - interval '1 millisecond', updated_at = now()
    WHERE it.status = 'in_progress' AND it.worker_id IS NOT NULL AND it.lease_expires_at > now()
      AND NOT EXISTS (SELECT 1 FROM workers w
                      WHERE w.id = it.worker_id AND w.heartbeat_at >= now() - make_interval(secs => $1))
    RETURNING it.import_id
), forgotten AS (
    DELETE FROM workers WHERE heartbeat_at < now() - make_interval(secs => $2)
)
SELECT import_id, count(*) AS items FROM lost GROUP BY import_id
"""


class Heartbeat:
    """This process's beat. `trusted` only once beats have gone through for a while: right after a
    database outage every process's beat is old, and none of them is dead."""

    def __init__(self, pool: asyncpg.Pool, worker_id: uuid.UUID) -> None:
        self.pool = pool
        self.worker_id = worker_id
        self._beating_since_s: float | None = None

    @property
    def trusted(self) -> bool:
        since_s = self._beating_since_s
        return since_s is not None and time.monotonic() - since_s >= TRUST_AFTER_S

    async def beat(self) -> None:
        await self.pool.execute(_BEAT, self.worker_id, socket.gethostname()[:200], os.getpid())

    async def run(self) -> None:
        while True:
            try:
                await within(self.beat(), BEAT_EVERY_S)
                if self._beating_since_s is None:
                    self._beating_since_s = time.monotonic()
            except Exception as exc:
                self._beating_since_s = None
                log.warning("heartbeat failed (%s)", type(exc).__name__)
            await asyncio.sleep(BEAT_EVERY_S)

    async def forget(self) -> None:
        """On a clean stop: this process holds nothing any more."""
        await self.pool.execute("DELETE FROM workers WHERE id = $1", self.worker_id)


@contextlib.asynccontextmanager
async def beating(heartbeat: Heartbeat) -> AsyncIterator[Heartbeat]:
    task = asyncio.create_task(heartbeat.run())
    try:
        yield heartbeat
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        with contextlib.suppress(Exception):
            await within(heartbeat.forget(), 5.0)


async def reclaim_from_the_dead(heartbeat: Heartbeat) -> dict[int, int]:
    """Expire the leases held by processes that stopped beating; returns {import id: items}."""
    if not heartbeat.trusted:
        return {}
    rows = await heartbeat.pool.fetch(_RECLAIM_FROM_THE_DEAD, DEAD_AFTER_S, _FORGET_AFTER_S)
    lost = {int(r["import_id"]): int(r["items"]) for r in rows}
    for import_id, items in lost.items():
        log.warning(
            "%d items were held by a worker that stopped; handing them back", items, extra={"import_id": import_id}
        )
    return lost
