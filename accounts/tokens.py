"""Token creation and lookup (pure parts: generation and hashing)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime, timedelta

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser, User
from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from accounts.models import ApiToken

TOKEN_PREFIX = "cht_"
# A token's last_used_at is written at most once per this many seconds: staff see whether and roughly
# when a token is in use, and a burst of requests costs no write beyond the first.
LAST_USED_INTERVAL_S = 60.0


def token_generate() -> str:
    """A new secret: 'cht_' + 43 url-safe characters (256 bits)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def api_token_create(*, user: User, name: str = "") -> tuple[ApiToken, str]:
    """Create a token for `user`; returns the row and the raw secret (never stored)."""
    raw = token_generate()
    token = ApiToken.objects.create(user=user, name=name, prefix=raw[:12], key_hash=token_hash(raw))
    return token, raw


@transaction.atomic
def api_token_create_for_username(*, username: str, name: str = "") -> str:
    user_model = get_user_model()
    user, _ = user_model.objects.get_or_create(username=username)
    _, raw = api_token_create(user=user, name=name)
    return raw


def user_for_token(raw: str) -> AbstractBaseUser | None:
    """The active user owning the raw token, or None.

    The secret is never compared: the row is found by the SHA-256 of the presented token (an index
    lookup, which leaks nothing useful about the secret through timing), then the stored hash is
    compared with `hmac.compare_digest`, which takes the same time wherever the strings differ."""
    if not raw.startswith(TOKEN_PREFIX) or len(raw) > 200:
        return None
    presented = token_hash(raw)
    token = (
        ApiToken.objects.select_related("user")
        .filter(key_hash=presented, revoked_at__isnull=True, user__is_active=True)
        .first()
    )
    if token is None or not hmac.compare_digest(token.key_hash.encode(), presented.encode()):
        return None
    return token.user


def last_used_due(*, previous: float | None, now: float, interval_s: float = LAST_USED_INTERVAL_S) -> bool:
    """Pure decision: write last_used_at now, given when this process last wrote it (None: never)?"""
    return previous is None or now - previous >= interval_s


def api_token_touch(*, key_hash: str, used_at: datetime) -> int:
    """Stamp a token's last_used_at, unless another process did within LAST_USED_INTERVAL_S; returns
    the rows written. An UPDATE, not save(): no post_save (which is about revocation)."""
    stale = Q(last_used_at__isnull=True) | Q(
        last_used_at__lt=used_at - timedelta(seconds=LAST_USED_INTERVAL_S)
    )
    return ApiToken.objects.filter(stale, key_hash=key_hash).update(last_used_at=used_at)


def api_token_revoke(*, tokens: QuerySet[ApiToken]) -> int:
    """Revoke the tokens not yet revoked; returns how many. Each stops authenticating at once in this
    process and within TOKEN_CACHE_TTL_S in the others, and its open WebSockets are closed
    (accounts/signals.py, then threads/signals.py)."""
    with transaction.atomic():
        rows = list(tokens.select_for_update().filter(revoked_at__isnull=True))
        for token in rows:
            token.revoked_at = timezone.now()
            token.save(update_fields=["revoked_at"])  # post_save: the cache and the sockets (signals.py)
    return len(rows)


def bearer_from_header(value: str | bytes | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header value, else None."""
    if not value:
        return None
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()
