"""The Redis stream state against a real Redis: the first delta registers a generation, later deltas
only add text and move the seq, and a snapshot reads both."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from tests.redisutil import scratch_redis
from threads.streamstate import ENTRY_TTL_S, RedisStreamState

pytestmark = pytest.mark.services


class Counting(Redis):
    commands = 0

    def pipeline(self, *args: Any, **kwargs: Any) -> Any:
        pipe = super().pipeline(*args, **kwargs)
        execute = pipe.execute

        async def counted(*a: Any, **k: Any) -> Any:
            Counting.commands += len(pipe.command_stack)
            return await execute(*a, **k)

        pipe.execute = counted  # type: ignore[method-assign]
        return pipe


@pytest.fixture
async def state() -> AsyncIterator[RedisStreamState]:
    async with scratch_redis("ss", Counting) as (client, prefix):
        yield RedisStreamState(client, prefix)


async def test_the_first_delta_registers_and_later_ones_only_add_text(state: RedisStreamState) -> None:
    Counting.commands = 0
    await state.append(request_id="r1", thread_id=7, message_id=42, seq=1, text="Hel", first=True)
    first = Counting.commands
    for seq, text in ((2, "lo"), (3, ", "), (4, "world")):
        await state.append(request_id="r1", thread_id=7, message_id=42, seq=seq, text=text, first=False)
    assert (Counting.commands - first) / 3 == 2  # APPEND and HSET seq
    assert await state.in_flight(7) == [
        {"request_id": "r1", "message_id": 42, "text": "Hello, world", "seq": 4}
    ]
    assert await state.text_of(message_id=42) == "Hello, world"
    for key in (state._text_key(42), state._meta_key(42), state._thread_key(7)):
        assert 0 < await state._redis.ttl(key) <= ENTRY_TTL_S  # set by the first delta, kept since
    await state.remove(message_id=42, thread_id=7)
    assert await state.in_flight(7) == [] and await state.text_of(message_id=42) is None
