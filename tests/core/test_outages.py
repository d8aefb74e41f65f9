"""One definition of "a dependency is down" (core/outages.py), and the redis-py behaviour it rests on:
every socket failure reaches the caller as a redis ConnectionError or TimeoutError, never a bare OSError
(so REDIS_DOWN need not, and must not, catch OSError). Local sockets only: no real Redis needed."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from django.db import InterfaceError, OperationalError
from psycopg_pool import PoolTimeout
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from core.outages import (
    DATABASE_UNAVAILABLE,
    DEPENDENCY_DOWN,
    REDIS_DOWN,
    REDIS_UNAVAILABLE,
    unavailable,
)

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Read the first command, then reset the connection (SO_LINGER 0: RST, the client's ECONNRESET)."""
    await reader.read(1)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Read the first command, then close cleanly without answering (EOF mid-reply)."""
    await reader.read(1)
    writer.close()


async def _hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Never answer (a hung Redis); the client's socket_timeout ends it."""
    await reader.read()


@pytest.fixture
async def server() -> AsyncIterator[Callable[[Handler], Awaitable[int]]]:
    servers: list[asyncio.Server] = []
    writers: list[asyncio.StreamWriter] = []

    async def start(handler: Handler) -> int:
        async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writers.append(writer)
            await handler(reader, writer)

        srv = await asyncio.start_server(tracked, "127.0.0.1", 0)
        servers.append(srv)
        return int(srv.sockets[0].getsockname()[1])

    yield start
    for srv in servers:
        srv.close()
        await srv.wait_closed()
    for writer in writers:
        writer.close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _client(port: int) -> Redis:
    # As the pacer's client: no retries, a short timeout (a hung server must not hold the test).
    return Redis(
        host="127.0.0.1",
        port=port,
        socket_timeout=0.2,
        socket_connect_timeout=0.2,
        retry=Retry(NoBackoff(), 0),
    )


@pytest.mark.parametrize(
    ("handler", "expected"),
    [
        (None, RedisConnectionError),  # nothing listens: connection refused
        (_reset, RedisConnectionError),  # reset by peer while reading the reply
        (_close, RedisConnectionError),  # closed by peer before the reply
        (_hang, RedisTimeoutError),  # no reply within socket_timeout
    ],
    ids=["refused", "reset", "closed", "hung"],
)
async def test_redis_py_reports_every_socket_failure_as_redis_down(
    server: Callable[[Handler], Awaitable[int]], handler: Handler | None, expected: type[Exception]
) -> None:
    port = _closed_port() if handler is None else await server(handler)
    client = _client(port)
    try:
        # pytest.raises(REDIS_DOWN): a bare OSError escaping redis-py (an upgrade that stops wrapping
        # them) is not caught here and fails the test.
        with pytest.raises(REDIS_DOWN) as caught:
            await client.ping()
    finally:
        await client.aclose()
    assert isinstance(caught.value, expected) and not isinstance(caught.value, OSError)
    assert unavailable(caught.value) == REDIS_UNAVAILABLE


def test_no_bare_oserror_counts_as_an_outage() -> None:
    """A bare OSError (a file, a provider's socket) is not Redis: it must surface as a bug, not a 503."""
    assert not any(issubclass(kind, OSError) for kind in DEPENDENCY_DOWN)
    assert unavailable(ConnectionRefusedError(111, "Connection refused")) is None


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (OperationalError("server closed the connection"), DATABASE_UNAVAILABLE),
        (InterfaceError("connection already closed"), DATABASE_UNAVAILABLE),
        (PoolTimeout("couldn't get a connection after 5.00 sec"), DATABASE_UNAVAILABLE),
        (RedisConnectionError("Error 111 connecting"), REDIS_UNAVAILABLE),
        (RedisTimeoutError("Timeout reading"), REDIS_UNAVAILABLE),
        (ResponseError("NOSCRIPT"), None),  # Redis answered: a bug, not an outage
        (OSError("disk full"), None),
        (ValueError("bad"), None),
    ],
)
def test_unavailable_names_the_dependency(exc: BaseException, expected: tuple[str, str] | None) -> None:
    assert unavailable(exc) == expected
