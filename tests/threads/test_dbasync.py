"""threads.dbasync.db_async: the hot path's way into the ORM."""

from __future__ import annotations

import asyncio
import threading

import pytest

from threads import dbasync
from threads.dbasync import db_async

# close_old_connections() runs around each call: a worker thread may hold a connection from a test before.
pytestmark = pytest.mark.django_db

_release = threading.Event()
_finished = threading.Event()
_calls: list[str] = []


def _echo(value: int) -> tuple[int, str]:
    return value, threading.current_thread().name


def _fail() -> None:
    raise LookupError("from the worker")


def _slow(tag: str) -> str:
    _release.wait(10)
    _calls.append(tag)
    _finished.set()
    return tag


async def test_runs_on_a_worker_thread_and_returns_its_result() -> None:
    value, thread = await db_async(_echo)(7)
    assert value == 7 and thread.startswith("db") and thread != threading.current_thread().name
    assert db_async(_echo) is db_async(_echo)  # one wrapper per function


async def test_the_exception_reaches_the_caller() -> None:
    with pytest.raises(LookupError, match="from the worker"):
        await db_async(_fail)()


async def test_a_cancelled_caller_stops_waiting_and_the_call_still_finishes() -> None:
    _release.clear()
    _finished.clear()
    task = asyncio.create_task(db_async(_slow)("cancelled"))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    _release.set()
    # The work runs to its end (as a committed transaction would); the next call is served normally.
    assert await asyncio.wait_for(asyncio.to_thread(_finished.wait, 10), 11)
    assert _calls[-1] == "cancelled"
    assert (await asyncio.wait_for(db_async(_echo)(8), 10))[0] == 8


async def test_a_failing_connection_cleanup_reaches_the_caller_instead_of_a_hang(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken() -> None:
        raise ConnectionError("cleanup failed")

    monkeypatch.setattr(dbasync, "close_old_connections", broken)
    with pytest.raises(ConnectionError, match="cleanup failed"):
        await asyncio.wait_for(db_async(_echo)(1), 10)
