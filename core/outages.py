"""Which exceptions mean "a dependency is down" rather than "a bug", and what users are told: the API
answers them `503` with a JSON error, the WebSocket with an `error` frame, /healthz with `503`
(docs/api.md: 503 when a dependency is down, never 500).

One definition for every caller (the pacer and the quotas fall back on it, the views answer 503 on it).
"""

from __future__ import annotations

from django.db import InterfaceError, OperationalError
from psycopg_pool import PoolTimeout
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = [
    "DATABASE_DOWN",
    "DATABASE_UNAVAILABLE",
    "DEPENDENCY_DOWN",
    "DEPENDENCY_RETRY_AFTER_S",
    "REDIS_DOWN",
    "REDIS_UNAVAILABLE",
    "unavailable",
]

# Django wraps the driver's errors (a refused or dropped connection is OperationalError, a closed one
# InterfaceError); a pool that cannot hand out a connection within DB_POOL_TIMEOUT_S raises PoolTimeout.
DATABASE_DOWN: tuple[type[Exception], ...] = (OperationalError, InterfaceError, PoolTimeout)
# redis-py (ours and channels_redis's) turns every socket OSError (refused, reset, DNS, timeout) into
# these, so a bare OSError is not Redis and stays a bug (tests/core/test_outages.py pins it).
REDIS_DOWN: tuple[type[Exception], ...] = (RedisConnectionError, RedisTimeoutError)
DEPENDENCY_DOWN = DATABASE_DOWN + REDIS_DOWN

# How long a client should wait before retrying a request that met a dependency outage.
DEPENDENCY_RETRY_AFTER_S = 5.0

DATABASE_UNAVAILABLE = (
    "database_unavailable",
    "The database is not answering; try again in a few seconds.",
)
REDIS_UNAVAILABLE = (
    "dependency_unavailable",
    "Redis (the message bus between server processes) is not answering; try again in a few seconds.",
)


def unavailable(exc: BaseException) -> tuple[str, str] | None:
    """(code, message) when `exc` means the database or Redis is down, else None."""
    if isinstance(exc, DATABASE_DOWN):
        return DATABASE_UNAVAILABLE
    if isinstance(exc, REDIS_DOWN):
        return REDIS_UNAVAILABLE
    return None
