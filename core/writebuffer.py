"""How many bytes a WebSocket connection has waiting to be written, for a consumer to bound.

daphne has no write backpressure: a consumer's `send` returns once autobahn has handed the frame to
Twisted, which keeps every byte the peer has not read in user space (the kernel's socket buffer takes
only its share). ASGI offers no way to ask how much is waiting, so `WriteBufferProbe`, the outermost
layer of the WebSocket stack, finds daphne's protocol behind the `send` it is given and puts a callable
in the scope: `scope[SCOPE_KEY]() -> int | None`. Under another server (or a test communicator) there is
no probe, and nothing is bounded.

A close frame sent to such a connection waits behind its backlog, while autobahn's close-handshake timer
(`closeHandshakeTimeout`, 1 s) runs from the moment the frame is queued: at its end autobahn aborts the
connection, which discards whatever is unsent, the close frame included, and the peer sees a reset
instead of the close code. `scope[PATIENCE_KEY](seconds)` sets that timer for this connection's next close.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

SCOPE_KEY = "write_buffer_size"
PATIENCE_KEY = "websocket_close_patience"
# TLS wraps the TCP transport in one more layer; nothing real nests deeper.
_MAX_WRAPPERS = 4


def unsent_bytes(transport: Any) -> int | None:
    """Bytes a Twisted transport holds unsent: its `dataBuffer` past `offset` plus the writes queued in
    `_tempDataBuffer` (twisted.internet.abstract.FileDescriptor, the same figure its own
    `_isSendBufferFull` reads), looking through wrappers such as TLS. None if it is not such a transport."""
    for _ in range(_MAX_WRAPPERS):
        if transport is None:
            return None
        data, offset, queued = (getattr(transport, a, None) for a in ("dataBuffer", "offset", "_tempDataLen"))
        if isinstance(data, bytes) and isinstance(offset, int) and isinstance(queued, int):
            return len(data) - offset + queued
        transport = getattr(transport, "transport", None)
    return None


def daphne_probe(send: Any) -> Callable[[], int | None] | None:
    """For daphne's ASGI `send` (`functools.partial(server.handle_reply, protocol)`), a callable that
    measures that connection's unsent bytes; None for any other `send`."""
    if not isinstance(send, functools.partial) or not send.args:
        return None
    protocol = send.args[0]
    if unsent_bytes(getattr(protocol, "transport", None)) is None:
        return None
    return lambda: unsent_bytes(getattr(protocol, "transport", None))


def daphne_close_patience(send: Any) -> Callable[[float], None] | None:
    """For daphne's ASGI `send`, a callable that sets how long, from the close frame, the connection
    waits for the peer's reply before aborting (autobahn reads `closeHandshakeTimeout` when it sends the
    frame); None for any other `send`."""
    protocol: Any = send.args[0] if isinstance(send, functools.partial) and send.args else None
    if not isinstance(getattr(protocol, "closeHandshakeTimeout", None), (int, float)):
        return None

    def set_patience(seconds: float) -> None:
        protocol.closeHandshakeTimeout = seconds

    return set_patience


class WriteBufferProbe:
    """ASGI middleware: `scope[SCOPE_KEY]` measures this connection's unsent bytes, `scope[PATIENCE_KEY]`
    sets its close-handshake timeout (see the module doc). It must wrap the whole stack: inner layers
    wrap `send`, hiding daphne's."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] == "websocket":
            probe, patience = daphne_probe(send), daphne_close_patience(send)
            if probe is not None:
                scope = {**scope, SCOPE_KEY: probe}
            if patience is not None:
                scope = {**scope, PATIENCE_KEY: patience}
        return await self.inner(scope, receive, send)
