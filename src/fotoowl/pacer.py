"""Request pacers: token buckets that keep Drive traffic under Google's quota, and adapt to it.

Both pacers *reserve* a token and then sleep until it is due, so concurrent callers queue up in
arrival order instead of polling. A reservation that is cancelled while sleeping is not given back:
at worst the bucket runs a little slower than configured, never faster.

The configured rate is a ceiling. Google's effective limit for a key is often lower than the
documented quota and is not published, so each rate-limit answer halves the pace (and the burst
with it) and the pace then climbs back linearly, reaching the ceiling again `recovery_s` after
falling to the floor: additive increase, multiplicative decrease, as TCP does with congestion.
Answers to requests sent before a cut carry no news, so cuts closer than `cut_interval_s` count once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from fotoowl.timeouts import within

log = logging.getLogger("fotoowl.pacer")

DEFAULT_RECOVERY_S = 60.0
DEFAULT_CUT_INTERVAL_S = 1.0
# A pacer call must never hold a copy up for long: past this, Redis counts as unreachable.
REDIS_TIMEOUT_S = 2.0
# After a failure, Redis is tried again this much later (not on every request of an outage).
REDIS_RETRY_AFTER_S = 5.0


class Pacer(Protocol):
    async def acquire(self) -> None: ...

    async def charge(self) -> None:
        """Take a token without waiting for it: the callers after this one wait for it instead."""
        ...

    async def slow_down(self) -> float:
        """Record a rate-limit answer; returns the pace in requests per second from now on."""
        ...


@dataclass(frozen=True, slots=True)
class PaceRule:
    """What both pacers enforce: the ceiling, its burst, and how the pace falls and recovers."""

    max_rate_per_s: float
    max_burst: int
    recovery_s: float = DEFAULT_RECOVERY_S
    cut_interval_s: float = DEFAULT_CUT_INTERVAL_S

    def __post_init__(self) -> None:
        if self.max_rate_per_s <= 0:
            raise ValueError("rate_per_s must be positive")
        if self.max_burst < 1:
            raise ValueError("burst must be at least 1")
        if self.recovery_s <= 0:
            raise ValueError("recovery_s must be positive")

    @property
    def floor_rate_per_s(self) -> float:
        # One request a second still makes progress; Retry-After and backoff handle anything worse.
        return min(self.max_rate_per_s, 1.0)

    def burst_at(self, rate_per_s: float) -> float:
        """The burst shrinks with the pace."""
        return max(1.0, self.max_burst * rate_per_s / self.max_rate_per_s)


class LocalPacer:
    """Adaptive token bucket for one process: `burst` requests at once, then `rate_per_s` on average."""

    def __init__(
        self,
        rate_per_s: float,
        burst: int,
        *,
        recovery_s: float = DEFAULT_RECOVERY_S,
        cut_interval_s: float = DEFAULT_CUT_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rule = PaceRule(rate_per_s, burst, recovery_s, cut_interval_s)
        self._clock = clock
        self._tokens = float(burst)
        self._rate_per_s = rate_per_s
        self._updated_s = clock()
        self._cut_s = float("-inf")

    def _settle(self) -> float:
        """Bring rate and tokens up to now; returns now."""
        now_s = self._clock()
        elapsed_s = max(0.0, now_s - self._updated_s)
        rule = self.rule
        self._rate_per_s = min(
            rule.max_rate_per_s, self._rate_per_s + elapsed_s * rule.max_rate_per_s / rule.recovery_s
        )
        self._tokens = min(self.burst, self._tokens + elapsed_s * self._rate_per_s)
        self._updated_s = now_s
        return now_s

    @property
    def rate_per_s(self) -> float:
        self._settle()
        return self._rate_per_s

    @property
    def burst(self) -> float:
        return self.rule.burst_at(self._rate_per_s)

    def reserve(self) -> float:
        """Take one token now and return how long the caller must wait before using it."""
        self._settle()
        self._tokens -= 1.0
        return max(0.0, -self._tokens / self._rate_per_s)

    def cut(self) -> float:
        now_s = self._settle()
        if now_s - self._cut_s >= self.rule.cut_interval_s:
            self._rate_per_s = max(self.rule.floor_rate_per_s, self._rate_per_s / 2)
            self._tokens = min(self._tokens, self.burst)
            self._cut_s = now_s
        return self._rate_per_s

    async def acquire(self) -> None:
        wait_s = self.reserve()
        if wait_s > 0:
            await asyncio.sleep(wait_s)

    async def charge(self) -> None:
        self.reserve()

    async def slow_down(self) -> float:
        return self.cut()


# State lives in one hash: tokens (may go negative while callers wait), the pace at the last
# update, the time of that update and of the last cut, in microseconds of Redis TIME so that
# workers on different hosts agree. Microsecond integers are formatted with %d because Lua's
# default number formatting keeps only 14 significant digits, which would round a Unix time.
_SETTLE = """
local max_rate = tonumber(ARGV[1])
local max_burst = tonumber(ARGV[2])
local recovery_s = tonumber(ARGV[3])
local floor_rate = tonumber(ARGV[4])
local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'updated_us', 'rate', 'cut_us')
local tokens = tonumber(state[1])
local updated_us = tonumber(state[2])
local rate = tonumber(state[3]) or max_rate
local cut_us = tonumber(state[4]) or 0
if tokens == nil or updated_us == nil then
  tokens = max_burst
  updated_us = now_us
