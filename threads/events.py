"""JSON payloads sent to clients (WebSocket frames and SSE events). Pure functions only."""

from __future__ import annotations

import datetime
from typing import Any

from django.utils import timezone

Payload = dict[str, Any]


def iso(dt: Any) -> str | None:
    return timezone.localtime(dt, datetime.UTC).isoformat().replace("+00:00", "Z") if dt else None


def thread_data(t: Any) -> Payload:
    return {
        "id": t.id,
        "title": t.title,
        "provider": t.provider,
        "model": t.model,
        "created_at": iso(t.created_at),
        "updated_at": iso(t.updated_at),
    }


def message_data(m: Any) -> Payload:
    data: Payload = {
        "id": m.id,
        "thread_id": m.thread_id,
        "role": m.role,
        "content": m.content,
        "status": m.status,
        "request_id": m.request_id,
        "parent_id": m.parent_id,
        "created_at": iso(m.created_at),
    }
    if m.role == "assistant":
        data["input_tokens"] = m.input_tokens
        data["output_tokens"] = m.output_tokens
        data["finish_reason"] = m.finish_reason
        if m.error_code:
            data["error"] = {"code": m.error_code, "message": m.error_message}
    return data


def error_body(code: str, message: str) -> Payload:
    return {"error": {"code": code, "message": message}}


def snapshot(messages: list[Payload], in_flight: list[Payload]) -> Payload:
    return {"type": "snapshot", "messages": messages, "in_flight": in_flight}


def message_start(*, request_id: str, user_message: Payload, message_id: int) -> Payload:
    return {
        "type": "message.start",
        "request_id": request_id,
        "user_message": user_message,
        "message_id": message_id,
    }


def message_delta(*, request_id: str, message_id: int, seq: int, text: str) -> Payload:
    return {
        "type": "message.delta",
        "request_id": request_id,
        "message_id": message_id,
        "seq": seq,
        "text": text,
    }


def message_done(*, request_id: str, message: Payload) -> Payload:
    return {"type": "message.done", "request_id": request_id, "message": message}


def message_cancelled(*, request_id: str, message: Payload) -> Payload:
    return {"type": "message.cancelled", "request_id": request_id, "message": message}


def message_error(
    *,
    request_id: str,
    code: str,
    message: str,
    assistant: Payload | None = None,
    retry_after: float | None = None,
) -> Payload:
    error: Payload = {"code": code, "message": message}
    if retry_after is not None:
        error["retry_after"] = retry_after
    event: Payload = {"type": "message.error", "request_id": request_id, "error": error}
    if assistant is not None:
        event["message"] = assistant
    return event


def socket_error(code: str, message: str, *, retry_after: int | None = None) -> Payload:
    error: Payload = {"code": code, "message": message}
    if retry_after is not None:  # rate limited: whole seconds, as in HTTP's Retry-After
        error["retry_after"] = retry_after
    return {"type": "error", "error": error}


def terminal_event(*, request_id: str, message: Payload) -> Payload | None:
    """The terminal event a finalized assistant message stands for (None while it streams)."""
    status = message["status"]
    if status == "complete":
        return message_done(request_id=request_id, message=message)
    if status == "cancelled":
        return message_cancelled(request_id=request_id, message=message)
    if status == "error":
        error = message.get("error") or {"code": "provider_error", "message": ""}
        return message_error(
            request_id=request_id, code=error["code"], message=error["message"], assistant=message
        )
    return None


TERMINAL_EVENTS = frozenset({"message.done", "message.cancelled", "message.error"})


REQUEST_OUTCOME = {"message.done": "ok", "message.cancelled": "cancelled", "message.error": "error"}


def request_outcome(event: Payload) -> str:
    """The metrics outcome of a send from its terminal event."""
    return REQUEST_OUTCOME.get(str(event.get("type")), "error")
