"""Ending access: revoking or deleting an API token, and deactivating or deleting a user, drop this
process's cached token lookups at once; logging out and revoking or deleting a token announce
`user_rights_changed`, on which other apps act (threads/signals.py closes the affected WebSockets in every
process). Connected in AccountsConfig.ready().

Other processes' token caches expire within accounts.auth.TOKEN_CACHE_TTL_S (5 s): that is the bound on
how long a revoked token can still be used on another server process. Django sends user_logged_out just
before it flushes the session; a closed page waits at least 150 ms before it reconnects, by which time the
session is gone.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_out
from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import Signal, receiver

from accounts.auth import forget_all_tokens, forget_token
from accounts.models import ApiToken

# A user lost some access: kwargs `user_id` (int), `method` ('session': every session of the user;
# 'token': the API token whose hash is `token_hash`). Sent after the change commits, never for a
# rolled-back one; the one seam through which accounts tells the rest of the project.
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


def _on_user_changed(sender: Any, instance: Any, **kwargs: Any) -> None:
    # Which cached tokens belong to this user is not indexed; deactivation is rare, so drop them all.
    if kwargs.get("signal") is post_delete or not instance.is_active:
        forget_all_tokens()


post_save.connect(_on_user_changed, sender=get_user_model(), dispatch_uid="accounts.user_saved")
post_delete.connect(_on_user_changed, sender=get_user_model(), dispatch_uid="accounts.user_deleted")
