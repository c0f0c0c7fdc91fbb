"""within(): a timeout that never loses a cancellation (asyncio.wait_for before Python 3.12 does)."""

from __future__ import annotations

import asyncio

import pytest

from fotoowl.timeouts import within


async def test_a_cancellation_arriving_as_the_operation_ends_is_not_lost() -> None:
    """The race that hung shutdowns: a loop bounded each step with wait_for; the shutdown's cancel
    landed just as a step finished, wait_for returned the step's result instead, and the loop ran on."""
    step: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def loop_forever() -> None:
        await within(step, 10.0)
        await asyncio.sleep(3600)  # where a lost cancellation would leave this task

    task = asyncio.create_task(loop_forever())
    await asyncio.sleep(0)  # the task now waits for its step
    step.set_result(None)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=5.0)
    assert task in done and task.cancelled()


async def test_it_times_out_and_cancels_what_it_waited_for() -> None:
    started = asyncio.Event()
    cancelled = False

    async def slow() -> None:
        nonlocal cancelled
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled = True
            raise

    with pytest.raises(TimeoutError):
        await within(slow(), 0.05)
    assert started.is_set() and cancelled


async def test_it_returns_the_result() -> None:
    async def answer() -> int:
        return 42

    assert await within(answer(), 1.0) == 42
