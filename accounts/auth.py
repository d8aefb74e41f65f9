"""Who is calling: a Bearer API token, else the Django session. Shared by HTTP views and WebSockets."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from channels.auth import AuthMiddleware
from channels.middleware import BaseMiddleware
from channels.sessions import CookieMiddleware, SessionMiddleware
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.http import HttpRequest
from django.utils import timezone

from accounts.tokens import (
    LAST_USED_INTERVAL_S,
    api_token_touch,
    bearer_from_header,
    last_used_due,
    token_hash,
    user_for_token,
)
from core.dbasync import db_async
from core.ttlcache import TTLCache

# Each process caches token -> user for this long (a burst of sends would otherwise repeat the same
# query hundreds of times). Revoking or deleting a token, or deactivating or deleting its user, drops
# the entries of the process that did it at once (accounts/signals.py); any other server process keeps
# answering from its cache for at most this long.
TOKEN_CACHE_TTL_S = 5.0
_token_users: TTLCache[AbstractBaseUser | None] = TTLCache(TOKEN_CACHE_TTL_S)


def forget_token(key_hash: str) -> None:
    """Drop one token from this process's cache: its next use is looked up again."""
    _token_users.discard(key_hash)


def forget_all_tokens() -> None:
    _token_users.clear()


logger = logging.getLogger(__name__)


class LastUsedStamps:
    """Writes each token's last_used_at at most once per interval from this process, in a task of its
    own: the request that used the token does not wait for it."""

    def __init__(
        self,
        *,
        interval_s: float = LAST_USED_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
        max_items: int = 10_000,
    ) -> None:
        self.interval_s, self.clock, self.max_items = interval_s, clock, max_items
        self._written: dict[str, float] = {}  # token hash -> clock() when this process last wrote it
        self._tasks: set[asyncio.Task[None]] = set()

    def note(self, key_hash: str) -> None:
        """A request was authenticated with this token (called on the event loop)."""
        now = self.clock()
        if not last_used_due(previous=self._written.get(key_hash), now=now, interval_s=self.interval_s):
            return
        if len(self._written) >= self.max_items:  # only entries still inside the interval matter
            self._written = {k: t for k, t in self._written.items() if now - t < self.interval_s}
        self._written[key_hash] = now
        task = asyncio.get_running_loop().create_task(self._write(key_hash, timezone.now()))
        self._tasks.add(task)  # held until done: the loop keeps only weak references to tasks
        task.add_done_callback(self._tasks.discard)

    async def _write(self, key_hash: str, used_at: Any) -> None:
        try:
            await db_async(api_token_touch)(key_hash=key_hash, used_at=used_at)
        except Exception:  # bookkeeping: a database that is down must not fail or slow the request
            logger.warning("Could not record the use of API token %s…", key_hash[:8], exc_info=True)

    async def drain(self) -> None:
        """Wait for the writes under way (tests; a process that is about to stop)."""
        loop = asyncio.get_running_loop()
        while pending := [task for task in self._tasks if task.get_loop() is loop]:
            await asyncio.gather(*pending, return_exceptions=True)


last_used = LastUsedStamps()


async def token_user(raw: str) -> AbstractBaseUser | None:
    """The user of an API token, from a short per-process cache; a use is stamped (LastUsedStamps)."""
    key_hash = token_hash(raw)
    user = await _token_users.get_or_load(key_hash, lambda: db_async(user_for_token)(raw))
    if user is not None:
        last_used.note(key_hash)
    return user


async def request_user(request: HttpRequest) -> tuple[AbstractBaseUser | AnonymousUser, str]:
    """The user of an HTTP request and how it authenticated ('token', 'session' or 'none')."""
    raw = bearer_from_header(request.headers.get("Authorization"))
    if raw is not None:
        by_token = await token_user(raw)
        return (by_token, "token") if by_token is not None else (AnonymousUser(), "none")
    by_session = await request.auser()
    return (by_session, "session") if by_session.is_authenticated else (AnonymousUser(), "none")


class BearerTokenMiddleware(BaseMiddleware):
    """For WebSocket scopes: `Authorization: Bearer <token>` sets scope['user'] (the session is the fallback)."""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        headers = dict(scope.get("headers") or [])
        raw = bearer_from_header(headers.get(b"authorization"))
        if raw is not None:
            user = await token_user(raw)
            scope = {
                **scope,
                "user": user or AnonymousUser(),
                "auth_method": "token",
                # Revoking this token closes the sockets that carry its hash (threads/consumers.py).
                "token_hash": token_hash(raw),
            }
        return await super().__call__(scope, receive, send)


class _SessionAuthUnlessToken(AuthMiddleware):
    async def resolve_scope(self, scope: dict[str, Any]) -> None:
        if scope.get("auth_method") == "token":
            return
        await super().resolve_scope(scope)

    def populate_scope(self, scope: dict[str, Any]) -> None:
        if scope.get("auth_method") == "token":
            return
        super().populate_scope(scope)


def WebsocketAuthStack(inner: Any) -> Any:  # noqa: N802 - named like Channels' AuthMiddlewareStack
    return CookieMiddleware(SessionMiddleware(BearerTokenMiddleware(_SessionAuthUnlessToken(inner))))
