"""Channel-layer names. Pure functions only.

Channels allows group names of ASCII letters, digits, '-', '_' and '.', shorter than 100 characters.
Event types carry a prefix ('thread.event' -> the consumer's `thread_event` handler).
"""

from __future__ import annotations

CONTROL_GROUP = "chatapp.control"
THREAD_EVENT = "thread.event"
CONTROL_CANCEL = "control.cancel"


def thread_group(thread_id: int) -> str:
    if not isinstance(thread_id, int) or isinstance(thread_id, bool) or thread_id < 1:
        raise ValueError(f"thread ids are positive integers, not {thread_id!r}")
    return f"thread.{thread_id}"


def layer_message(event: dict[str, object]) -> dict[str, object]:
    """Wrap a client event for the channel layer."""
    return {"type": THREAD_EVENT, "event": event}
