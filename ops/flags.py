"""Feature flags. `flag_enabled(name)` answers from process memory: no database query per call.

A `FeatureFlag` row (Django admin) overrides `settings.FLAG_DEFAULTS[name]` (the environment); without a
row the default applies. How a change reaches every process within a second:

1. Staff save or delete a row in admin. After the commit, `flags_changed()` reloads this process's cache
   at once (the admin view runs on a sync thread, where a query is fine) and broadcasts `flags.changed`
   to the channel-layer group `chatapp.flags`.
2. Each process runs one listener per event loop, started lazily by the first `flag_enabled` call on
   that loop. It joins the group *before* its first load (so no commit can fall between the two) and
   reloads the table (one small query, on a worker thread) whenever the broadcast arrives.
3. Safety net: a cache older than `FLAG_CACHE_TTL_S` is reloaded in the background when next read, at
   most once per TTL per process, so a lost broadcast (Redis blip) heals on its own.

With the in-process channel layer (no REDIS_URL) there is one process, so step 1 alone is enough and
nothing is broadcast. Until the first load of a new process finishes, the defaults answer;
`await flags_ready()` waits for it (the /api/metrics view does).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import threading
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.layers import BaseChannelLayer, InMemoryChannelLayer, get_channel_layer
from django.conf import settings

from core import loopres
from ops import metrics

log = logging.getLogger(__name__)

FLAGS_GROUP = "chatapp.flags"
FLAGS_CHANGED = "flags.changed"
# channels_redis forgets group members after `group_expiry` (a day): listeners re-join well before.
REJOIN_S = 3600.0
# A broadcast must not hold an admin request hostage when Redis is slow or down.
BROADCAST_TIMEOUT_S = 2.0
# How long flags_ready() waits for a first load (a database that is down must not hang requests).
READY_TIMEOUT_S = 2.0


@dataclass(frozen=True, slots=True)
class _Snapshot:
    overrides: Mapping[str, bool]
    # _clock() after which the next read triggers a background reload.
    expires: float
    # _clock() when the query that produced `overrides` started: a slower, older read never
    # replaces a newer one (the admin thread and a loop's listener may reload at the same time).
    read_at: float


# The clock of every TTL decision; tests replace it to drive time instead of sleeping.
_clock = time.monotonic

_EMPTY = _Snapshot(MappingProxyType({}), expires=0.0, read_at=float("-inf"))
_state = _EMPTY
_state_lock = threading.Lock()
_sync_reload_lock = threading.Lock()


def flag_enabled(name: str) -> bool:
    """The flag's effective value in this process. Hot path: a dict read and a clock read."""
    value = _current().overrides.get(name)
    return bool(settings.FLAG_DEFAULTS.get(name, False)) if value is None else value


def _current() -> _Snapshot:
    """The cached values; starts this loop's listener, and asks for a reload when they are stale."""
    state = _state
    loop = asyncio._get_running_loop()
    if loop is not None:
        listener = _listener_for(loop)
        if state.expires <= _clock():
            listener.wake.set()
    elif state.expires <= _clock():
        # Sync caller (a view's thread, a command): querying here does not block an event loop.
        _reload_sync()
        state = _state
    return state


def flags_snapshot() -> dict[str, bool]:
    """Effective value of every known flag in this process."""
    return _effective(_current())


def _effective(state: _Snapshot) -> dict[str, bool]:
    defaults = settings.FLAG_DEFAULTS
    return {
        name: bool(defaults.get(name, False)) if state.overrides.get(name) is None else state.overrides[name]
        for name in sorted({*defaults, *state.overrides})
    }


async def flags_ready() -> None:
    """Wait until this loop's listener has joined the broadcast group and loaded the table once
    (returns at once afterwards; after READY_TIMEOUT_S the defaults keep answering)."""
    listener = _listener_for(asyncio.get_running_loop())
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(READY_TIMEOUT_S):
            await listener.loaded.wait()


def flags_changed() -> None:
    """Propagate a committed change: reload here, then tell the other processes. Sync; call it from
    `transaction.on_commit` (never from a running event loop: it queries)."""
    _reload_sync(wait=True)
    layer = _broadcast_layer()
    if layer is None:
        return
    try:
        async_to_sync(_broadcast)(layer)
    except Exception:  # the change is saved; other processes still pick it up within FLAG_CACHE_TTL_S
        log.warning("feature-flag change not broadcast", exc_info=True)


async def _flags_aclose() -> None:
    """Stop the listener of the running loop."""
    global _last
    loop = asyncio.get_running_loop()
    with _listeners_lock:
        listener = _listeners.pop(loop, None)
        if _last is not None and _last[0] is loop:
            _last = None
    if listener is not None:
        await listener.aclose()


def flags_reset() -> None:
    """Forget cached values (tests): the next read loads again."""
    global _state
    with _state_lock:
        _state = _EMPTY


# --- loading -----------------------------------------------------------------------------------------


def _ttl() -> float:
    return float(getattr(settings, "FLAG_CACHE_TTL_S", 1.0))


def _read_rows() -> dict[str, bool]:
    from ops.models import FeatureFlag

    return dict(FeatureFlag.objects.values_list("name", "enabled"))


