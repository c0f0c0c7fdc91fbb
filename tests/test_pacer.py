from __future__ import annotations

import asyncio
import uuid

import pytest
import redis.asyncio as aioredis

from fotoowl.pacer import LocalPacer, RedisPacer


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s


def test_local_pacer_allows_a_burst_then_spaces_requests() -> None:
    clock = FakeClock()
    pacer = LocalPacer(rate_per_s=10, burst=3, clock=clock)

    assert [pacer.reserve() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert pacer.reserve() == pytest.approx(0.1)
    assert pacer.reserve() == pytest.approx(0.2)

    clock.now_s += 0.25  # pays back the two reservations, and half a token more
    assert pacer.reserve() == pytest.approx(0.05)

    clock.now_s += 60  # an idle bucket refills to the burst, not beyond
    assert [pacer.reserve() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert pacer.reserve() > 0


async def test_local_pacer_acquire_waits_its_turn() -> None:
    pacer = LocalPacer(rate_per_s=1000, burst=2)
    for _ in range(5):
        await pacer.acquire()


@pytest.mark.parametrize(("rate_per_s", "burst"), [(0, 1), (-1, 1), (1, 0)])
def test_pacer_rejects_nonsense_settings(rate_per_s: float, burst: int) -> None:
    with pytest.raises(ValueError):
        LocalPacer(rate_per_s, burst)


async def _redis_time_s(client: aioredis.Redis) -> float:
    seconds, microseconds = await client.time()
    return float(seconds) + float(microseconds) / 1_000_000


async def test_redis_pacer_reserves_burst_then_waits(redis_url: str) -> None:
    client = aioredis.from_url(redis_url)
    try:
        key = f"test:pacer:{uuid.uuid4().hex}"
        pacer = RedisPacer(client, key, rate_per_s=1.0, burst=3)
        waits_s = [await pacer.reserve() for _ in range(4)]
        assert waits_s[:3] == [0.0, 0.0, 0.0]
        assert 0.5 < waits_s[3] <= 1.0
        assert await client.pttl(key) > 0  # an idle bucket expires instead of lingering
    finally:
        await client.aclose()


async def test_redis_pacer_is_shared_between_processes(redis_url: str) -> None:
    """Two clients (as two worker processes would) never exceed burst + rate x elapsed together."""
    rate_per_s, burst, tasks_per_client, acquisitions_per_task = 100.0, 5, 3, 7
    key = f"test:pacer:{uuid.uuid4().hex}"
    clients = [aioredis.from_url(redis_url), aioredis.from_url(redis_url)]
    try:
        pacers = [RedisPacer(client, key, rate_per_s, burst) for client in clients]
        grants_s: list[float] = []

        async def acquire_repeatedly(pacer: RedisPacer, client: aioredis.Redis) -> None:
            for _ in range(acquisitions_per_task):
                await pacer.acquire()
                # Read after the grant: the true grant time is no later than this.
                grants_s.append(await _redis_time_s(client))

        start_s = await _redis_time_s(clients[0])
        await asyncio.gather(
            *(
                acquire_repeatedly(pacer, client)
                for pacer, client in zip(pacers, clients, strict=True)
                for _ in range(tasks_per_client)
            )
        )

        total = len(clients) * tasks_per_client * acquisitions_per_task
        assert len(grants_s) == total
        for count, granted_s in enumerate(sorted(grants_s), start=1):
            assert count <= burst + rate_per_s * (granted_s - start_s) + 1
        # The whole run could not have been faster than the bucket allows.
        assert max(grants_s) - start_s >= (total - burst - 1) / rate_per_s
    finally:
        for client in clients:
            await client.aclose()
