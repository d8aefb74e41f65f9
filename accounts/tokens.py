"""Token creation and lookup (pure parts: generation and hashing)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime, timedelta
from typing import Any

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


# The longest expiry a user may choose for their own token (POST /api/tokens, the settings page).
MAX_EXPIRES_IN_DAYS = 3650
MAX_TOKEN_NAME_CHARS = 100


def api_token_create(
    *, user: User, name: str = "", expires_at: datetime | None = None, request: Any = None
) -> tuple[ApiToken, str]:
    """Create a token for `user`; returns the row and the raw secret (never stored)."""
    from accounts.audit import audit_record
    from accounts.models import AuditEvent

    raw = token_generate()
    with transaction.atomic():
        token = ApiToken.objects.create(
            user=user, name=name, prefix=raw[:12], key_hash=token_hash(raw), expires_at=expires_at
        )
        audit_record(
            kind=AuditEvent.TOKEN_CREATED,
            user=user,
            request=request,
            detail={"token": token.pk, "name": name},
        )
    return token, raw


def token_expiry(*, expires_in_days: int | None, now: datetime) -> datetime | None:
    """When a token asked for with `expires_in_days` (None: never) expires (pure)."""
    return None if expires_in_days is None else now + timedelta(days=expires_in_days)


def api_token_list_for_user(*, user: Any) -> list[dict[str, Any]]:
    """The user's tokens not revoked, newest first, without any secret."""
    rows = ApiToken.objects.filter(user=user, revoked_at__isnull=True).order_by("-created_at", "-pk")
    return [api_token_data(t) for t in rows]


def api_token_data(token: ApiToken) -> dict[str, Any]:
    def iso(value: datetime | None) -> str | None:
        return None if value is None else value.isoformat().replace("+00:00", "Z")

    return {
        "id": token.pk,
        "name": token.name,
        "prefix": token.prefix,
        "created_at": iso(token.created_at),
        "expires_at": iso(token.expires_at),
        "last_used_at": iso(token.last_used_at),
    }


def api_token_revoke_own(*, user: Any, token_id: int, request: Any = None) -> bool:
    """Revoke one of the user's own tokens; False when there is none with that id (or it is revoked)."""
    return api_token_revoke(tokens=ApiToken.objects.filter(user=user, pk=token_id), request=request) > 0


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
        .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=timezone.now()))
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


def api_token_revoke(*, tokens: QuerySet[ApiToken], request: Any = None, actor: Any = None) -> int:
    """Revoke the tokens not yet revoked; returns how many. Each stops authenticating at once in this
    process and within TOKEN_CACHE_TTL_S in the others, and its open WebSockets are closed
    (accounts/signals.py, then threads/signals.py)."""
    from accounts.audit import audit_record
    from accounts.models import AuditEvent

    with transaction.atomic():
        rows = list(
            tokens.select_related("user").select_for_update(of=("self",)).filter(revoked_at__isnull=True)
        )
        for token in rows:
            token.revoked_at = timezone.now()
            token.save(update_fields=["revoked_at"])  # post_save: the cache and the sockets (signals.py)
            audit_record(
                kind=AuditEvent.TOKEN_REVOKED,
                user=token.user,
                request=request,
                actor=actor,
                detail={"token": token.pk, "name": token.name},
            )
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
