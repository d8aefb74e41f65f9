"""JSON payloads sent to clients (WebSocket frames and SSE events). Pure functions only."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Literal, NotRequired, TypedDict

from django.utils import timezone

from billing.rules import COST_QUANTUM

Payload = dict[str, Any]  # JSON of no fixed shape (a page of threads, a thread's detail)


class UsageData(TypedDict):
    """What calls cost (docs/api.md, "Usage and budgets"): tokens, and USD as an exact decimal string."""

    input_tokens: int
    output_tokens: int
    cost_usd: str


class ThreadData(TypedDict):
    id: int
    title: str
    provider: str
    model: str
    # "<connection>/<model>", as GET /api/models names it.
    model_id: str
    system_prompt: str
    created_at: str | None
    updated_at: str | None
    # The conversation tree (#18): the end of the branch shown; archived threads leave the list.
    current_leaf_id: NotRequired[int | None]
    archived: NotRequired[bool]
    # The sum of its calls' charges (HTTP answers; thread.updated events leave it out).
    usage: NotRequired[UsageData]


class ErrorData(TypedDict):
    code: str
    message: str
    # Seconds: a failed generation's provider Retry-After, or a socket's refused send (whole seconds).
    retry_after: NotRequired[float]


class MessageData(TypedDict):
    id: int
    thread_id: int
    role: str
    content: str
    status: str
    request_id: str
    parent_id: int | None
    created_at: str | None
    # Assistant messages only.
    input_tokens: NotRequired[int | None]
    output_tokens: NotRequired[int | None]
    finish_reason: NotRequired[str | None]
    error: NotRequired[ErrorData]
    # The model that answered ("<connection>/<model>").
    model_id: NotRequired[str]
    # Its call's charge; null for a user message and for a reply not charged (yet, or ever).
    usage: NotRequired[UsageData | None]


class InFlight(TypedDict):
    """A generation in flight, as a snapshot reports it: the text sent in deltas 1..seq."""

    request_id: str
    message_id: int
    text: str
    seq: int


class MessagePage(TypedDict):
    """Some of a thread's messages, oldest first; `has_more`: older ones remain."""

    messages: list[MessageData]
    has_more: bool


class SnapshotEvent(TypedDict):
    type: Literal["snapshot"]
    messages: list[MessageData]  # the newest page
    has_more: bool
    in_flight: list[InFlight]
    # The conversation tree (#18): sibling ids of the messages that have any, the branch's leaf.
    siblings: NotRequired[dict[str, list[int]]]
    current_leaf_id: NotRequired[int | None]


class HistoryEvent(TypedDict):
    """An older page, answering a client's `history` frame (`before`: the id it asked before)."""

    type: Literal["history"]
    before: int
    messages: list[MessageData]
    has_more: bool
    siblings: NotRequired[dict[str, list[int]]]


class MessageStartEvent(TypedDict):
    type: Literal["message.start"]
    request_id: str
    user_message: MessageData
    message_id: int


class MessageDeltaEvent(TypedDict):
    type: Literal["message.delta"]
    request_id: str
    message_id: int
    seq: int
    text: str


class MessageDoneEvent(TypedDict):
    type: Literal["message.done"]
    request_id: str
    message: MessageData


class MessageCancelledEvent(TypedDict):
    type: Literal["message.cancelled"]
    request_id: str
    message: MessageData


class MessageErrorEvent(TypedDict):
    type: Literal["message.error"]
    request_id: str
    error: ErrorData
    message: NotRequired[MessageData]


class SocketErrorEvent(TypedDict):
    """A bad client frame, or an outage met mid-stream."""

    type: Literal["error"]
    error: ErrorData


class ErrorBody(TypedDict):
    error: ErrorData


TerminalEvent = MessageDoneEvent | MessageCancelledEvent | MessageErrorEvent
StreamEvent = MessageStartEvent | MessageDeltaEvent | TerminalEvent


class ThreadUpdatedEvent(TypedDict):
    """The thread's title, model or system prompt changed (PATCH): every open tab follows."""

    type: Literal["thread.updated"]
    thread: ThreadData


ClientEvent = StreamEvent | SnapshotEvent | HistoryEvent | SocketErrorEvent | ThreadUpdatedEvent


def iso(dt: Any) -> str | None:
    return timezone.localtime(dt, datetime.UTC).isoformat().replace("+00:00", "Z") if dt else None


def thread_data(t: Any) -> ThreadData:
    return {
        "id": t.id,
        "title": t.title,
        "provider": t.provider,
        "model": t.model,
        "model_id": f"{t.provider}/{t.model}",
        "system_prompt": t.system_prompt,
        "created_at": iso(t.created_at),
        "updated_at": iso(t.updated_at),
        "current_leaf_id": getattr(t, "current_leaf_id", None),
        "archived": bool(getattr(t, "archived", False)),
    }


