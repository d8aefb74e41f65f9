"""One generation's state while it runs: what its task, its delta sender (threads/fanout.py), its
ending (threads/finish.py) and its charge (threads/charging.py) share, and what a mid-stream viewer
needs (the text so far and its seq).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from providers import Completion
from threads import events

if TYPE_CHECKING:
    from threads import charging


@dataclass(eq=False)
class Generation:
    """One running provider call and the state a mid-stream viewer needs (text so far, seq)."""

    request_id: str
    thread_id: int
    message_id: int
    # Only this channel gets deltas when fan-out is off (None: the whole thread group).
    reply_channel: str | None = None
    started: float = field(default_factory=time.monotonic)
    ttft_ms: float | None = None
    queue_wait_ms: float = 0.0
    # Text received from the provider but not yet sent as a delta.
    pending: list[str] = field(default_factory=list)
    # Text of deltas 1..seq, one entry each (what a snapshot reports).
    sent: list[str] = field(default_factory=list)
    seq: int = 0
    # Deltas the shared stream state (Redis) holds: 1..recorded, recorded_bytes of UTF-8 text. Behind
    # seq after a failed write.
    recorded: int = 0
    recorded_bytes: int = 0
    finished: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    # Resolved with the terminal client event (message.done / .cancelled / .error).
    done: asyncio.Future[events.TerminalEvent] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    task: asyncio.Task[None] | None = None
    start_event: events.MessageStartEvent | None = None  # message.start, sent by the sender before any delta
    cancel_at: float | None = None  # when this process was told to cancel (cancel latency)
    # Set when identical sends may follow this one: the lease is renewed while it runs.
    coalesce_key: str | None = None
    # False for a regenerate: its key is forgotten when it ends, never answering a later one.
    keep_result: bool = True
    # The result could not be saved yet: its text stays in the stream state (the sweep's copy).
    unsaved: bool = False
    # The stream is over and its result waits for the database: a cancel no longer stops anything.
    settling: bool = False
    # Usage (threads/charging.py): who pays, the budget reservation to settle, what the call was.
    payer_id: int | None = None
    reservation: charging.Reservation | None = None
    provider: str = ""
    model: str = ""
    history: list[tuple[str, str]] = field(default_factory=list)
    completion: Completion | None = None
    called: bool = False  # the provider was asked (past the pacer)
    charged: bool = False  # its call is charged (or being charged): once per generation
    usage: events.UsageData | None = None  # what its charge recorded, for its terminal event

    def text(self) -> str:
        return "".join(self.sent) + "".join(self.pending)

    def snapshot_entry(self) -> events.InFlight:
        return {
            "request_id": self.request_id,
            "message_id": self.message_id,
            "text": "".join(self.sent),
            "seq": self.seq,
        }

    def timings(self) -> dict[str, float | None]:
        return {
            "queue_wait_ms": round(self.queue_wait_ms, 2),
            "ttft_ms": None if self.ttft_ms is None else round(self.ttft_ms, 2),
            "total_ms": round((time.monotonic() - self.started) * 1000, 2),
        }
