"""core.dbasync.db_async: the hot path's way into the ORM."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from core import dbasync, urgent
from core.dbasync import db_async

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

    monkeypatch.setattr(dbasync, "_close_stale_connections", broken)
    with pytest.raises(ConnectionError, match="cleanup failed"):
        await asyncio.wait_for(db_async(_echo)(1), 10)


def test_an_urgent_caller_resumes_ahead_of_the_work_queued_before_its_answer() -> None:
    """core/urgent.py: the answer comes back in the caller's context, so an urgent caller (a burst's
    leader on its way to the provider) does not wait behind a loop full of other arrivals."""
    loop = asyncio.new_event_loop()
    assert urgent.install(loop)
    ticks = [0]
    answered: list[int] = []
    done = asyncio.Event()

    def tick() -> None:  # one of many ordinary callbacks, each queueing itself again
        ticks[0] += 1
        if not done.is_set():
            loop.call_soon(tick)

    real = loop.call_soon_threadsafe

    def noting(*args: Any, **kwargs: Any) -> Any:
        answered.append(ticks[0])  # the worker hands the answer over now
        return real(*args, **kwargs)

    loop.call_soon_threadsafe = noting  # type: ignore[method-assign,assignment]

    async def main() -> int:
        async def caller() -> int:
            urgent.mark()
            await db_async(_echo)(1)
            done.set()
            return ticks[0]

        task = asyncio.create_task(caller())
        for _ in range(1000):
            loop.call_soon(tick)
        return await task

    try:
        resumed = loop.run_until_complete(main())
    finally:
        loop.close()
    assert len(answered) == 1
    assert resumed - answered[0] < 100  # not behind the thousand ticks queued meanwhile


# Run in a process of its own on a SQLite file: the test database is in memory, and Django never
# closes an in-memory connection, so only a file shows whether calls reconnect.
_CONNECTS_SCRIPT = """
import asyncio, json, threading
import django
django.setup()
from django.db import connection
from django.db.backends.signals import connection_created
from core.dbasync import db_async

connects = []
connection_created.connect(lambda **kw: connects.append(threading.get_ident()), weak=False)

def select_one():
    with connection.cursor() as cur:
        cur.execute("SELECT 1")
    return threading.get_ident()

def bad_sql():
    try:
        with connection.cursor() as cur:
            cur.execute("SELECT * FROM no_such_table")
    except Exception:
        return threading.get_ident()

async def main():
    before = [await db_async(select_one)() for _ in range(30)]
    connects_before = len(connects)
    failed_on = await db_async(bad_sql)()
    after = [await db_async(select_one)() for _ in range(30)]
    print(json.dumps({
        "threads_before": len(set(before)), "connects_before": connects_before,
        "threads": len(set(before) | set(after) | {failed_on}),
        "failed_thread_used_again": failed_on in after, "connects": len(connects),
    }))

asyncio.run(main())
"""


def test_a_worker_thread_keeps_its_sqlite_connection_and_drops_one_that_failed(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    env |= {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "DJANGO_SETTINGS_MODULE": "chatapp.settings",
    }
    done = subprocess.run(
        [sys.executable, "-c", _CONNECTS_SCRIPT],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    # One connection per worker thread for 30 calls (not one per call) ...
    assert seen["connects_before"] == seen["threads_before"]
    # ... and the connection whose query failed is closed like Django would: its thread, if it serves
    # another call, connects again; every other thread keeps the one it opened.
    assert seen["connects"] == seen["threads"] + int(seen["failed_thread_used_again"])
