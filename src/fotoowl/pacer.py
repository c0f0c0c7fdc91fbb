"""Request pacers: token buckets that keep Drive traffic under Google's quota before it is hit.

Both pacers *reserve* a token and then sleep until it is due, so concurrent callers queue up in
arrival order instead of polling. A reservation that is cancelled while sleeping is not given back:
at worst the bucket runs a little slower than configured, never faster.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol

import redis.asyncio as aioredis


class Pacer(Protocol):
    async def acquire(self) -> None: ...


def _check_rate(rate_per_s: float, burst: int) -> None:
    if rate_per_s <= 0:
        raise ValueError("rate_per_s must be positive")
    if burst < 1:
        raise ValueError("burst must be at least 1")


class LocalPacer:
    """Token bucket for one process: `burst` requests at once, then `rate_per_s` on average."""

    def __init__(self, rate_per_s: float, burst: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        _check_rate(rate_per_s, burst)
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._updated_s = clock()

    def reserve(self) -> float:
        """Take one token now and return how long the caller must wait before using it."""
        now_s = self._clock()
        self._tokens = min(float(self.burst), self._tokens + (now_s - self._updated_s) * self.rate_per_s)
        self._updated_s = now_s
        self._tokens -= 1.0
        return max(0.0, -self._tokens / self.rate_per_s)

    async def acquire(self) -> None:
        wait_s = self.reserve()
        if wait_s > 0:
            await asyncio.sleep(wait_s)


# State lives in one hash: tokens (float, may go negative while callers wait) and the time of the
# last update in microseconds. The clock is Redis TIME so that workers on different hosts agree.
# Microsecond integers are formatted with %d because Lua's default number formatting keeps only 14
# significant digits, which would round a Unix time in microseconds.
_BUCKET_SCRIPT = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'updated_us')
local tokens = tonumber(state[1])
local updated_us = tonumber(state[2])
if tokens == nil or updated_us == nil then
  tokens = burst
  updated_us = now_us
end
local elapsed_us = math.max(0, now_us - updated_us)
tokens = math.min(burst, tokens + elapsed_us * rate / 1000000) - 1
redis.call('HSET', KEYS[1], 'tokens', string.format('%.6f', tokens),
           'updated_us', string.format('%d', now_us))
local wait_us = 0
if tokens < 0 then
  wait_us = math.ceil(-tokens * 1000000 / rate)
end
local idle_ms = math.ceil((burst - tokens) * 1000 / rate) + 1000
redis.call('PEXPIRE', KEYS[1], idle_ms)
return wait_us
"""


class RedisPacer:
    """Token bucket shared by every process that uses the same Redis key."""

    def __init__(self, redis: aioredis.Redis, key: str, rate_per_s: float, burst: int) -> None:
        _check_rate(rate_per_s, burst)
        self.key = key
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._script = redis.register_script(_BUCKET_SCRIPT)

    async def reserve(self) -> float:
        """Take one token now and return how long the caller must wait before using it."""
        wait_us = await self._script(keys=[self.key], args=[repr(self.rate_per_s), str(self.burst)])
        return int(wait_us) / 1_000_000

    async def acquire(self) -> None:
        wait_s = await self.reserve()
        if wait_s > 0:
            await asyncio.sleep(wait_s)
