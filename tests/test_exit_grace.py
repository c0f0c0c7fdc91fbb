"""The exit grace (exit_grace.py): jobs that arq's own shutdown stopped waiting for still hand their
files back before the process exits.

The end-to-end case is tests/test_workers.py::test_sigterm_hands_claimed_items_back, which failed
about one run in five before (`arq fotoowl.worker.Settings`: a second job cancelled while arq read
it from Redis ended arq's wait for the first, and the process exited with its files still claimed).
"""

from __future__ import annotations

import asyncio

from fotoowl.exit_grace import ExitGrace


def test_a_job_cut_off_mid_hand_back_finishes_it_at_exit_then_resources_close() -> None:
    loop = asyncio.new_event_loop()
    events: list[str] = []

    async def run_job() -> None:  # the name of arq's job tasks' coroutine
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            await asyncio.sleep(0.05)  # the hand-back's round trip to the database
            events.append("handed back")
            raise

    async def heartbeat() -> None:  # not a job: never waited for
        await asyncio.sleep(3600)

    async def shutdown() -> None:
        events.append("closed")

    job = loop.create_task(run_job())
    other = loop.create_task(heartbeat())
    loop.run_until_complete(asyncio.sleep(0))
    grace = ExitGrace(loop, shutdown)
    job.cancel()
    # As under arq's close: the loop stops while the job is half way through handing back.
    loop.run_until_complete(asyncio.sleep(0.01))
    assert events == []
    grace.finish()
    assert events == ["handed back", "closed"]
    assert job.cancelled() and not other.done()
    other.cancel()
    loop.run_until_complete(asyncio.gather(other, return_exceptions=True))
    loop.close()


def test_after_an_orderly_shutdown_it_does_nothing() -> None:
    loop = asyncio.new_event_loop()
    closed: list[bool] = []

    async def shutdown() -> None:
        closed.append(True)

    grace = ExitGrace(loop, shutdown)
    loop.close()
    grace.finish()
    assert closed == []
