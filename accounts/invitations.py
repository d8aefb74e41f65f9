"""Invitation links (SIGNUP_MODE=closed): staff create them in admin; a visitor who opens one may sign
up once, before it expires."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone

from accounts.models import Invitation

SESSION_KEY = "accounts_invitation"


def invitation_key() -> str:
    return secrets.token_urlsafe(24)


def invitation_expiry(*, now: datetime, days: int) -> datetime:
    return now + timedelta(days=days)


def invitation_usable(invitation: Invitation | None, *, now: datetime) -> bool:
    """Not used yet and not expired (pure)."""
    return invitation is not None and invitation.used_at is None and invitation.expires_at > now


def invitation_create(*, created_by: Any, note: str = "", now: datetime | None = None) -> Invitation:
    now = now or timezone.now()
    return Invitation.objects.create(
        key=invitation_key(),
        note=note,
        created_by=created_by,
        expires_at=invitation_expiry(now=now, days=settings.INVITATION_DAYS),
    )


def invitation_find(key: str) -> Invitation | None:
    found = Invitation.objects.filter(key=key).first()
    return found if invitation_usable(found, now=timezone.now()) else None


def invitation_in_session(request: HttpRequest) -> Invitation | None:
    key = request.session.get(SESSION_KEY) if hasattr(request, "session") else None
    return invitation_find(key) if isinstance(key, str) else None


def invitation_use(*, request: HttpRequest, user: Any) -> bool:
    """Spend the session's invitation on `user` (at sign-up); False when there was none to spend."""
    key = request.session.pop(SESSION_KEY, None) if hasattr(request, "session") else None
    if not isinstance(key, str):
        return False
    with transaction.atomic():
        n = Invitation.objects.filter(key=key, used_at__isnull=True).update(
            used_at=timezone.now(), used_by=user
        )
    return n == 1
