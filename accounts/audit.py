"""The audit log: one row per account event (log-ins and failures with the address, log-outs, password
changes and resets, second factors, API tokens, approvals, ended sessions). Written by the receivers
below and by the services that act (tokens, approval); read-only in admin; pruned after
AUDIT_RETENTION_DAYS once a day by the server (accounts/retention.py) or by `manage.py prune_audit`."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.dispatch import receiver
from django.http import HttpRequest
from django.utils import timezone

from accounts.models import AuditEvent


def client_address(request: HttpRequest | None) -> str | None:
    """The caller's address as allauth's rate limits see it (ALLAUTH_TRUSTED_PROXY_COUNT)."""
    if request is None:
        return None
    from allauth.core.internal.httpkit import get_client_ip

    try:
        return get_client_ip(request)
    except Exception:  # a malformed forwarded header: the row is still worth writing
        return None


def audit_record(
    *,
    kind: str,
    user: Any = None,
    username: str = "",
    request: HttpRequest | None = None,
    actor: Any = None,
    detail: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> AuditEvent:
    """Write one audit row (in the caller's transaction)."""
    if user is not None and getattr(user, "pk", None) is None:
        user = None
    return AuditEvent.objects.create(
        at=at or timezone.now(),
        kind=kind,
        user=user,
        username=(username or (user.get_username() if user is not None else ""))[:150],
        actor=actor if actor is not None and getattr(actor, "pk", None) else None,
        address=client_address(request),
        detail=detail or {},
    )


def retention_cutoff(*, now: datetime, days: int) -> datetime:
    """Rows older than this are deleted (pure)."""
    return now - timedelta(days=days)


def audit_prune(*, now: datetime | None = None, days: int | None = None) -> int:
    """Delete the rows past AUDIT_RETENTION_DAYS; returns how many."""
    cutoff = retention_cutoff(
        now=now or timezone.now(), days=settings.AUDIT_RETENTION_DAYS if days is None else days
    )
    old = AuditEvent.objects.filter(at__lt=cutoff)
    if not old.exists():  # the usual day: no write transaction (SQLite locks the whole file for one)
        return 0
    deleted, _ = old.delete()
    return deleted


@receiver(user_logged_in, dispatch_uid="accounts.audit_login")
def _on_login(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    audit_record(kind=AuditEvent.LOGIN, user=user, request=request)


@receiver(user_login_failed, dispatch_uid="accounts.audit_login_failed")
def _on_login_failed(
    sender: Any, credentials: dict[str, Any], request: HttpRequest | None = None, **kw: Any
) -> None:
    # Django's credentials come with the password already masked; only the name is kept.
    name = str(credentials.get("username") or credentials.get("email") or "")
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.filter(username=name).first() if name else None
    audit_record(kind=AuditEvent.LOGIN_FAILED, user=user, username=name, request=request)


@receiver(user_logged_out, dispatch_uid="accounts.audit_logout")
def _on_logout(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    if user is not None and user.pk is not None:
        audit_record(kind=AuditEvent.LOGOUT, user=user, request=request)


def connect_allauth_receivers() -> None:
    """allauth's own signals (password, reset, second factors, sign-up)."""
    from allauth.account import signals as account_signals
    from allauth.mfa import signals as mfa_signals

    def kind_receiver(kind: str) -> Any:
        def on(sender: Any, request: HttpRequest | None = None, user: Any = None, **kwargs: Any) -> None:
            detail = {}
            authenticator = kwargs.get("authenticator")
            if authenticator is not None:
                detail["type"] = authenticator.type
            audit_record(kind=kind, user=user, request=request, detail=detail)

        return on

    for signal, kind in [
        (account_signals.password_changed, AuditEvent.PASSWORD_CHANGED),
        (account_signals.password_set, AuditEvent.PASSWORD_CHANGED),
        (account_signals.password_reset, AuditEvent.PASSWORD_RESET),
        (account_signals.user_signed_up, AuditEvent.SIGNED_UP),
        (mfa_signals.authenticator_added, AuditEvent.MFA_ADDED),
        (mfa_signals.authenticator_removed, AuditEvent.MFA_REMOVED),
        (mfa_signals.authenticator_reset, AuditEvent.MFA_ADDED),
    ]:
        signal.connect(kind_receiver(kind), dispatch_uid=f"accounts.audit_{kind}_{id(signal)}", weak=False)
