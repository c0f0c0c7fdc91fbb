"""Delivering the webhook outbox: signed POSTs, at least once, retried with backoff until given up.

A cron job runs `Courier.run` every second on every worker. Each run claims due rows with
FOR UPDATE SKIP LOCKED and a lease (next_attempt_at pushed forward), so any number of workers share
the work and a worker that dies mid-POST leaves its rows to come back when the lease runs out. The
POSTs happen outside any transaction; each outcome is recorded on its row afterwards."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from urllib.parse import urlsplit

import aiohttp
import asyncpg

from fotoowl.callbacks import GuardedResolver, RefusedAddress, UnresolvableHost, verify_callback_url
from fotoowl.config import AppSettings
from fotoowl.timeouts import within

log = logging.getLogger("fotoowl.pipeline.webhooks")

# Rows claimed at once and POSTs in flight at once, per worker process.
CLAIM_ROWS = 32
CONCURRENCY = 16
TIMEOUT_S = 10.0
# Longer than a claimed batch can take (CLAIM_ROWS / CONCURRENCY rounds of TIMEOUT_S), so a live
# worker's rows are never taken over; a dead worker's come back after this.
LEASE_S = 60.0
MAX_BACKOFF_S = 3600.0
# A run hands the worker slot back after this long; the next second's run goes on.
RUN_BUDGET_S = 20.0
# The receiver's answer kept in last_error, for people reading the deliveries.
ANSWER_EXCERPT_CHARS = 200
NO_SECRET = "not sent: this server has no FOTOOWL_WEBHOOK_SECRET to sign it with"


def _version() -> str:
    try:
        return metadata.version("fotoowl")
    except metadata.PackageNotFoundError:
        return "0"


USER_AGENT = f"fotoowl-webhooks/{_version()}"

_CLAIM = """
WITH due AS (
    SELECT id FROM webhook_deliveries
    WHERE delivered_at IS NULL AND gave_up_at IS NULL AND next_attempt_at <= now()
    ORDER BY next_attempt_at, id
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
UPDATE webhook_deliveries d SET attempts = d.attempts + 1, last_attempt_at = now(),
       next_attempt_at = now() + make_interval(secs => $2)
FROM due WHERE d.id = due.id
RETURNING d.id, d.event_id, d.event_type, d.destination, d.url, d.body, d.attempts
"""

_DELIVERED = """
UPDATE webhook_deliveries SET delivered_at = now(), last_status = $2, last_error = NULL
WHERE id = $1 AND delivered_at IS NULL
"""

# The next attempt comes after the backoff, but no later than the give-up time: the last try is made
# at that moment, and a failure then gives up.
_FAILED = """
UPDATE webhook_deliveries SET last_status = $2, last_error = $3,
       gave_up_at = CASE WHEN $4 OR now() >= created_at + make_interval(secs => $5) THEN now() END,
       next_attempt_at = least(now() + make_interval(secs => $6), created_at + make_interval(secs => $5))
WHERE id = $1 AND attempts = $7 AND delivered_at IS NULL AND gave_up_at IS NULL
RETURNING gave_up_at IS NOT NULL AS gave_up
"""

# Rows claimed by a run that is being cancelled (shutdown): due again at once, not after the lease.
_RELEASE = """
UPDATE webhook_deliveries SET next_attempt_at = now()
WHERE id = ANY($1::bigint[]) AND delivered_at IS NULL AND gave_up_at IS NULL
"""


@dataclass(frozen=True, slots=True)
class Outcome:
    status: int | None = None
    error: str | None = None
    give_up: bool = False

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def backoff_s(attempts: int, base_s: float) -> float:
    """Exponential from `base_s`, capped at an hour, with jitter so failures that came together
    (a receiver's outage) do not all come back together."""
    return float(min(MAX_BACKOFF_S, base_s * 2.0 ** min(max(attempts - 1, 0), 30)) * random.uniform(0.75, 1.25))


def signature(secret: str, body: bytes) -> str:
    """The `X-Fotoowl-Signature` of a body: HMAC-SHA256 of its exact bytes with the shared secret."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def origin(url: str) -> str:
    """The scheme and host of a URL: what logs may show (paths and queries may hold tokens)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


class Courier:
    """One worker's deliveries: a run at a time. Cron starts a job every second, and a run slowed by
    unresponsive receivers must not pile up jobs that take the worker's slots from imports. Its HTTP
    sessions are the worker's, kept from run to run (a run a second under a steady stream of events)
    and closed with the worker (`close`), never by a run that a shutdown cancels halfway."""

    def __init__(self) -> None:
        self.busy = False
        self._sessions: _Sessions | None = None

    async def run(self, pool: asyncpg.Pool, settings: AppSettings) -> int:
        if self.busy:
            return 0
        self.busy = True
        try:
            if self._sessions is None:
                self._sessions = _Sessions(settings)
            return await deliver_due(pool, settings, sessions=self._sessions)
        finally:
            self.busy = False

    async def close(self) -> None:
        sessions, self._sessions = self._sessions, None
        if sessions is not None:
            await sessions.close()


async def deliver_due(
    pool: asyncpg.Pool, settings: AppSettings, *, budget_s: float = RUN_BUDGET_S, sessions: _Sessions | None = None
) -> int:
    """Deliver what is due, batch after batch, for up to `budget_s`; returns how many were delivered.
    Without `sessions` (a Courier's), the run opens its own and closes them at its end."""
    deadline = time.monotonic() + budget_s
    delivered = 0
    own: _Sessions | None = None
    try:
        while time.monotonic() < deadline:
            rows = await pool.fetch(_CLAIM, CLAIM_ROWS, LEASE_S)
            if not rows:
                break
            if sessions is None:
                sessions = own = _Sessions(settings)
            if not settings.webhook_secret:
                log.error("%d webhook deliveries wait: FOTOOWL_WEBHOOK_SECRET is not set", len(rows))
            delivered += await _deliver_batch(pool, settings, sessions, rows)
            if len(rows) < CLAIM_ROWS:
                break
    finally:
        if own is not None:
            await own.close()
    return delivered


async def _deliver_batch(
    pool: asyncpg.Pool, settings: AppSettings, sessions: _Sessions, rows: Sequence[asyncpg.Record]
) -> int:
    semaphore = asyncio.Semaphore(CONCURRENCY)
    unrecorded = {row["id"] for row in rows}

    async def one(row: asyncpg.Record) -> bool:
        async with semaphore:
            outcome = await _attempt(settings, sessions, row)
        await _record(pool, settings, row, outcome)
        unrecorded.discard(row["id"])
        return outcome.delivered

    try:
        results = await asyncio.gather(*(one(row) for row in rows), return_exceptions=True)
    except asyncio.CancelledError:
        # A shutdown: what was not sent goes back now, so the next worker need not wait out the lease.
        if unrecorded:
            await within(pool.execute(_RELEASE, list(unrecorded)), 5.0)
        raise
    for result in results:
        # Recording an outcome failed (the database went away): those rows come back after their lease.
        if isinstance(result, BaseException):
            raise result
    return sum(1 for result in results if result is True)


async def _record(pool: asyncpg.Pool, settings: AppSettings, row: asyncpg.Record, outcome: Outcome) -> None:
    extra = {"event_id": str(row["event_id"]), "event_type": row["event_type"], "url": origin(row["url"])}
    if outcome.delivered:
        await pool.execute(_DELIVERED, row["id"], outcome.status)
        log.debug("webhook delivered", extra=extra)
        return
    wait_s = backoff_s(row["attempts"], settings.webhook_backoff_s)
    gave_up = await pool.fetchval(
        _FAILED,
        row["id"],
        outcome.status,
        outcome.error,
        outcome.give_up,
        float(settings.webhook_give_up_s),
        wait_s,
        row["attempts"],
    )
    if gave_up:
        log.warning("webhook delivery given up after %d attempts: %s", row["attempts"], outcome.error, extra=extra)
    else:
        log.info("webhook delivery failed (%s); trying again in %.1f s", outcome.error, wait_s, extra=extra)


class _Sessions:
    """HTTP sessions of one run: the admin's URL is trusted; callbacks connect only to public
    addresses (the resolver refuses the rest), unless private hosts are allowed."""

    def __init__(self, settings: AppSettings) -> None:
        timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
        headers = {"User-Agent": USER_AGENT}
        self.trusted = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=CONCURRENCY), timeout=timeout, headers=headers
        )
        if settings.webhook_allow_private_hosts:
            self.callbacks = self.trusted
        else:
            self.callbacks = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=CONCURRENCY, resolver=GuardedResolver(), use_dns_cache=False),
                timeout=timeout,
                headers=headers,
            )

    async def close(self) -> None:
        await self.trusted.close()
        if self.callbacks is not self.trusted:
            await self.callbacks.close()


