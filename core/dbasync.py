"""One way to call the ORM from async code on the hot path."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.db import connections

# The threads every `db_async` call runs on (as many as asyncio's default executor would have).
_EXECUTOR = ThreadPoolExecutor(max_workers=min(32, (os.cpu_count() or 1) + 4), thread_name_prefix="db")


def _close_stale_connections() -> None:
    """Django's `close_old_connections` for a worker thread, except that a SQLite connection in good
    order stays open for the thread's next call.

    SQLite has no pool and Django closes a connection after every call under CONN_MAX_AGE=0 (its
    advice for ASGI, where request threads come and go). These few threads live as long as the
    process, so reconnecting (opening the file, running the WAL pragmas) was pure cost: about 1.5 ms
    of every call on the send path. PostgreSQL connections go back to their pool as before."""
    for conn in connections.all(initialized_only=True):
        if conn.vendor == "sqlite" and _reusable(conn):
            continue
        conn.close_if_unusable_or_obsolete()


def _reusable(conn: Any) -> bool:
    """Open, idle (autocommit, no transaction) and with no error: Django would keep it but for its age."""
    healthy = conn.connection is not None and not conn.errors_occurred
    return healthy and not conn.in_atomic_block and conn.get_autocommit()


def _settle(fut: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if fut.cancelled():  # the caller went away; the call itself finished (its transaction is done)
        return
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(value)


# One wrapper per function, built once (only module-level services and selectors pass here).
@functools.cache
def db_async(fn: Callable[..., Any]) -> Any:
    """`fn` as a coroutine function run on a worker thread, closing stale connections before and
    after like Channels' `database_sync_to_async` (a SQLite one is kept: `_close_stale_connections`).

    Not thread-sensitive on purpose: each call is one whole service (its own transaction), so it may
    run on any thread. Thread-sensitive calls would queue behind the request's sync middleware thread,
    or, from tasks that outlive their request (generations), on an executor that has already quit.

    Leaner than asgiref's `sync_to_async`: no context copy and no shield, so the caller resumes two
    turns of the event loop after the thread finishes, not four. On a burst of sends every turn is
    long (each runs hundreds of arrivals), and a leader's database calls lie on its path to the
    provider call (benchmarks/coalesce_bench.py). A caller that is cancelled stops waiting; the call
    itself runs to its end, as with `sync_to_async`.
    """

    def run(
        loop: asyncio.AbstractEventLoop,
        fut: asyncio.Future[Any],
        ctx: contextvars.Context,
        args: Any,
        kwargs: Any,
    ) -> None:
        outcome: tuple[bool, Any]
        try:
            _close_stale_connections()
            try:
                outcome = (True, fn(*args, **kwargs))
            finally:
                _close_stale_connections()
        except BaseException as exc:  # handed to the caller, whatever it is: it must never wait forever
            outcome = (False, exc)
        try:
            # In the caller's context: an urgent caller (core/urgent.py) resumes ahead of the others.
            loop.call_soon_threadsafe(_settle, fut, *outcome, context=ctx)
        except RuntimeError:  # the loop closed meanwhile: nobody is waiting
            pass

    @functools.wraps(fn)
    async def call(*args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        _EXECUTOR.submit(run, loop, fut, contextvars.copy_context(), args, kwargs)
        return await fut

    return call
