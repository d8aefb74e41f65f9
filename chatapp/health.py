"""/healthz: 200 when the database and the channel layer answer, else 503."""

from __future__ import annotations

import asyncio
import time

from channels.layers import get_channel_layer
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse

from core.dbasync import db_async
from core.outages import DATABASE_UNAVAILABLE, REDIS_UNAVAILABLE


@db_async
def _db_ok() -> None:
    with connection.cursor() as cur:
        cur.execute("SELECT 1")
        cur.fetchone()


async def _layer_ok() -> None:
    layer = get_channel_layer()
    assert layer is not None
    channel = await layer.new_channel()
    await layer.send(channel, {"type": "health.ping"})
    await layer.receive(channel)


async def healthz(request: HttpRequest) -> HttpResponse:
    from threads.generation import generation_service

    # Load balancers poll this first: a (re)started process begins its background work (the sweep of
    # rows a dead predecessor left `streaming`, the control channel) without waiting for a send.
    generation_service().ensure_started()
    checks: dict[str, str] = {}
    t0 = time.monotonic()
    for name, check in (("database", _db_ok), ("channel_layer", _layer_ok)):
        try:
            async with asyncio.timeout(3):
                await check()
            checks[name] = "ok"
        except Exception as exc:  # any failure means "not healthy"; the reason is reported
            checks[name] = f"error: {type(exc).__name__}"
    ok = all(v == "ok" for v in checks.values())
    body = {
        "status": "ok" if ok else "unavailable",
        "checks": checks,
        "elapsed_ms": round((time.monotonic() - t0) * 1000, 1),
    }
    if not ok:
        code, message = DATABASE_UNAVAILABLE if checks["database"] != "ok" else REDIS_UNAVAILABLE
        body["error"] = {"code": code, "message": f"{message} (see 'checks')"}
    return JsonResponse(body, status=200 if ok else 503)
