"""Who is calling: a Bearer API token, else the Django session. Shared by HTTP views and WebSockets."""

from __future__ import annotations

from typing import Any

from channels.auth import AuthMiddleware
from channels.middleware import BaseMiddleware
from channels.sessions import CookieMiddleware, SessionMiddleware
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.http import HttpRequest

from accounts.tokens import bearer_from_header, token_hash, user_for_token
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


async def token_user(raw: str) -> AbstractBaseUser | None:
    """The user of an API token, from a short per-process cache."""
    return await _token_users.get_or_load(token_hash(raw), lambda: db_async(user_for_token)(raw))


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
