"""Ending access: logging out, revoking or deleting an API token, and deactivating, deleting, demoting
(losing is_staff or is_superuser) or re-passwording a user announce `user_rights_changed`, on which other
apps act (threads/signals.py closes the affected WebSockets in every process), and drop this process's
cached lookups (tokens, accounts.rights) at once. Connected in AccountsConfig.ready().

Other processes' token caches expire within accounts.auth.TOKEN_CACHE_TTL_S (5 s): that is the bound on
how long a revoked token can still be used on another server process. Django sends user_logged_out just
before it flushes the session; a closed page waits at least 150 ms before it reconnects, by which time the
session is gone. A queryset `.update()` sends no signal: sockets then find out on their next act
(accounts/rights.py), or at WS_MAX_LIFETIME_S.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_out
from django.db import transaction
from django.db.models.signals import post_delete, post_save, pre_save
from django.dispatch import Signal, receiver

from accounts.auth import forget_all_tokens, forget_token
from accounts.models import ApiToken
from accounts.rights import LOST_ALL, forget_user, rights_lost, rights_of, stored_rights

# A user lost some access: kwargs `user_id` (int), `method` ('session': every session of the user;
# 'token': the API token whose hash is `token_hash`; 'user': everything, the user is deactivated,
# deleted or demoted). Sent after the change commits, never for a rolled-back one; the one seam through
# which accounts tells the rest of the project.
user_rights_changed = Signal()


def rights_changed(*, user_id: int, method: str, token_hash: str = "") -> None:
    """Send user_rights_changed once the current transaction commits (at once outside one). A receiver's
    error is logged, never raised: logging out must work without Redis."""

    def send() -> None:
        user_rights_changed.send(
            sender=get_user_model(), user_id=user_id, method=method, token_hash=token_hash
        )

    # robust: an error is logged by Django (django.db.backends.base), not raised into the caller.
    transaction.on_commit(send, robust=True)


@receiver(user_logged_out, dispatch_uid="accounts.rights_on_logout")
def _on_logout(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    if user is not None and user.pk is not None:
        rights_changed(user_id=user.pk, method="session")


@receiver(post_save, sender=ApiToken, dispatch_uid="accounts.token_saved")
def _on_token_saved(sender: Any, instance: ApiToken, created: bool, **kwargs: Any) -> None:
    if instance.revoked_at is not None:
        forget_token(instance.key_hash)
        rights_changed(user_id=instance.user_id, method="token", token_hash=instance.key_hash)


@receiver(post_delete, sender=ApiToken, dispatch_uid="accounts.token_deleted")
def _on_token_deleted(sender: Any, instance: ApiToken, **kwargs: Any) -> None:
    forget_token(instance.key_hash)
    rights_changed(user_id=instance.user_id, method="token", token_hash=instance.key_hash)


# The row's fields that grant access (accounts/rights.py): a save that names none of them (a log-in
# stamping last_login) needs no comparison, and no query.
_RIGHTS_FIELDS = frozenset({"is_active", "is_staff", "is_superuser", "password"})
_BEFORE = "_rights_before_save"


def _on_user_pre_save(sender: Any, instance: Any, raw: bool = False, **kwargs: Any) -> None:
    update_fields = kwargs.get("update_fields")
    if raw or instance.pk is None or (update_fields is not None and not _RIGHTS_FIELDS & set(update_fields)):
        return
    instance.__dict__[_BEFORE] = stored_rights(instance.pk)


def _on_user_saved(sender: Any, instance: Any, **kwargs: Any) -> None:
    before = instance.__dict__.pop(_BEFORE, None)
    lost = None if before is None else rights_lost(before, rights_of(instance))
    if lost is None:
        return
    forget_user(instance.pk)
    user_id = instance.pk
    if lost == LOST_ALL:
        # Which cached tokens belong to this user is not indexed; losing rights is rare, so drop them all.
        forget_all_tokens()
        # A demoted (or deactivated) user logs in again: their sessions end, not only their sockets.
        transaction.on_commit(lambda: end_sessions(user_id=user_id), robust=True)
    else:
        # A new password, set anywhere: the sessions made under the old one end (allauth's own change
        # already ended them but the current one, renewed under the new password).
        from accounts.sessions import end_stale_sessions

        transaction.on_commit(lambda: end_stale_sessions(user_id=user_id), robust=True)
    rights_changed(user_id=instance.pk, method=lost)


def _on_user_deleted(sender: Any, instance: Any, **kwargs: Any) -> None:
    forget_user(instance.pk)
    forget_all_tokens()
    rights_changed(user_id=instance.pk, method=LOST_ALL)


pre_save.connect(_on_user_pre_save, sender=get_user_model(), dispatch_uid="accounts.user_saving")
post_save.connect(_on_user_saved, sender=get_user_model(), dispatch_uid="accounts.user_saved")
post_delete.connect(_on_user_deleted, sender=get_user_model(), dispatch_uid="accounts.user_deleted")


def end_sessions(*, user_id: int, keep: str | None = None) -> int:
    """End every session of the user but `keep` (a session key), tracked by allauth or not; returns
    how many (accounts/sessions.py)."""
    from accounts.sessions import end_user_sessions

    return end_user_sessions(user_id=user_id, keep=keep)


def connect_allauth_receivers() -> None:
    """A sign-up spends the invitation it came with (SIGNUP_MODE=closed); a new password ends the user's
    other sessions (a reset: all of them), which Django's session hash would only refuse on their next
    request, leaving them listed on the settings page."""
    from allauth.account.signals import password_changed, password_reset, password_set, user_signed_up

    from accounts.invitations import invitation_use

    def on_signed_up(sender: Any, request: Any = None, user: Any = None, **kwargs: Any) -> None:
        if request is not None and user is not None:
            invitation_use(request=request, user=user)

    def on_new_password(sender: Any, request: Any = None, user: Any = None, **kwargs: Any) -> None:
        if user is not None:
            session = getattr(request, "session", None)
            keep = session.session_key if session is not None and request.user == user else None
            end_sessions(user_id=user.pk, keep=keep)

    user_signed_up.connect(on_signed_up, dispatch_uid="accounts.invitation_on_signup", weak=False)
    for signal in (password_changed, password_set, password_reset):
        signal.connect(
            on_new_password, dispatch_uid=f"accounts.sessions_on_password_{id(signal)}", weak=False
        )
