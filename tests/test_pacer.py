from __future__ import annotations

import asyncio
import uuid

import aiohttp
import pytest
import redis.asyncio as aioredis
from arq.connections import ArqRedis

from fotoowl.config import AppSettings, Secret
from fotoowl.pacer import LocalPacer, PriorityLane, RedisPacer
from fotoowl.sources.registry import drive_client


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


def test_local_pacer_halves_on_rate_limits_then_recovers_linearly() -> None:
    clock = FakeClock()
    pacer = LocalPacer(rate_per_s=100, burst=20, recovery_s=10, cut_interval_s=1, clock=clock)

    assert pacer.cut() == 50
    assert pacer.cut() == 50  # answers to requests sent before the cut count once
    assert pacer.burst == 10  # the burst shrinks with the pace
    clock.now_s += 1
    assert pacer.cut() == pytest.approx(30)  # recovered 10/s for a second, then halved

    clock.now_s += 2  # +10/s every second: 30 -> 50
    assert pacer.rate_per_s == pytest.approx(50)
    clock.now_s += 60  # never beyond the ceiling
    assert pacer.rate_per_s == 100
    assert pacer.burst == 20


def test_local_pacer_spaces_requests_at_the_reduced_pace() -> None:
    clock = FakeClock()
    pacer = LocalPacer(rate_per_s=10, burst=1, recovery_s=1e9, clock=clock)
    assert pacer.reserve() == 0.0
    assert pacer.reserve() == pytest.approx(0.1)
    assert pacer.cut() == 5
    # The debt of queued reservations is repaid at the new pace too: two tokens at 5/s.
    assert pacer.reserve() == pytest.approx(0.4)


def test_local_pacer_never_stops() -> None:
    clock = FakeClock()
    pacer = LocalPacer(rate_per_s=8, burst=4, recovery_s=1e9, cut_interval_s=0, clock=clock)
    for _ in range(20):
        pacer.cut()
    assert pacer.rate_per_s == 1.0  # one request a second, however often Google says no
    assert pacer.burst == 1.0


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


async def test_redis_pacer_slows_down_for_every_process_sharing_it(redis_url: str) -> None:
    key = f"test:pacer:{uuid.uuid4().hex}"
    clients = [aioredis.from_url(redis_url), aioredis.from_url(redis_url)]
    try:
        first, second = (
            RedisPacer(client, key, rate_per_s=10.0, burst=1, recovery_s=1e6, cut_interval_s=30) for client in clients
        )
        assert await first.reserve() == 0.0
        assert await first.slow_down() == pytest.approx(5.0)
        # The second process sees the cut, and its own report of the same episode counts once.
        assert await second.slow_down() == pytest.approx(5.0)
        wait_s = await second.reserve()
        assert 0.15 < wait_s <= 0.2  # one token at 5/s, less the few ms since the first reserve
    finally:
        for client in clients:
            await client.aclose()


async def test_redis_pacer_recovers_after_a_cut(redis_url: str) -> None:
    client = aioredis.from_url(redis_url)
    try:
        key = f"test:pacer:{uuid.uuid4().hex}"
        pacer = RedisPacer(client, key, rate_per_s=100.0, burst=10, recovery_s=0.5, cut_interval_s=0)
        assert await pacer.slow_down() == pytest.approx(50.0, abs=1)
        assert await pacer.slow_down() < 30.0
        # 200/s of recovery (the ceiling over recovery_s): back at the ceiling within half a second.
        await asyncio.sleep(0.6)
        assert await pacer.slow_down() == pytest.approx(50.0)
        assert await client.pttl(key) > 0
    finally:
        await client.aclose()


# --- a priority lane (listing pages) over the shared quota ------------------------------------------


async def test_a_priority_lane_goes_ahead_and_the_queue_pays_for_it() -> None:
    """Before: listing had a bucket of its own beside a download bucket set to the quota less the
    listing's share, so downloads never had that share, even when nothing was being listed."""
    clock = FakeClock()
    shared = LocalPacer(rate_per_s=10, burst=2, recovery_s=1e9, clock=clock)
    lane = PriorityLane(LocalPacer(rate_per_s=1, burst=2, recovery_s=1e9, clock=clock), shared)
    # Nothing listed: the rest has the whole quota, burst and rate.
    assert [shared.reserve() for _ in range(3)] == [0.0, 0.0, pytest.approx(0.1)]
    # A listing page while downloads queue: it goes at once (nothing slept on the fake clock) ...
    await lane.acquire()
    # ... and the next download waits for the token it took, after the one already queued.
    assert shared.reserve() == pytest.approx(0.3)


async def test_a_priority_lane_keeps_to_its_own_pace() -> None:
    clock = FakeClock()
    shared = LocalPacer(rate_per_s=100, burst=100, recovery_s=1e9, clock=clock)
    own = LocalPacer(rate_per_s=1, burst=2, recovery_s=1e9, clock=clock)
    lane = PriorityLane(own, shared)
    await lane.charge()
    await lane.charge()
    assert own.reserve() == pytest.approx(1.0)  # the lane's own bucket is spent


async def test_a_rate_limit_in_the_lane_slows_the_whole_quota() -> None:
    clock = FakeClock()
    shared = LocalPacer(rate_per_s=100, burst=10, recovery_s=1e9, clock=clock)
    lane = PriorityLane(LocalPacer(rate_per_s=10, burst=1, recovery_s=1e9, clock=clock), shared)
    assert await lane.slow_down() == pytest.approx(5.0)
    assert shared.rate_per_s == pytest.approx(50.0)


async def test_redis_pacer_charge_takes_a_token_without_waiting(redis_url: str) -> None:
    client = aioredis.from_url(redis_url)
    try:
        key = f"test:pacer:{uuid.uuid4().hex}"
        pacer = RedisPacer(client, key, rate_per_s=1.0, burst=1)
        for _ in range(3):
            await pacer.charge()  # returns at once, three tokens into a one-token bucket
        assert 2.5 < await pacer.reserve() <= 3.0  # the next caller waits for all three
    finally:
        await client.aclose()


async def test_drive_downloads_have_the_whole_quota_and_listing_goes_ahead_of_them(redis_url: str) -> None:
    settings = AppSettings(google_api_key=Secret("k"), drive_rate_per_s=50.0, drive_burst=5)
    redis = ArqRedis.from_url(redis_url)
    try:
        async with aiohttp.ClientSession() as session:
            client = drive_client(settings, session, redis)
            downloads, listing = client._pacer_for("media"), client._pacer_for("list")
            assert isinstance(downloads, RedisPacer) and downloads.rule.max_rate_per_s == 50.0
            assert isinstance(listing, PriorityLane) and listing.shared is downloads
    finally:
        await redis.aclose()
