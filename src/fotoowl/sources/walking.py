"""Walking a folder tree with several folders listed at once.

A tree of many small folders (a shoot split by day and camera) is a page or two per folder: listed one
folder after another, its listing costs a round trip per folder, and round trips are what a listing is
made of. Listing a few folders at once overlaps them, while a bound on the pages listed but not yet
taken keeps memory flat however far ahead the listers get.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

F = TypeVar("F")
B = TypeVar("B")

# Folders of one walk listed at once by default: enough to hide round trips, few enough that a
# provider's per-user limits are not what a walk runs into.
FOLDERS_AT_ONCE = 4

ListFolder = Callable[[F, Callable[[F], None]], AsyncIterator[B]]


async def walk_tree(root: F, list_folder: ListFolder[F, B], *, folders_at_once: int) -> AsyncIterator[B]:
    """The batches `list_folder` yields for `root` and every folder it reports through its second
    argument, listing up to `folders_at_once` folders at a time (queued folders start in the order
    they were found). The first error of any folder ends the walk and is raised here; closing the
    walk early stops every folder's listing."""
    at_once = max(1, folders_at_once)
    waiting: deque[F] = deque([root])
    running: set[asyncio.Task[None]] = set()
    events: asyncio.Queue[B | asyncio.Task[None]] = asyncio.Queue()
    # Batches listed and not yet taken by the caller: a lister waits for room before listing on.
    room = asyncio.Semaphore(at_once)

    def found(folder: F) -> None:
        waiting.append(folder)
        start()

    async def list_one(folder: F) -> None:
        async for batch in list_folder(folder, found):
            await room.acquire()
            events.put_nowait(batch)

    def start() -> None:
        while waiting and len(running) < at_once:
            task = asyncio.create_task(list_one(waiting.popleft()))
            running.add(task)
            task.add_done_callback(events.put_nowait)

    try:
        start()
        while running:
            event = await events.get()
            if isinstance(event, asyncio.Task):
                running.discard(event)
                if event.cancelled():  # only from outside: this walk cancels its listers after its loop
                    raise asyncio.CancelledError
                if (error := event.exception()) is not None:
                    raise error
                start()
                continue
            room.release()
            yield event
    finally:
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
