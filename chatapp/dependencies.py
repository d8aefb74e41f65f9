"""The ASGI guard of the WebSocket stack: a dependency outage (core/outages.py) becomes an `error` frame
and a close code the page understands, instead of a dropped socket and a traceback.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from core.outages import DEPENDENCY_DOWN, REDIS_UNAVAILABLE, unavailable

log = logging.getLogger(__name__)

# WebSocket close code after the `error` frame: the page reconnects with backoff and resumes from a
# snapshot. (RFC 6455's 1013 "Try Again Later" would fit, but daphne's autobahn sends only 1000 or
# 3000-4999.)
CLOSE_DEPENDENCY_DOWN = 4503


class WebsocketDependencyGuard:
    """ASGI wrapper of the WebSocket stack: an outage met anywhere in it (the session or token lookup
    of the handshake, the consumer, the channel layer's receive when Redis goes away) becomes an `error`
    frame naming it and a close with CLOSE_DEPENDENCY_DOWN, instead of daphne dropping the socket
    (1011, or a failed handshake) and logging a traceback."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        state = {"accepted": False, "closed": False}

        async def tracking_send(message: dict[str, Any]) -> None:
            if message["type"] == "websocket.accept":
                state["accepted"] = True
            elif message["type"] == "websocket.close":
                state["closed"] = True
            await send(message)

        try:
            await self.inner(scope, receive, tracking_send)
        except DEPENDENCY_DOWN as exc:
            if state["closed"]:
                return
            code, message = unavailable(exc) or REDIS_UNAVAILABLE
            log.warning("socket closed, dependency down: %s: %s", type(exc).__name__, exc)
            frame = {"type": "error", "error": {"code": code, "message": message}}
            try:
                if not state["accepted"]:
                    await send({"type": "websocket.accept"})
                await send({"type": "websocket.send", "text": json.dumps(frame)})
                await send({"type": "websocket.close", "code": CLOSE_DEPENDENCY_DOWN})
            except Exception:  # the client is gone too
                log.debug("could not tell the socket", exc_info=True)
