"""allauth's adapters: who may sign up (SIGNUP_MODE and invitations), new accounts waiting for approval,
throttled log-ins in the audit log, and ended sessions closing their sockets."""

from __future__ import annotations

from typing import Any

from allauth.account.adapter import DefaultAccountAdapter
from allauth.socialaccount.adapter import DefaultSocialAccountAdapter
from allauth.usersessions.adapter import DefaultUserSessionsAdapter
from django.conf import settings
from django.core.exceptions import ValidationError
from django.http import HttpRequest

from accounts.invitations import invitation_in_session


def signup_allowed(*, mode: str, invited: bool) -> bool:
    """May a visitor sign up under SIGNUP_MODE `mode`, holding a valid invitation or not (pure)?"""
    return mode in ("open", "approval") or invited


def starts_active(*, mode: str) -> bool:
    """Is a new account active at once (pure)? Under `approval` it waits for staff."""
    return mode != "approval"


def login_attempts_key(credentials: dict[str, Any]) -> str:
    """The name failed log-ins are counted under, whatever host the request named (pure)."""
    return "login:" + str(credentials.get("email") or credentials.get("username") or "").lower()


class AccountAdapter(DefaultAccountAdapter):
    def is_open_for_signup(self, request: HttpRequest) -> bool:
        return signup_allowed(mode=settings.SIGNUP_MODE, invited=invitation_in_session(request) is not None)

    def new_user(self, request: HttpRequest) -> Any:
        user = super().new_user(request)
        user.is_active = starts_active(mode=settings.SIGNUP_MODE)
        return user

    def _get_login_attempts_cache_key(self, request: HttpRequest, **credentials: Any) -> str:
        # allauth keys an account's failures by site domain too, which without django.contrib.sites
        # is the request's Host: each allowed host name (or port, found by the 2-process test) would
        # get its own count. One account, one count.
        return login_attempts_key(credentials)

    def pre_authenticate(self, request: HttpRequest, **credentials: Any) -> None:
        try:
            super().pre_authenticate(request, **credentials)
        except ValidationError:
            from accounts.audit import audit_record
            from accounts.models import AuditEvent

            name = str(credentials.get("username") or credentials.get("email") or "")
            audit_record(kind=AuditEvent.LOGIN_THROTTLED, username=name, request=request)
            raise


class SocialAccountAdapter(DefaultSocialAccountAdapter):
    """Sign-up through a provider follows SIGNUP_MODE too (allauth asks the account adapter)."""


class UserSessionsAdapter(DefaultUserSessionsAdapter):
    def end_sessions(self, sessions: Any) -> None:
        """ "Log out everywhere else" (allauth's only caller here): the sessions listed end, and so do
        the user's sessions allauth never tracked (made before the migration, or used only by the API
        and WebSockets); their sockets close (4001) on every process."""
        from allauth.core import context

        from accounts.audit import audit_record
        from accounts.models import AuditEvent
        from accounts.signals import end_sessions, rights_changed

        sessions = list(sessions)
        request = context.request
        current = request.session.session_key if request is not None else None
        keep = None if any(s.session_key == current for s in sessions) else current
        super().end_sessions(sessions)
        owners = {s.user_id: s.user for s in sessions}
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            owners.setdefault(user.pk, user)
        for user_id, owner in owners.items():
            listed = sum(1 for s in sessions if s.user_id == user_id)
            count = listed + end_sessions(user_id=user_id, keep=keep)
            if count:
                audit_record(kind=AuditEvent.SESSIONS_ENDED, user=owner, detail={"count": count})
                rights_changed(user_id=user_id, method="session")
