"""The arq jobs: each takes an id (JSON) and hands it to the pipeline.

Every job is idempotent: arq delivers at least once."""

from __future__ import annotations

import logging
from typing import Any

from arq import Retry

from fotoowl.pipeline import control, listing, removal, sweeper, transfer, watches, webhooks
from fotoowl.pipeline.deps import Deps
from fotoowl.resilience import is_db_outage, is_redis_outage, wait_for_database
from fotoowl.sources.base import SourceError

log = logging.getLogger("fotoowl.jobs")

# Ctx is arq's dict; the key under which it holds the worker's typed dependencies.
DEPS = "fotoowl"


def _deps(ctx: dict[str, Any]) -> Deps:
    deps: Deps = ctx[DEPS]
    return deps


def _retry_delay_s(ctx: dict[str, Any]) -> float:
    """5 s doubling at the default retry backoff (2 s), capped at 5 minutes."""
    tries: int = ctx.get("job_try", 1)
    return float(min(300.0, 2.5 * _deps(ctx).settings.retry_backoff_s * 2 ** min(tries - 1, 10)))


async def list_import(ctx: dict[str, Any], import_id: int) -> None:
    """Every failure ends in a retry or a final status: the listing has an attempt budget
    (FOTOOWL_MAX_LIST_ATTEMPTS), and outages of our own services do not spend it."""
    deps = _deps(ctx)
    extra = {"import_id": import_id}
    try:
        await listing.list_import(deps, import_id)
        return
    except Exception as exc:
        error = exc
    if is_db_outage(error) or is_redis_outage(error):
        log.warning(
            "listing met an outage (%s); it goes on once the service is back", type(error).__name__, extra=extra
        )
        await wait_for_database(deps.pool)
        raise Retry(defer=1.0) from error
    if isinstance(error, SourceError) and not error.transient:
        await control.fail_import(deps.pool, deps.settings, import_id, error.reason or "source_error", str(error))
        return
    if isinstance(error, SourceError):
        code, message = error.reason or f"http_{error.status}", str(error)
        log.warning("listing hit a transient source error: %s", message, extra=extra)
    else:
        code, message = "internal_error", f"unexpected error: {type(error).__name__}: {error}"
        log.error("listing failed unexpectedly", exc_info=error, extra=extra)
    failures = await listing.record_list_failure(deps.pool, import_id, code, message)
    if failures >= deps.settings.max_list_attempts:
        await control.fail_import(
            deps.pool,
            deps.settings,
            import_id,
            listing.LISTING_FAILED,
            f"Listing the folder failed {failures} times; the last error: {message} ({code})",
        )
        return
    raise Retry(defer=_retry_delay_s(ctx)) from error


async def transfer_import(ctx: dict[str, Any], import_id: int) -> int:
    return await transfer.transfer_import(_deps(ctx), import_id)


async def sweep(ctx: dict[str, Any]) -> None:
    await sweeper.sweep(_deps(ctx))


async def queue_watch_checks(ctx: dict[str, Any]) -> None:
    deps = _deps(ctx)
    await watches.queue_due_checks(deps.pool, deps.redis)


async def check_watch(ctx: dict[str, Any], watch_id: int) -> str | None:
    return await watches.check_watch(_deps(ctx), watch_id)


async def delete_import(ctx: dict[str, Any], import_id: int) -> bool:
    return await removal.delete_import(_deps(ctx), import_id)


# Ctx key of the worker's webhook courier (one delivery run at a time per worker).
COURIER = "fotoowl_webhooks"


async def deliver_webhooks(ctx: dict[str, Any]) -> int:
    """Every second: send the webhook deliveries that are due; returns how many were delivered."""
    deps = _deps(ctx)
    courier: webhooks.Courier = ctx.setdefault(COURIER, webhooks.Courier())
    try:
        return await courier.run(deps.pool, deps.settings)
    except Exception as exc:
        if not is_db_outage(exc):
            raise
        # The outbox is in the database: nothing is lost, and the next second's run tries again.
        log.warning("webhook deliveries wait for the database (%s)", type(exc).__name__)
        return 0