def _apply(overrides: dict[str, bool] | None, read_at: float) -> None:
    """Install a load's result (None: the load failed, keep the values and retry after a TTL)."""
    global _state
    with _state_lock:
        if read_at < _state.read_at:
            return
        expires = _clock() + _ttl()
        if overrides is None:
            _state = _Snapshot(_state.overrides, expires, _state.read_at)
            return
        _state = snapshot = _Snapshot(MappingProxyType(overrides), expires, read_at)
    metrics.flag_states(_effective(snapshot))


def _reload_sync(*, wait: bool = False) -> None:
    # One sync reload at a time per process; concurrent stale readers keep the old values meanwhile.
    if not _sync_reload_lock.acquire(blocking=wait):
        return
    try:
        read_at = _clock()
        try:
            rows = _read_rows()
        except Exception:
            log.warning("feature flags not loaded; using the cached values", exc_info=True)
            rows = None
        _apply(rows, read_at)
    finally:
        _sync_reload_lock.release()


def _broadcast_layer() -> BaseChannelLayer | None:
    """The layer that reaches the other processes, or None (in-process layer: there are none)."""
    layer = get_channel_layer()
    if layer is None or isinstance(layer, InMemoryChannelLayer):
        return None
    return layer


async def _broadcast(layer: BaseChannelLayer) -> None:
    async with asyncio.timeout(BROADCAST_TIMEOUT_S):
        await layer.group_send(FLAGS_GROUP, {"type": FLAGS_CHANGED})


# --- the per-loop listener ----------------------------------------------------------------------------


class _Listener:
    """Reloads the flags of its event loop's process on a broadcast or when the cache is stale."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.wake = asyncio.Event()
        self.loaded = asyncio.Event()
        self.layer: BaseChannelLayer | None = None
        self.channel: str | None = None
        self._joined_at: float | None = None
        self._receiver: asyncio.Task[None] | None = None
        # A fresh context: the first read usually happens inside a request, and Django runs each
        # request in an asgiref ThreadSensitiveContext whose executor dies with the request; a task
        # that inherited it could never cross to sync code (database_sync_to_async) again.
        self.task = loop.create_task(self._run(), name="flags-listener", context=contextvars.Context())

    async def _run(self) -> None:
        self.layer = _broadcast_layer()
        try:
            while True:
                # Cleared before the load: a wake-up that arrives during the query means another load.
                self.wake.clear()
                # Join first: a commit after the join is broadcast to us, one before it is in the load.
                await self._join()
                await self._reload()
                self.loaded.set()
                await self.wake.wait()
        finally:
            # Cancelled: stop receiving. No network clean-up here: at loop shutdown the layer's
            # connections may be gone; the group entry expires by itself (aclose() leaves politely).
            if self._receiver is not None:
                self._receiver.cancel()

    async def _join(self) -> None:
        """Join the broadcast group (again, once per REJOIN_S) and start receiving."""
        if self.layer is None or (self._joined_at is not None and _clock() - self._joined_at < REJOIN_S):
            return
        try:
            if self.channel is None:
                # Default prefix on purpose: channels_redis has one inbox per (prefix, process); a
                # long-waiting receiver on its own prefix starves the others (threads/generation.py).
                self.channel = await self.layer.new_channel()
            await self.layer.group_add(FLAGS_GROUP, self.channel)
        except Exception:  # Redis down: the TTL reload still works; the next reload tries to join again
            log.warning("cannot join %s; flag changes arrive by TTL only", FLAGS_GROUP, exc_info=True)
            return
        self._joined_at = _clock()
        if self._receiver is None:
            self._receiver = asyncio.create_task(
                self._receive(self.layer, self.channel), name="flags-receive"
            )

    async def _reload(self) -> None:
        read_at = _clock()
        try:
            rows: dict[str, bool] | None = await database_sync_to_async(_read_rows)()
        except Exception:
            log.warning("feature flags not loaded; using the cached values", exc_info=True)
            rows = None
        _apply(rows, read_at)

    async def _receive(self, layer: BaseChannelLayer, channel: str) -> None:
        while True:
            try:
                message: dict[str, Any] = await layer.receive(channel)
            except Exception:
                # Redis unreachable: wait instead of spinning; stale reads still reload by TTL.
                log.warning("flag broadcasts not received; retrying in 1 s", exc_info=True)
                await asyncio.sleep(1.0)
                continue
            if message.get("type") == FLAGS_CHANGED:
                self.wake.set()

    async def aclose(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        if self.layer is not None and self.channel is not None:
            with contextlib.suppress(Exception):
                await self.layer.group_discard(FLAGS_GROUP, self.channel)


_listeners: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Listener] = weakref.WeakKeyDictionary()
# The last (loop, listener) pair: spares the hot path the weak-dictionary lookup (one loop per process).
_last: tuple[asyncio.AbstractEventLoop, _Listener] | None = None
_listeners_lock = threading.Lock()


def _listener_for(loop: asyncio.AbstractEventLoop) -> _Listener:
    global _last
    last = _last
    if last is not None and last[0] is loop:
        return last[1]
    with _listeners_lock:
        listener = _listeners.get(loop)
        if listener is None:
            listener = _listeners[loop] = _Listener(loop)
            loopres.register(_flags_aclose, stage=loopres.Stage.WORKER)
        _last = (loop, listener)
    return listener


metrics.flag_states(_effective(_state))
