"""A user's lost access reaches their open sockets: on accounts' user_rights_changed, the sockets that
authenticated the withdrawn way (or all of them, for a user deactivated, deleted or demoted) close with
4001, in every process (through the user's channel-layer
group, `user.<id>`; threads/consumers.py closes them). Connected in ThreadsConfig.ready()."""

from __future__ import annotations

from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.dispatch import receiver

from accounts.signals import user_rights_changed
from threads import groups


@receiver(user_rights_changed, dispatch_uid="threads.close_sockets_on_rights_changed")
def close_user_sockets(
    sender: Any, *, user_id: int, method: str, token_hash: str = "", **kwargs: Any
) -> None:
    """Close the user's sockets that authenticated by `method` (groups.auth_revoked_message). A channel
    layer that is down raises into accounts' robust on_commit, which logs it: the sockets then stay open
    until they close or reconnect."""
    message = groups.auth_revoked_message(method=method, token_hash=token_hash)
    layer = get_channel_layer()
    if layer is not None:
        async_to_sync(layer.group_send)(groups.user_group(user_id), message)
