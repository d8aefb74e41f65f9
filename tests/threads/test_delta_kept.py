"""A delta Redis does not record is still part of the reply (the saved message holds every token), and
the next write gives Redis what it missed."""

from __future__ import annotations

from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from tests.threads.recording import RecordingChannelLayer
from threads import fanout, groups
from threads.generation_state import Generation


class _FailingOnce:
    """A stream state whose first append fails, as under a Redis blip or a pool with no connection free."""

    def __init__(self) -> None:
        self.failed = False
        self.appended: list[tuple[int, str, int, bool]] = []

    async def append(self, *, seq: int, text: str, offset: int, first: bool, **_: Any) -> None:
        if not self.failed:
            self.failed = True
            raise RedisConnectionError("No connection available.")
        self.appended.append((seq, text, offset, first))


async def test_a_delta_redis_fails_to_record_stays_in_the_reply_and_reaches_redis_with_the_next(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    state = _FailingOnce()
    monkeypatch.setattr(fanout, "stream_state", lambda: state)
    layer = RecordingChannelLayer()
    gen = Generation(request_id="r1", thread_id=1, message_id=1)

    for chunk in ("Hel", "lo", "!"):  # Redis fails the first: not recorded, not sent
        gen.pending.append(chunk)
        await fanout._send_delta(gen, layer)

    assert gen.text() == "Hello!"  # was "lo!": the first delta's text was dropped with the error
    assert gen.snapshot_entry() == {"request_id": "r1", "message_id": 1, "text": "Hello!", "seq": 3}
    # Redis gets the text it missed with the next write, which registers the generation (it was the
    # first to succeed): a snapshot from another process holds all text to the seq it reports.
    assert state.appended == [(2, "Hello", 0, True), (3, "!", 5, False)]
    # Seq 1 was never sent: a viewer sees the gap at seq 2 and re-syncs from a snapshot.
    sent = [(e["seq"], e["text"]) for e in layer.events(groups.thread_group(1))]
    assert sent == [(2, "lo"), (3, "!")]
