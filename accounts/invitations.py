"""Invitation links (SIGNUP_MODE=closed): staff create them in admin; a visitor who opens one may sign
up once, before it expires. Only a hash of a link's key is stored (in the database and in the visitor's
session): the link is shown to staff once, when it is made."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone

from accounts.models import Invitation

# The session remembers the hash of the link the visitor opened, until they sign up.
SESSION_KEY = "accounts_invitation_hash"


def invitation_key() -> str:
    """A new link's key: 192 random bits, so a plain SHA-256 of it cannot be reversed by guessing."""
    return secrets.token_urlsafe(24)


def invitation_hash(key: str) -> str:
    """What is stored of a key (pure)."""
    return hashlib.sha256(key.encode()).hexdigest()


def invitation_expiry(*, now: datetime, days: int) -> datetime:
    return now + timedelta(days=days)


def invitation_usable(invitation: Invitation | None, *, now: datetime) -> bool:
    """Not used yet and not expired (pure)."""
    return invitation is not None and invitation.used_at is None and invitation.expires_at > now


def invitation_create(
    *, created_by: Any, note: str = "", now: datetime | None = None
) -> tuple[Invitation, str]:
    """A new invitation and its key (for the link; not stored, so shown once)."""
    now = now or timezone.now()
    key = invitation_key()
    invitation = Invitation.objects.create(
        key_hash=invitation_hash(key),
        note=note,
        created_by=created_by,
        expires_at=invitation_expiry(now=now, days=settings.INVITATION_DAYS),
    )
    return invitation, key


def _usable_by_hash(key_hash: str) -> Invitation | None:
    found = Invitation.objects.filter(key_hash=key_hash).first()
    return found if invitation_usable(found, now=timezone.now()) else None


def invitation_find(key: str) -> Invitation | None:
    """The usable invitation a link's key opens, if any."""
    return _usable_by_hash(invitation_hash(key))


def invitation_remember(*, request: HttpRequest, key: str) -> None:
    """The visitor opened this link: their sign-up may use it (its hash is kept in the session)."""
    request.session[SESSION_KEY] = invitation_hash(key)


def invitation_in_session(request: HttpRequest) -> Invitation | None:
    key_hash = request.session.get(SESSION_KEY) if hasattr(request, "session") else None
    return _usable_by_hash(key_hash) if isinstance(key_hash, str) else None


def invitation_use(*, request: HttpRequest, user: Any) -> bool:
    """Spend the session's invitation on `user` (at sign-up); False when there was none to spend."""
    key_hash = request.session.pop(SESSION_KEY, None) if hasattr(request, "session") else None
    if not isinstance(key_hash, str):
        return False
    with transaction.atomic():
        n = Invitation.objects.filter(key_hash=key_hash, used_at__isnull=True).update(
            used_at=timezone.now(), used_by=user
        )
    return n == 1