async def _attempt(settings: AppSettings, sessions: _Sessions, row: asyncpg.Record) -> Outcome:
    """One POST of one delivery; never raises (every failure is an outcome to record)."""
    secret = settings.webhook_secret
    if not secret:
        return Outcome(error=NO_SECRET)
    url: str = row["url"]
    callback = row["destination"] == "callback_url"
    if callback:
        # Checked again: DNS may have changed since the URL was given (names are checked once more as
        # the connection is made, by the guarded resolver).
        try:
            await verify_callback_url(url, settings)
        except UnresolvableHost as exc:
            return Outcome(error=str(exc))
        except ValueError as exc:
            return Outcome(error=f"refused: {exc}", give_up=True)
    body = row["body"].encode()
    headers = {
        "Content-Type": "application/json",
        "X-Fotoowl-Event": row["event_type"],
        "X-Fotoowl-Delivery": str(row["event_id"]),
        "X-Fotoowl-Signature": signature(secret.get(), body),
    }
    session = sessions.callbacks if callback else sessions.trusted
    try:
        async with session.post(url, data=body, headers=headers, allow_redirects=False) as resp:
            answer = await resp.content.read(ANSWER_EXCERPT_CHARS * 4)
            return Outcome(status=resp.status, error=_answer_error(resp, answer))
    except aiohttp.ClientConnectorDNSError as exc:
        if isinstance(exc.os_error, RefusedAddress):
            return Outcome(error=f"refused: {exc.os_error}", give_up=True)
        return Outcome(error=f"could not resolve {origin(url)}: {exc.os_error}")
    except TimeoutError:
        return Outcome(error=f"no answer within {TIMEOUT_S:g} s")
    except (aiohttp.ClientError, OSError) as exc:
        return Outcome(error=f"{type(exc).__name__}: {exc}"[:500])


def _answer_error(resp: aiohttp.ClientResponse, answer: bytes) -> str | None:
    if 200 <= resp.status < 300:
        return None
    if 300 <= resp.status < 400:
        location = resp.headers.get("Location", "")
        return f"HTTP {resp.status}: redirects are not followed (Location: {location[:300]})"
    text = answer.decode("utf-8", "replace").replace("\x00", "").strip()[:ANSWER_EXCERPT_CHARS]
    return f"HTTP {resp.status}: {text}" if text else f"HTTP {resp.status}"
