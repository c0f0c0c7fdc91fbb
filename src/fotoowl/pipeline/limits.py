"""Per-process limits of the pipeline: places for claimed items, and memory for file bodies."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class ClaimRoom:
    """Room for claimed items in one process: its files in flight plus one claim more waiting their
    turn (claims take a database round trip). A claim waits until there is room for a worthwhile
    batch and takes what room there is; each item gives its place back once its file is stored.
    Sized claims leave the rest of an import's items pending for other worker processes to claim."""

    @classmethod
    def for_files_in_flight(cls, files_in_flight: int) -> ClaimRoom:
        """Room for one claim beyond the files in flight, so the next claim is taken while every copy
        is still running and no copy place idles during its round trip. (With a quarter more, a claim
        of half the files in flight waited until a quarter of the copy places were empty: 29.5 of 32
        busy on average.)"""
        min_claim_items = max(1, files_in_flight // 2)
        return cls(files_in_flight + min_claim_items, min_claim_items=min_claim_items)

    def __init__(self, capacity_items: int, *, min_claim_items: int) -> None:
        self.capacity_items = capacity_items
        self.min_claim_items = max(1, min(min_claim_items, capacity_items))
        self.held_items = 0
        self._freed = asyncio.Event()

    async def reserve(self, most_items: int) -> int:
        """Wait for room, then hold up to `most_items` places; give back what the claim leaves unused."""
        while self.capacity_items - self.held_items < min(self.min_claim_items, most_items):
            self._freed.clear()
            await self._freed.wait()
        taken = min(most_items, self.capacity_items - self.held_items)
        self.held_items += taken
        return taken

    def give_back(self, items: int) -> None:
        self.held_items -= items
        self._freed.set()

    def place(self) -> Callable[[], None]:
        """For one reserved item: a function giving its place back, safe to call more than once."""
        given = False

        def give() -> None:
            nonlocal given
            if not given:
                given = True
                self.give_back(1)

        return give


class ByteBudget:
    """Admits holders while their bytes fit under a limit; a holder larger than the limit waits for
    the budget to empty and then takes all of it, so progress never deadlocks."""

    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self.used_bytes = 0
        self._changed = asyncio.Condition()

    async def acquire(self, size_bytes: int) -> int:
        size_bytes = min(max(size_bytes, 1), self.limit_bytes)
        async with self._changed:
            await self._changed.wait_for(lambda: self.used_bytes + size_bytes <= self.limit_bytes)
            self.used_bytes += size_bytes
        return size_bytes

    async def release(self, size_bytes: int) -> None:
        async with self._changed:
            self.used_bytes -= size_bytes
            self._changed.notify_all()
