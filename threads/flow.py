"""Flow control for WebSocket viewers. Pure: the consumer feeds it counts and acts on its answers.

daphne has no write backpressure: a viewer that stops reading (a phone in a tunnel, a frozen tab) makes
the server buffer every frame for it without limit. A browser page acknowledges what it has received
(`{"type": "ack", "count": N}` every ACK_EVERY frames); once a viewer has acknowledged at least once,
falling more than MAX_UNACKED frames behind closes its socket with CLOSE_TOO_SLOW, which tells the page
to reconnect and resume from a fresh snapshot. Every client, acknowledging or not, is also bounded in
bytes: the consumer measures what its connection still has to write (core/writebuffer.py) and past
`max_unsent_bytes` (WS_MAX_BUFFER_BYTES) the socket closes with CLOSE_TOO_SLOW too. The stream itself
never waits for anyone: delivery to each socket is independent.
"""

from __future__ import annotations

from dataclasses import dataclass

CLOSE_TOO_SLOW = 4008
ACK_EVERY = 20
# About 6 s of deltas at the default 30 ms flush interval: far beyond a healthy client's lag, far
# below what would hold real memory (a few hundred small JSON frames).
MAX_UNACKED = 200
# How long a viewer closed with CLOSE_TOO_SLOW gets to read its backlog and the close frame behind it
# before the connection is reset (autobahn's default, 1 s from the frame being queued, reset a viewer
# that resumed reading any later: it saw 1006 instead of 4008). daphne's ping timeout (30 s) drops an
# open socket that silent; nothing is added to the backlog meanwhile, so what it holds stays bounded.
CLOSE_PATIENCE_S = 30.0


@dataclass(slots=True)
class Flow:
    max_unsent_bytes: int = 0  # 0: not bounded in bytes
    sent: int = 0
    acked: int | None = None  # None until the client's first ack: not tracked

    def on_send(self, unsent_bytes: int | None = None) -> bool:
        """Count one frame about to be sent, `unsent_bytes` still waiting before it (None: unknown);
        True if the viewer is too far behind to send it."""
        self.sent += 1
        if self.max_unsent_bytes and unsent_bytes is not None and unsent_bytes > self.max_unsent_bytes:
            return True
        return self.acked is not None and self.sent - self.acked > MAX_UNACKED

    def on_ack(self, count: object) -> bool:
        """Record an ack; False if it is malformed (not a count of frames this socket was sent)."""
        if not isinstance(count, int) or isinstance(count, bool) or not 0 <= count <= self.sent:
            return False
        self.acked = max(self.acked or 0, count)
        return True
