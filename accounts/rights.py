"""What a user may still do: the parts of their row that grant access (active, staff, superuser, the
password behind their sessions), compared before and after a change, and re-read for sockets that act.

accounts/signals.py compares a saved row with the stored one and announces what was lost; a socket
re-checks its user's row on each frame that acts (threads/consumers.py) through `user_rights`, a short
per-process cache, so a change no signal announces (a queryset `.update()`) still stops the next act.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from django.contrib.auth import get_user_model

from core.dbasync import db_async
from core.ttlcache import TTLCache

# A socket's acts may go on this long after a change no signal announced (signals drop the entry at
# once in their own process; other processes hear them through the channel layer and close sockets).
USER_RIGHTS_TTL_S = 2.0
# One small tuple per user with an open socket that acted lately; least recently used out first.
USER_RIGHTS_MAX_USERS = 10_000

# How user_rights_changed names what was lost: every socket of the user, or its session sockets.
LOST_ALL = "user"
LOST_SESSIONS = "session"


@dataclass(frozen=True, slots=True)
class UserRights:
    active: bool
    staff: bool
    superuser: bool
    # A digest of the stored password hash: a new password ends the user's other sessions (Django's
    # session auth hash), so their session sockets close too. Tokens do not depend on it.
    password: str


_FIELDS = ("is_active", "is_staff", "is_superuser", "password")


def rights_from(*, is_active: bool, is_staff: bool, is_superuser: bool, password: str) -> UserRights:
    digest = hashlib.sha256(password.encode()).hexdigest()[:32]
    return UserRights(active=is_active, staff=is_staff, superuser=is_superuser, password=digest)


def rights_of(user: Any) -> UserRights:
    """The rights a user object (a row as loaded) carries."""
    return rights_from(**{f: getattr(user, f) for f in _FIELDS})


def rights_lost(before: UserRights, now: UserRights | None) -> str | None:
    """What losing `before` for `now` (None: the user is gone) withdraws: LOST_ALL (every socket of the
    user), LOST_SESSIONS (those opened with a session), or None (nothing: gaining rights takes none)."""
    if now is None or not now.active:
        return LOST_ALL
    if (before.staff and not now.staff) or (before.superuser and not now.superuser):
        return LOST_ALL  # a socket watching another user's thread as staff must not go on
    if before.password != now.password:
        return LOST_SESSIONS
    return None


def stored_rights(user_id: int) -> UserRights | None:
    """The rights in the user's row now (None: no such user). One indexed query."""
    row = get_user_model().objects.filter(pk=user_id).values(*_FIELDS).first()
    return None if row is None else rights_from(**row)


user_rights_cache: TTLCache[UserRights | None] = TTLCache(USER_RIGHTS_TTL_S, max_items=USER_RIGHTS_MAX_USERS)


async def user_rights(user_id: int) -> UserRights | None:
    """The user's rights, at most USER_RIGHTS_TTL_S stale in this process."""
    return await user_rights_cache.get_or_load(user_id, lambda: db_async(stored_rights)(user_id))


async def user_rights_now(user_id: int) -> UserRights | None:
    """The user's rights read from their row now (one query), and remembered for `user_rights`."""
    now = await db_async(stored_rights)(user_id)
    user_rights_cache.put(user_id, now)
    return now


def forget_user(user_id: int) -> None:
    """This process re-reads the user's row on its next act."""
    user_rights_cache.discard(user_id)
