"""The session engine (SESSION_ENGINE): Django's database sessions, each row naming its user
(Django's documented "extending database-backed session engines"), so that every session of a user
can be ended in one query, whether allauth's usersessions tracks it or not (a session made before
allauth, or one used only by the API and WebSockets, which the tracker never sees)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import SESSION_KEY
from django.contrib.sessions.backends.db import SessionStore as DbSessionStore


def session_user_id(data: dict[str, Any]) -> int | None:
    """The user a decoded session is logged in as, if any (pure)."""
    try:
        return int(data[SESSION_KEY])
    except (KeyError, TypeError, ValueError):
        return None


class SessionStore(DbSessionStore):
    @classmethod
    def get_model_class(cls) -> Any:
        from accounts.models import Session

        return Session

    def create_model_instance(self, data: dict[str, Any]) -> Any:
        obj: Any = super().create_model_instance(data)
        obj.user_id = session_user_id(data)
        return obj

    async def acreate_model_instance(self, data: dict[str, Any]) -> Any:
        obj: Any = await super().acreate_model_instance(data)
        obj.user_id = session_user_id(data)
        return obj


def end_user_sessions(*, user_id: int, keep: str | None = None) -> int:
    """Delete every stored session of the user but `keep` (a session key), and allauth's tracking rows
    of them; returns how many sessions ended. Every process reads sessions from the database, so the
    next request of an ended session, on any process, is anonymous."""
    from allauth.usersessions.models import UserSession

    from accounts.models import Session

    ended, _ = Session.objects.filter(user_id=user_id).exclude(session_key=keep or "").delete()
    UserSession.objects.filter(user_id=user_id).exclude(session_key=keep or "").delete()
    return ended


def end_stale_sessions(*, user_id: int) -> int:
    """End the user's sessions made under a password they no longer have, wherever it was changed
    (admin, `manage.py changepassword`): Django already refuses them, and this takes them out of the
    store and the sessions list. A session the change itself renewed carries the new hash and stays.
    Returns how many ended."""
    from allauth.usersessions.models import UserSession
    from django.contrib.auth import HASH_SESSION_KEY, get_user_model
    from django.utils.crypto import constant_time_compare

    from accounts.models import Session

    user = get_user_model().objects.filter(pk=user_id).first()
    if user is None:
        return 0
    valid = [user.get_session_auth_hash(), *user.get_session_auth_fallback_hash()]
    decoder = SessionStore()
    stale = [
        row.session_key
        for row in Session.objects.filter(user_id=user_id).only("session_key", "session_data")
        if not any(
            constant_time_compare(str(decoder.decode(row.session_data).get(HASH_SESSION_KEY, "")), h)
            for h in valid
        )
    ]
    ended, _ = Session.objects.filter(session_key__in=stale).delete()
    UserSession.objects.filter(session_key__in=stale).delete()
    return ended


def other_session_count(*, user_id: int, current: str | None) -> int:
    """The user's unexpired sessions other than `current`, tracked by allauth or not."""
    from django.utils import timezone

    from accounts.models import Session

    alive = Session.objects.filter(user_id=user_id, expire_date__gt=timezone.now())
    return alive.exclude(session_key=current or "").count()
