"""GET /imports/{id}/webhooks: what became of each webhook event an import sent, per destination."""

from __future__ import annotations

from aiohttp import web

from fotoowl.models_webhooks import WebhookDelivery, WebhookDeliveryList
from fotoowl.web.api import MAX_PAGE, fetch_import
from fotoowl.web.errors import ApiError
from fotoowl.web.keys import DB
from fotoowl.web.params import decode_cursor, encode_cursor, int_param, path_id

STATUS_FILTERS = {
    "pending": "delivered_at IS NULL AND gave_up_at IS NULL",
    "delivered": "delivered_at IS NOT NULL",
    "failed": "gave_up_at IS NOT NULL AND delivered_at IS NULL",
}


async def list_webhooks(request: web.Request) -> web.Response:
    import_id = path_id(request)
    await fetch_import(request, import_id)
    limit = int_param(request, "limit", 100, hi=MAX_PAGE)
    cursor = request.query.get("cursor")
    after = decode_cursor(cursor) if cursor else 0
    status = request.query.get("status")
    if status is not None and status not in STATUS_FILTERS:
        raise ApiError(400, "invalid_parameter", f"'status' must be one of {', '.join(STATUS_FILTERS)}.")
    where = f"AND {STATUS_FILTERS[status]}" if status else ""
    rows = await request.app[DB].fetch(
        f"""SELECT id, event_id, event_type, destination, url, attempts, next_attempt_at, last_attempt_at,
                   last_status, last_error, created_at, delivered_at, gave_up_at
            FROM webhook_deliveries WHERE import_id = $1 AND id > $2 {where}
            ORDER BY id LIMIT $3""",
        import_id,
        after,
        limit,
    )
    next_cursor = encode_cursor(rows[-1]["id"]) if rows and len(rows) == limit else None
    page = WebhookDeliveryList(deliveries=[WebhookDelivery.from_row(r) for r in rows], next_cursor=next_cursor)
    return web.json_response(page.body())


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/imports/{id}/webhooks", list_webhooks, name="list_webhooks")
