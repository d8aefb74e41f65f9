"""Token creation and lookup (pure parts: generation and hashing)."""

from __future__ import annotations

import hashlib
import secrets

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser, User
from django.db import transaction

from accounts.models import ApiToken

TOKEN_PREFIX = "cht_"


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
    """The active user owning the raw token, or None."""
    if not raw.startswith(TOKEN_PREFIX) or len(raw) > 200:
        return None
    token = (
        ApiToken.objects.select_related("user")
        .filter(key_hash=token_hash(raw), revoked_at__isnull=True, user__is_active=True)
        .first()
    )
    return token.user if token else None


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
