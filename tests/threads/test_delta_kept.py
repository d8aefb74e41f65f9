"""A delta Redis does not record is still part of the reply: the saved message holds every token."""

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
        self.appended: list[tuple[int, str]] = []

    async def append(self, *, seq: int, text: str, **_: Any) -> None:
        if not self.failed:
            self.failed = True
            raise RedisConnectionError("No connection available.")
        self.appended.append((seq, text))


async def test_a_delta_redis_fails_to_record_stays_in_the_text_the_reply_is_saved_from(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    state = _FailingOnce()
    monkeypatch.setattr(fanout, "stream_state", lambda: state)
    layer = RecordingChannelLayer()
    gen = Generation(request_id="r1", thread_id=1, message_id=1)

    gen.pending.append("Hel")
    await fanout._send_delta(gen, layer)  # Redis fails: not recorded, not sent
    gen.pending.append("lo")
    await fanout._send_delta(gen, layer)

    assert gen.text() == "Hello"  # was "lo": the first delta's text was dropped with the error
    # Seq 1 was neither recorded nor sent: a viewer sees the gap at seq 2 and re-syncs from a snapshot.
    assert gen.seq == 2 and state.appended == [(2, "lo")]
    sent = [(e["seq"], e["text"]) for e in layer.events(groups.thread_group(1))]
    assert sent == [(2, "lo")]
    assert gen.snapshot_entry()["text"] == "Hello"
