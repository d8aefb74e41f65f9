"""Parsing and checking client input (HTTP bodies and WebSocket frames). Pure functions only."""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")


class InvalidInput(Exception):
    """Bad client input; `status` is the HTTP status to answer with."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


@dataclass(frozen=True, slots=True)
class SendRequest:
    content: str
    request_id: str
    request_id_given: bool
    parent_id: int | None
    stream: bool
    idempotent: bool
    tools: bool


@dataclass(frozen=True, slots=True)
class ThreadCreate:
    title: str
    provider: str | None
    model: str | None


def parse_json_object(raw: bytes | str) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput("invalid_json", f"The body is not valid JSON: {exc}.") from exc
    if not isinstance(data, dict):
        raise InvalidInput("invalid_json", "The body must be a JSON object.")
    return data


def _opt_str(data: dict[str, Any], key: str, *, max_len: int) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput("invalid_field", f"'{key}' must be a string.")
    if len(value) > max_len:
        raise InvalidInput("invalid_field", f"'{key}' is longer than {max_len} characters.")
    return value


def _opt_bool(data: dict[str, Any], key: str, default: bool) -> bool:
    value = data.get(key, default)
    if not isinstance(value, bool):
        raise InvalidInput("invalid_field", f"'{key}' must be true or false.")
    return value


def parse_thread_create(data: dict[str, Any]) -> ThreadCreate:
    title = (_opt_str(data, "title", max_len=200) or "").strip()
    return ThreadCreate(
        title=title,
        provider=_opt_str(data, "provider", max_len=32),
        model=_opt_str(data, "model", max_len=128),
    )


def parse_send(data: dict[str, Any], *, max_chars: int) -> SendRequest:
    content = data.get("content")
    if not isinstance(content, str) or not content.strip():
        raise InvalidInput("invalid_content", "'content' must be a non-empty string.")
    if len(content) > max_chars:
        raise InvalidInput(
            "content_too_large", f"'content' is longer than {max_chars} characters.", status=413
        )
    request_id = data.get("request_id")
    given = request_id is not None
    if request_id is None:
        request_id = uuid.uuid4().hex
    elif not isinstance(request_id, str) or not REQUEST_ID_RE.match(request_id):
        raise InvalidInput(
            "invalid_request_id",
            "'request_id' must be 1-64 characters of letters, digits, '.', '_', ':' or '-', starting with a letter or digit.",
        )
    parent_id = data.get("parent_id")
    if parent_id is not None and (
        isinstance(parent_id, bool) or not isinstance(parent_id, int) or parent_id < 1
    ):
        raise InvalidInput("invalid_parent_id", "'parent_id' must be a positive integer message id.")
    tools = data.get("tools")
    return SendRequest(
        content=content,
        request_id=request_id,
        request_id_given=given,
        parent_id=parent_id,
        stream=_opt_bool(data, "stream", False),
        idempotent=_opt_bool(data, "idempotent", True),
        tools=bool(tools),
    )


def parse_request_id(value: str) -> str:
    if not REQUEST_ID_RE.match(value):
        raise InvalidInput("invalid_request_id", "That is not a valid request_id.")
    return value
