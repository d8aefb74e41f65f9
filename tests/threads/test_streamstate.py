"""The Redis stream state against a real Redis: the first delta registers a generation, later deltas
only add text and move the seq, a snapshot reads both, and a write whose reply was lost is not doubled
by the next."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import TimeoutError as RedisTimeoutError

from tests.redisutil import scratch_redis
from tests.threads.recording import RecordingChannelLayer
from threads import fanout
from threads.generation_state import Generation
from threads.streamstate import ENTRY_TTL_S, RedisStreamState

pytestmark = pytest.mark.services


class Counting(Redis):
    commands = 0

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        Counting.commands += 1
        return await super().execute_command(*args, **options)


@pytest.fixture
async def state() -> AsyncIterator[RedisStreamState]:
    async with scratch_redis("ss", Counting) as (client, prefix):
        yield RedisStreamState(client, prefix)


async def test_the_first_delta_registers_and_later_ones_only_add_text(state: RedisStreamState) -> None:
    await state.append(request_id="r1", thread_id=7, message_id=42, seq=1, text="Hel", offset=0, first=True)
    Counting.commands = 0
    offset = 3
    for seq, text in ((2, "lo"), (3, ", "), (4, "world")):
        await state.append(
            request_id="r1", thread_id=7, message_id=42, seq=seq, text=text, offset=offset, first=False
        )
        offset += len(text)
    assert Counting.commands == 3  # one script call a delta
    assert await state.in_flight(7) == [
        {"request_id": "r1", "message_id": 42, "text": "Hello, world", "seq": 4}
    ]
    assert await state.text_of(message_id=42) == "Hello, world"
    for key in (state._text_key(42), state._meta_key(42), state._thread_key(7)):
        assert 0 < await state._redis.ttl(key) <= ENTRY_TTL_S  # set by the first delta, kept since
    await state.remove(message_id=42, thread_id=7)
    assert await state.in_flight(7) == [] and await state.text_of(message_id=42) is None


class _ReplyLostOnce:
    """The real stream state, but the first write's reply is lost: Redis executed it, the caller sees an
    error (a timeout or a dropped connection after the command went out)."""

    def __init__(self, real: RedisStreamState) -> None:
        self.real, self.lost = real, False

    async def append(self, **kwargs: Any) -> None:
        await self.real.append(**kwargs)
        if not self.lost:
            self.lost = True
            raise RedisTimeoutError("Timeout reading from socket")


async def test_a_write_whose_reply_was_lost_is_not_doubled_by_the_next(
    state: RedisStreamState, monkeypatch: pytest.MonkeyPatch
) -> None:
    lossy = _ReplyLostOnce(state)
    monkeypatch.setattr(fanout, "stream_state", lambda: lossy)
    gen = Generation(request_id="r1", thread_id=7, message_id=42)
    for chunk in ("Hé", "llo", "!"):  # a character of two bytes: offsets count bytes
        gen.pending.append(chunk)
        await fanout._send_delta(gen, RecordingChannelLayer())
    # Was "HéHéllo!": the next write gave Redis again the text it had recorded, and Redis appended it.
    assert await state.text_of(message_id=42) == "Héllo!" == gen.text()
    assert await state.in_flight(7) == [{"request_id": "r1", "message_id": 42, "text": "Héllo!", "seq": 3}]


async def test_text_redis_lost_is_not_padded(state: RedisStreamState) -> None:
    """An entry Redis lost (a restart) is written from the text it is given: no NUL bytes before it."""
    await state.append(
        request_id="r1", thread_id=7, message_id=42, seq=5, text="tail", offset=40, first=False
    )
    assert await state.text_of(message_id=42) == "tail"
