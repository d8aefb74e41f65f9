"""daphne's HTTP layer tuned for this app: work it never uses switched off, answers sent when finished,
and reading held while a burst's leader is on its way (core/intake.py).

Twisted's `Request.requestReceived` parses the Content-Type of every POST with the `email` package and,
for form and multipart bodies, the whole body into `request.args`. daphne never reads `args`: it hands
the raw body to the ASGI application, which parses it itself. In a 200-way burst of sends that parsing
was 16 % of the server's CPU (py-spy profile of benchmarks/coalesce_bench.py's burst).
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any


def skip_twisted_form_parsing() -> bool:
    """Make daphne's requests skip Twisted's form parsing; False when daphne is not installed."""
    try:
        from daphne.http_protocol import WebRequest
    except ImportError:  # served by another ASGI server: nothing to switch off
        return False
    # Twisted's Request.__init__ assigns the instance attribute; a data descriptor on the class wins
    # over it, so every request reads False whatever Twisted sets.
    WebRequest._parsePOSTFormSubmission = property(lambda self: False, lambda self, value: None)
    return True


def skip_twisted_access_log() -> bool:
    """Make daphne's HTTP factory skip Twisted's own access log; False when daphne is not installed.

    daphne writes the access log (its `--access-log`, stdout by default). Twisted's HTTPFactory also
    formats a Combined Log Format line for every request and hands it to Twisted's log, which daphne
    sends nowhere (or, at `-v 2`, to the same output as a second copy): 7 % of the turn in which a
    process answers its ~500 followers of a burst (py-spy, benchmarks/coalesce_bench.py)."""
    try:
        from daphne.http_protocol import HTTPFactory
    except ImportError:  # served by another ASGI server
        return False
    HTTPFactory.log = _no_access_line
    return True


def _no_access_line(self: Any, request: Any) -> None:
    return None


def urgent_first() -> bool:
    """Run urgent callbacks first (core/urgent.py) on daphne's event loop, which daphne makes when its
    server module is imported and runs once the application is loaded. False when this process is not
    daphne's (Twisted's reactor is not imported: importing it here would install the wrong one)."""
    reactor = sys.modules.get("twisted.internet.reactor")
    loop = getattr(reactor, "_asyncioEventloop", None)  # daphne installs Twisted's asyncio reactor
    if loop is None:
        return False
    from core import urgent

    return urgent.install(loop)


def answers_sent_at_once() -> bool:
    """Send a finished HTTP response's bytes at once, not at the reactor's next poll; False when daphne
    is not installed.

    Twisted buffers what a request writes and sends it when the loop next polls, after every callback of
    the current turn. When a generation ends, a process answers all its followers in one turn (~500 in
    a burst of 1000 over 2 processes), so their bytes left together, 0.14-0.16 s after the last token,
    the first client waiting as long as the last. Each is now sent as it is finished, which the reactor
    would have done a moment later: the same send, earlier (benchmarks/coalesce_bench.py, README)."""
    try:
        from daphne.http_protocol import WebRequest
    except ImportError:  # served by another ASGI server
        return False
    finish = WebRequest.finish
    if getattr(finish, "sends_at_once", False):
        return True

    def finish_and_send(self: Any) -> None:
        transport: Any = self.channel.transport if self.channel is not None else None
        finish(self)
        if can_send_now(transport) and _unsent(transport):  # an answer sent whole leaves nothing to send
            # Its result is not ours to act on: a failed send leaves the transport writing, and the
            # reactor meets the same failure at its next poll and closes the connection as usual.
            transport.doWrite()

    handle_reply = WebRequest.handle_reply

    def handle_reply_unwatched(self: Any, message: dict[str, Any]) -> None:
        if getattr(self, "answered", False):
            return  # sent whole, its end on its way: ignored, as daphne ignores what comes after the end
        transport: Any = self.channel.transport if self.channel is not None else None
        whole = message.get("type") == "http.response.body" and not message.get("more_body", False)
        if not whole or not can_send_now(transport) or _unsent(transport):
            handle_reply(self, message)
            return
        # The answer's bytes leave at once: the reactor need not watch the socket for them (an epoll_ctl
        # to start and one to stop, and their bookkeeping: 7 % of the turn answering ~500 followers,
        # py-spy). What the socket did not take, or a close, is the reactor's, as before.
        sized = self.responseHeaders.hasHeader(b"content-length")
        transport.startWriting = _not_yet
        try:
            # With its length given, the body written is the whole answer: it is sent here, and the
            # request's ending (Twisted's finish, daphne's access line) waits behind the other answers
            # ready in this turn of the loop. Without it, the ending writes the last chunk: sent in
            # `finish_and_send`.
            handle_reply(self, {**message, "more_body": True} if sized else message)
            if sized:
                transport.doWrite()  # as in finish_and_send: a failure is the reactor's at its next poll
        finally:
            del transport.startWriting
        if _unsent(transport) or transport.disconnecting:
            transport.startWriting()
        if sized:
            self.answered = True
            asyncio.get_running_loop().call_soon(handle_reply, self, _ENDED)

    finish_and_send.sends_at_once = True  # type: ignore[attr-defined]
    WebRequest.finish = finish_and_send
    WebRequest.handle_reply = handle_reply_unwatched
    return True


_ENDED = {"type": "http.response.body", "body": b"", "more_body": False}


def _not_yet() -> None:
    return None


def _unsent(transport: Any) -> bool:
    """Bytes written to a Twisted transport and not yet taken by its socket."""
    return bool(transport._tempDataLen) or len(transport.dataBuffer) > transport.offset


def can_send_now(transport: Any) -> bool:
    """A connected socket transport that is not closing (a closing one is the reactor's to finish: its
    last write also ends the connection)."""
    return (
        hasattr(transport, "doWrite")
        and bool(getattr(transport, "connected", False))
        and not getattr(transport, "disconnecting", True)
    )


def intake_held_for_leaders() -> bool:
    """Let a burst's leader hold the reading of requests (core/intake.py) on daphne's reactor; False
    when this process is not daphne's (Twisted's reactor is not imported)."""
    reactor = sys.modules.get("twisted.internet.reactor")
    if getattr(reactor, "_asyncioEventloop", None) is None:  # as urgent_first: daphne's reactor only
        return False
    from twisted.web.http import HTTPChannel

    from core import intake

    made = HTTPChannel.connectionMade
    if getattr(made, "holds_intake", False):
        return True
    from ops import metrics

    server = TwistedIntake(reactor)
    intake.install(server, observe=metrics.intake_held)

    def made_while_held(self: Any) -> None:
        made(self)
        server.opened(self.transport)

    made_while_held.holds_intake = True  # type: ignore[attr-defined]
    HTTPChannel.connectionMade = made_while_held  # type: ignore[method-assign]
    return True


class TwistedIntake:
    """Stops reading on the reactor's idle HTTP connections, and on those opened meanwhile, until
    `resume`. A connection in the middle of a request, a WebSocket and the listening port read on."""

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self._stopped: list[Any] = []
        self.paused = False

    def pause(self) -> None:
        from twisted.web.http import HTTPChannel

        self.paused = True
        for reader in self._reactor.getReaders():
            # An HTTP connection between requests: Twisted's HTTPChannel, behind the wrapper that would
            # have negotiated HTTP/2 (a WebSocket's transport has another protocol).
            protocol = getattr(reader, "protocol", None)
            channel = getattr(protocol, "_channel", protocol)
            if isinstance(channel, HTTPChannel) and not channel.requests:
                self._stop(reader)

    def opened(self, transport: Any) -> None:
        """A connection just made: held too while paused (it is idle: nothing read yet)."""
        if self.paused:
            self._stop(transport)

    def resume(self) -> None:
        self.paused = False
        stopped, self._stopped = self._stopped, []
        for transport in stopped:
            if transport.connected and not transport.disconnecting:
                transport.startReading()

    def _stop(self, transport: Any) -> None:
        transport.stopReading()
        self._stopped.append(transport)