end
local elapsed_s = math.max(0, now_us - updated_us) / 1000000
rate = math.min(max_rate, rate + elapsed_s * max_rate / recovery_s)
local burst = math.max(1, max_burst * rate / max_rate)
tokens = math.min(burst, tokens + elapsed_s * rate)
"""

_SAVE = """
redis.call('HSET', KEYS[1], 'tokens', string.format('%.6f', tokens), 'updated_us', string.format('%d', now_us),
           'rate', string.format('%.6f', rate), 'cut_us', string.format('%d', cut_us))
-- Kept until the bucket is full and the pace back at its ceiling: then it equals a fresh one.
local idle_s = (burst - tokens) / rate + (max_rate - rate) * recovery_s / max_rate
redis.call('PEXPIRE', KEYS[1], math.ceil(idle_s * 1000) + 1000)
"""

_RESERVE_SCRIPT = (
    _SETTLE
    + """
tokens = tokens - 1
local wait_us = 0
if tokens < 0 then
  wait_us = math.ceil(-tokens * 1000000 / rate)
end
"""
    + _SAVE
    + """
return wait_us
"""
)

_CUT_SCRIPT = (
    _SETTLE
    + """
local cut_interval_us = tonumber(ARGV[5])
if now_us - cut_us >= cut_interval_us then
  rate = math.max(floor_rate, rate / 2)
  burst = math.max(1, max_burst * rate / max_rate)
  tokens = math.min(tokens, burst)
  cut_us = now_us
end
"""
    + _SAVE
    + """
return string.format('%.6f', rate)
"""
)


class RedisPacer:
    """Adaptive token bucket shared by every process that uses the same Redis key."""

    def __init__(
        self,
        redis: aioredis.Redis,
        key: str,
        rate_per_s: float,
        burst: int,
        *,
        recovery_s: float = DEFAULT_RECOVERY_S,
        cut_interval_s: float = DEFAULT_CUT_INTERVAL_S,
    ) -> None:
        self.rule = PaceRule(rate_per_s, burst, recovery_s, cut_interval_s)
        self.key = key
        self._reserve = redis.register_script(_RESERVE_SCRIPT)
        self._cut = redis.register_script(_CUT_SCRIPT)
        # While Redis is unreachable each process paces itself, so copies go on through an outage
        # of the queue; a rate-limit answer still halves the pace as usual.
        self.fallback = LocalPacer(rate_per_s, burst, recovery_s=recovery_s, cut_interval_s=cut_interval_s)
        self._redis_retry_at_s = float("-inf")

    def _args(self) -> list[str]:
        rule = self.rule
        return [repr(rule.max_rate_per_s), str(rule.max_burst), repr(rule.recovery_s), repr(rule.floor_rate_per_s)]

    @property
    def shared(self) -> bool:
        """False while Redis is unreachable and the local fallback paces this process."""
        return time.monotonic() >= self._redis_retry_at_s

    def _redis_failed(self, exc: BaseException) -> None:
        if self.shared:
            log.warning(
                "the shared Drive pacer is unreachable (%s); pacing this process on its own for now", type(exc).__name__
            )
        self._redis_retry_at_s = time.monotonic() + REDIS_RETRY_AFTER_S

    async def reserve(self) -> float:
        """Take one token now and return how long the caller must wait before using it."""
        if self.shared:
            try:
                wait_us = await within(self._reserve(keys=[self.key], args=self._args()), REDIS_TIMEOUT_S)
                return int(wait_us) / 1_000_000
            except (RedisError, OSError, TimeoutError) as exc:
                self._redis_failed(exc)
        return self.fallback.reserve()

    async def acquire(self) -> None:
        wait_s = await self.reserve()
        if wait_s > 0:
            await asyncio.sleep(wait_s)

    async def charge(self) -> None:
        await self.reserve()

    async def slow_down(self) -> float:
        local_rate = self.fallback.cut()
        if self.shared:
            args = [*self._args(), str(round(self.rule.cut_interval_s * 1_000_000))]
            try:
                return float(await within(self._cut(keys=[self.key], args=args), REDIS_TIMEOUT_S))
            except (RedisError, OSError, TimeoutError) as exc:
                self._redis_failed(exc)
        return local_rate


class PriorityLane:
    """Requests that must not queue behind the rest of a quota (listing pages, which keep the
    downloads fed): paced by a small bucket of their own, and charged to the shared bucket without
    waiting, so the requests queued there wait for what the lane took. The lane's share is never
    set aside: while it is idle, the rest has the whole quota, and together they stay within it."""

    def __init__(self, own: Pacer, shared: Pacer) -> None:
        self.own = own
        self.shared = shared

    async def acquire(self) -> None:
        await self.own.acquire()
        await self.shared.charge()

    async def charge(self) -> None:
        await self.own.charge()
        await self.shared.charge()

    async def slow_down(self) -> float:
        # A rate-limit answer speaks of the whole quota, whichever request drew it.
        shared_rate_per_s = await self.shared.slow_down()
        return min(await self.own.slow_down(), shared_rate_per_s)
