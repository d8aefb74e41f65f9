"""core.redisconn: the app's Redis client holds up under a loaded process."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from core import redisconn

pytestmark = pytest.mark.services

# More commands in flight than the old pool had connections (64): a process running 500 generations
# has that many at once.
IN_FLIGHT = 300


async def test_commands_in_flight_on_a_loop_too_busy_to_read_their_replies_all_succeed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each command holds its connection until the loop reads the reply; while the loop is busy (a
    burst's work, here one blocking stretch longer than the pool wait) none comes back. Before, the
    commands past the 64th waited for a connection, timed out and failed: 503s, leases not renewed."""
    monkeypatch.setattr(redisconn, "POOL_TIMEOUT_S", 0.2)
    client = redisconn.redis_for_loop()
    key = f"test-redisconn-{uuid.uuid4().hex[:12]}"
    try:

        async def incr() -> int:
            return int(await client.incr(key))

        commands = [asyncio.create_task(incr()) for _ in range(IN_FLIGHT)]
        # The scenario: right after their first steps (each takes a connection or starts waiting for
        # one), a callback holds the loop longer than POOL_TIMEOUT_S, as a burst's work does.
        asyncio.get_running_loop().call_soon(time.sleep, 0.3)
        results = await asyncio.gather(*commands, return_exceptions=True)
        assert [r for r in results if isinstance(r, BaseException)] == []
        assert await client.get(key) == str(IN_FLIGHT).encode()
    finally:
        await client.delete(key)
