"""A timeout that never loses a cancellation.

asyncio.wait_for before Python 3.12 returns the awaited result when a cancellation arrives in the
same loop step as that result, and the cancellation is gone: a loop that bounds each step with it
(a heartbeat, a lane polling the database) then runs on after its task was cancelled, and whoever
waits for that task at shutdown waits for ever. asyncio.timeout() counts cancellations instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def within(aw: Awaitable[T], timeout_s: float | None) -> T:
    """`aw`'s result, or TimeoutError (and `aw` cancelled) after `timeout_s` (None: no limit)."""
    async with asyncio.timeout(timeout_s):
        return await aw
