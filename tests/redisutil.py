"""A scratch corner of the real Redis (REDIS_URL) for the tests that talk to it."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypeVar, cast

from redis.asyncio import Redis

R = TypeVar("R", bound=Redis)


@asynccontextmanager
async def scratch_redis(name: str, client_cls: type[R]) -> AsyncIterator[tuple[R, str]]:
    """A client of `client_cls` on REDIS_URL and a key prefix of its own; the prefix's keys are
    deleted and the client closed afterwards."""
    client = cast(R, client_cls.from_url(os.environ["REDIS_URL"]))
    prefix = f"test-{name}-{uuid.uuid4().hex[:12]}"
    try:
        yield client, prefix
    finally:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
