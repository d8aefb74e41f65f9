"""Channel-layer names. Pure functions only.

Channels allows group names of ASCII letters, digits, '-', '_' and '.', shorter than 100 characters.
Event types carry a prefix ('thread.event' -> the consumer's `thread_event` handler).
"""

from __future__ import annotations

from collections.abc import Mapping

CONTROL_GROUP = "chatapp.control"
THREAD_EVENT = "thread.event"
CONTROL_CANCEL = "control.cancel"
# A thread changed (PATCH: its model or system prompt): every process reads it again at its next send.
CONTROL_THREAD_CHANGED = "control.thread_changed"
# Sent to a user's group when a session logs out, an API token is revoked, or the user loses rights
# (deactivated, deleted, demoted, a new password; consumer: `auth_revoked`).
AUTH_REVOKED = "auth.revoked"


def thread_group(thread_id: int) -> str:
    if not isinstance(thread_id, int) or isinstance(thread_id, bool) or thread_id < 1:
        raise ValueError(f"thread ids are positive integers, not {thread_id!r}")
    return f"thread.{thread_id}"


def user_group(user_id: int) -> str:
    """Every socket of one user, in every process: losing access (accounts/signals.py) closes them."""
    if not isinstance(user_id, int) or isinstance(user_id, bool) or user_id < 1:
        raise ValueError(f"user ids are positive integers, not {user_id!r}")
    return f"user.{user_id}"


def auth_revoked_message(*, method: str, token_hash: str = "") -> dict[str, str]:
    """Close the user's sockets authenticated by `method`: 'session' (every socket that authenticated
    with a session cookie), 'token' (those that used the token whose hash is `token_hash`), or 'user'
    (every socket of the user)."""
    if method not in ("session", "token", "user") or (method == "token") != bool(token_hash):
        raise ValueError("method is 'session', 'user', or 'token' with the token's hash")
    return {"type": AUTH_REVOKED, "method": method, "token_hash": token_hash}


def layer_message(event: Mapping[str, object]) -> dict[str, object]:
    """Wrap a client event for the channel layer."""
    return {"type": THREAD_EVENT, "event": event}