def usage_data(*, input_tokens: int | None, output_tokens: int | None, cost_usd: Decimal | None) -> UsageData:
    return {
        "input_tokens": int(input_tokens or 0),
        "output_tokens": int(output_tokens or 0),
        # Exact to the stored 10 places, as the shortest plain decimal ("0.00056325", never "1E-7"):
        # the same on every database (SQLite sums carry extra zeros).
        "cost_usd": f"{(cost_usd or Decimal(0)).quantize(COST_QUANTUM).normalize():f}",
    }


def message_data(m: Any) -> MessageData:
    data: MessageData = {
        "id": m.id,
        "thread_id": m.thread_id,
        "role": m.role,
        "content": m.content,
        "status": m.status,
        "request_id": m.request_id,
        "parent_id": m.parent_id,
        "created_at": iso(m.created_at),
        "usage": None,  # read with the charges where it is known (threads/usage.py)
    }
    if m.role == "assistant":
        data["input_tokens"] = m.input_tokens
        data["output_tokens"] = m.output_tokens
        data["finish_reason"] = m.finish_reason
        data["model_id"] = m.model_id
        if m.error_code:
            data["error"] = {"code": m.error_code, "message": m.error_message}
    return data


def error_body(code: str, message: str) -> ErrorBody:
    return {"error": {"code": code, "message": message}}


def snapshot(
    messages: list[MessageData],
    in_flight: list[InFlight],
    *,
    has_more: bool = False,
    tree: Mapping[str, Any] | None = None,
) -> SnapshotEvent:
    event: SnapshotEvent = {
        "type": "snapshot",
        "messages": messages,
        "has_more": has_more,
        "in_flight": in_flight,
    }
    if tree is not None:  # a branch page (threads/branches.py)
        event["siblings"] = tree.get("siblings", {})
        event["current_leaf_id"] = tree.get("current_leaf_id")
    return event


def thread_updated(thread: ThreadData) -> ThreadUpdatedEvent:
    return {"type": "thread.updated", "thread": thread}


def history(*, before: int, page: Mapping[str, Any]) -> HistoryEvent:
    event: HistoryEvent = {
        "type": "history",
        "before": before,
        "messages": page["messages"],
        "has_more": page["has_more"],
    }
    if "siblings" in page:
        event["siblings"] = page["siblings"]
    return event


def message_start(*, request_id: str, user_message: MessageData, message_id: int) -> MessageStartEvent:
    return {
        "type": "message.start",
        "request_id": request_id,
        "user_message": user_message,
        "message_id": message_id,
    }


def message_delta(*, request_id: str, message_id: int, seq: int, text: str) -> MessageDeltaEvent:
    return {
        "type": "message.delta",
        "request_id": request_id,
        "message_id": message_id,
        "seq": seq,
        "text": text,
    }


def message_done(*, request_id: str, message: MessageData) -> MessageDoneEvent:
    return {"type": "message.done", "request_id": request_id, "message": message}


def message_cancelled(*, request_id: str, message: MessageData) -> MessageCancelledEvent:
    return {"type": "message.cancelled", "request_id": request_id, "message": message}


def message_error(
    *,
    request_id: str,
    code: str,
    message: str,
    assistant: MessageData | None = None,
    retry_after: float | None = None,
) -> MessageErrorEvent:
    error: ErrorData = {"code": code, "message": message}
    if retry_after is not None:
        error["retry_after"] = retry_after
    event: MessageErrorEvent = {"type": "message.error", "request_id": request_id, "error": error}
    if assistant is not None:
        event["message"] = assistant
    return event


def socket_error(code: str, message: str, *, retry_after: int | None = None) -> SocketErrorEvent:
    error: ErrorData = {"code": code, "message": message}
    if retry_after is not None:  # rate limited: whole seconds, as in HTTP's Retry-After
        error["retry_after"] = retry_after
    return {"type": "error", "error": error}


def terminal_event(*, request_id: str, message: MessageData) -> TerminalEvent | None:
    """The terminal event a finalized assistant message stands for (None while it streams)."""
    status = message["status"]
    if status == "complete":
        return message_done(request_id=request_id, message=message)
    if status == "cancelled":
        return message_cancelled(request_id=request_id, message=message)
    if status == "error":
        error = message.get("error") or ErrorData(code="provider_error", message="")
        return message_error(
            request_id=request_id, code=error["code"], message=error["message"], assistant=message
        )
    return None


def as_terminal(event: ClientEvent) -> TerminalEvent | None:
    """`event` if it ends its send (message.done / .cancelled / .error), else None."""
    if (
        event["type"] == "message.done"
        or event["type"] == "message.cancelled"
        or event["type"] == "message.error"
    ):
        return event
    return None


TERMINAL_EVENTS = frozenset({"message.done", "message.cancelled", "message.error"})


REQUEST_OUTCOME = {"message.done": "ok", "message.cancelled": "cancelled", "message.error": "error"}


def request_outcome(event: Mapping[str, Any]) -> str:
    """The metrics outcome of a send from its terminal event."""
    return REQUEST_OUTCOME.get(str(event.get("type")), "error")
