"""Parsing and checking client input (HTTP bodies and WebSocket frames). Pure functions only."""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

from threads.limits import frame_size, id_in_range, parse_id

REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}\Z")

# The fields each body or frame may carry. Anything else is refused (400 `unknown_field`), not ignored:
# a typo such as "strem" would otherwise silently change the meaning of a request. The server adds
# optional fields before clients send them, so strictness costs no compatibility.
THREAD_CREATE_FIELDS = frozenset({"title", "provider", "model", "system_prompt"})
# One PATCH takes every field a thread may change (#17's and the conversation tree's), all or nothing.
THREAD_PATCH_FIELDS = frozenset({"title", "model", "system_prompt", "archived", "current_leaf_id"})
# A model id is "<connection>/<model>": 32 + 1 + 128 characters at most.
MODEL_ID_CHARS = 161
SEND_FIELDS = frozenset({"content", "request_id", "parent_id", "stream", "idempotent", "tools"})
# The thread's column is varchar(200): MAX_TITLE_CHARS may lower the limit, never raise it.
TITLE_COLUMN_CHARS = 200


class InvalidInput(Exception):
    """Bad client input; `status` is the HTTP status to answer with, `retry_after` (seconds) goes into
    a `Retry-After` header (HTTP) or the error event (WebSocket) when set."""

    def __init__(self, code: str, message: str, status: int = 400, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class SendRequest:
    content: str
    request_id: str
    request_id_given: bool
    parent_id: int | None
    stream: bool
    idempotent: bool
    tools: bool
    # `"parent_id": null` sent explicitly: a new root (the edit of a thread's first message), where an
    # absent parent_id continues the current branch.
    new_root: bool = False


@dataclass(frozen=True, slots=True)
class ThreadCreate:
    title: str
    provider: str | None
    model: str | None
    system_prompt: str | None = None


@dataclass(frozen=True, slots=True)
class ThreadPatch:
    """The fields a PATCH names (None: leave as it is)."""

    title: str | None = None
    model: str | None = None
    system_prompt: str | None = None
    archived: bool | None = None
    current_leaf_id: int | None = None


def parse_json_object(raw: bytes | str) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput("invalid_json", f"The body is not valid JSON: {exc}.") from exc
    except RecursionError as exc:  # e.g. 100 000 nested brackets: still the client's mistake, not ours
        raise InvalidInput("invalid_json", "The body is nested too deeply.") from exc
    if not isinstance(data, dict):
        raise InvalidInput("invalid_json", "The body must be a JSON object.")
    return data


def reject_unknown(data: dict[str, Any], allowed: frozenset[str]) -> None:
    """400 `unknown_field` if `data` has a key outside `allowed` (named in the message, with the list)."""
    unknown = sorted(k for k in data if k not in allowed)
    if unknown:
        raise InvalidInput(
            "unknown_field",
            f"Unknown field {unknown[0]!r}; the accepted fields are {', '.join(sorted(allowed))}.",
        )


def text_problem(value: str) -> str | None:
    """Why a string cannot be stored, or None: PostgreSQL text refuses NUL characters, and no database
    encodes an unpaired surrogate (JSON's "\\ud800" decodes to one)."""
    if "\x00" in value:
        return "contains a NUL character"
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "contains an unpaired surrogate (invalid Unicode)"
    return None


def _check_text(key: str, value: str) -> None:
    problem = text_problem(value)
    if problem is not None:
        raise InvalidInput("invalid_text", f"'{key}' {problem}.")


def _opt_str(data: dict[str, Any], key: str, *, max_len: int) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput("invalid_field", f"'{key}' must be a string.")
    if len(value) > max_len:
        raise InvalidInput("invalid_field", f"'{key}' is longer than {max_len} characters.")
    _check_text(key, value)
    return value


def _opt_bool(data: dict[str, Any], key: str, default: bool) -> bool:
    value = data.get(key, default)
    if not isinstance(value, bool):
        raise InvalidInput("invalid_field", f"'{key}' must be true or false.")
    return value


def parse_thread_create(
    data: dict[str, Any], *, max_title_chars: int = TITLE_COLUMN_CHARS, max_system_prompt_chars: int = 8000
) -> ThreadCreate:
    reject_unknown(data, THREAD_CREATE_FIELDS)
    title = data.get("title")
    if isinstance(title, str) and len(title) > max_title_chars:
        raise InvalidInput("title_too_long", f"'title' is longer than {max_title_chars} characters.")
    title = (_opt_str(data, "title", max_len=max_title_chars) or "").strip()
    return ThreadCreate(
        title=title,
        provider=_opt_str(data, "provider", max_len=32),
        model=_opt_str(data, "model", max_len=MODEL_ID_CHARS),
        system_prompt=_opt_str(data, "system_prompt", max_len=max_system_prompt_chars),
    )


def parse_thread_patch(
    data: dict[str, Any], *, max_title_chars: int = TITLE_COLUMN_CHARS, max_system_prompt_chars: int = 8000
) -> ThreadPatch:
    """A PATCH of a thread: any of `title` (non-empty once stripped), `model`, `system_prompt`,
    `archived`, `current_leaf_id`. Every field is checked before anything is written."""
    reject_unknown(data, THREAD_PATCH_FIELDS)
    if not data:
        raise InvalidInput("empty_change", f"Send at least one of: {', '.join(sorted(THREAD_PATCH_FIELDS))}.")
    return ThreadPatch(
        title=_patch_title(data, max_title_chars) if "title" in data else None,
        model=_opt_str(data, "model", max_len=MODEL_ID_CHARS),
        system_prompt=_opt_str(data, "system_prompt", max_len=max_system_prompt_chars),
        archived=_opt_bool(data, "archived", False) if "archived" in data else None,
        current_leaf_id=_patch_leaf(data["current_leaf_id"]) if "current_leaf_id" in data else None,
    )


def _patch_title(data: dict[str, Any], max_title_chars: int) -> str:
    title = data["title"]
    if isinstance(title, str) and len(title) > max_title_chars:
        raise InvalidInput("title_too_long", f"'title' is longer than {max_title_chars} characters.")
    title = " ".join((_opt_str(data, "title", max_len=max_title_chars) or "").split())
    if not title:
        raise InvalidInput("invalid_title", "'title' must be a non-empty string.")
    return title


def _patch_leaf(leaf: object) -> int:
    if isinstance(leaf, bool) or not isinstance(leaf, int) or not id_in_range(leaf):
        raise InvalidInput("invalid_leaf", "'current_leaf_id' must be the id of a message of this thread.")
    return leaf


def parse_send(
    data: dict[str, Any], *, max_chars: int, extra_fields: frozenset[str] = frozenset()
) -> SendRequest:
    """A send from an HTTP body or a WebSocket frame (whose `type` the caller allows in `extra_fields`)."""
    reject_unknown(data, SEND_FIELDS | extra_fields)
    content = data.get("content")
    if not isinstance(content, str) or not content.strip():
        raise InvalidInput("invalid_content", "'content' must be a non-empty string.")
    if len(content) > max_chars:
        raise InvalidInput(
            "content_too_large", f"'content' is longer than {max_chars} characters.", status=413
        )
    _check_text("content", content)
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
        isinstance(parent_id, bool) or not isinstance(parent_id, int) or not id_in_range(parent_id)
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
        new_root="parent_id" in data and parent_id is None,
    )


def parse_request_id(value: object) -> str:
    if not isinstance(value, str) or not REQUEST_ID_RE.match(value):
        raise InvalidInput("invalid_request_id", "That is not a valid request_id.")
    return value


def parse_message_cursor(value: object) -> int:
    """A history page's `before`: a message id (a JSON integer; a query string's goes through parse_id)."""
    if not isinstance(value, int) or isinstance(value, bool) or not id_in_range(value):
        raise InvalidInput("invalid_cursor", "'before' must be the id of a message.")
    return value


def parse_page_limit(raw: str, *, most: int) -> int:
    """A history page's `?limit=`: 1 to `most` messages."""
    limit = parse_id(raw)
    if limit is None or limit > most:
        raise InvalidInput("invalid_limit", f"'limit' must be a number of messages from 1 to {most}.")
    return limit


# --- WebSocket frames -----------------------------------------------------------------------------

FRAME_TYPES = ("send", "cancel", "ack", "history", "regenerate")
# Per frame type, the fields besides those parse_send checks (sends) or the ones listed (others).
SEND_FRAME_EXTRA = frozenset({"type"})
CANCEL_FRAME_FIELDS = frozenset({"type", "request_id"})
ACK_FRAME_FIELDS = frozenset({"type", "count"})
HISTORY_FRAME_FIELDS = frozenset({"type", "before"})
REGENERATE_FIELDS = frozenset({"request_id", "stream", "idempotent"})
REGENERATE_FRAME_FIELDS = frozenset({"type", "message_id", "request_id", "idempotent"})


def parse_frame(text: str | None, data: bytes | None, *, max_bytes: int) -> tuple[str, dict[str, Any]]:
    """A client frame's type and object. Raises InvalidInput (sent back as an `error` event; the socket
    stays open) for a frame over `max_bytes` (`too_large`), a binary frame, non-JSON or non-object
    JSON, an unknown `type`, or unknown fields of a cancel, ack or history frame (a send's are checked by
    parse_send)."""
    if frame_size(text, data) > max_bytes:
        raise InvalidInput("too_large", f"Frames are limited to {max_bytes} bytes.", status=413)
    if data is not None:
        raise InvalidInput("binary_frame", "Send frames as JSON text, not binary.")
    try:
        frame = json.loads(text or "")
    except (ValueError, RecursionError) as exc:
        raise InvalidInput("invalid_json", "Frames must be JSON objects.") from exc
    if not isinstance(frame, dict):
        raise InvalidInput("invalid_json", "Frames must be JSON objects.")
    kind = frame.get("type")
    if not isinstance(kind, str) or kind not in FRAME_TYPES:
        raise InvalidInput(
            "unknown_type", "'type' must be 'send', 'cancel', 'ack', 'history' or 'regenerate'."
        )
    if kind == "cancel":
        reject_unknown(frame, CANCEL_FRAME_FIELDS)
    elif kind == "ack":
        reject_unknown(frame, ACK_FRAME_FIELDS)
    elif kind == "history":
        reject_unknown(frame, HISTORY_FRAME_FIELDS)
    elif kind == "regenerate":
        reject_unknown(frame, REGENERATE_FRAME_FIELDS)
    return kind, frame


# --- the conversation tree (#18) -----------------------------------------------------------------------


def parse_regenerate(data: dict[str, Any], *, message_id: object, allowed: frozenset[str]) -> dict[str, Any]:
    """A regenerate from an HTTP body (`allowed`: REGENERATE_FIELDS) or a frame (REGENERATE_FRAME_FIELDS):
    the message id, request_id (made up when absent), stream and idempotent."""
    reject_unknown(data, allowed)
    if isinstance(message_id, bool) or not isinstance(message_id, int) or not id_in_range(message_id):
        raise InvalidInput("invalid_message_id", "'message_id' must be the id of an assistant message.")
    raw = data.get("request_id")
    request_id = uuid.uuid4().hex if raw is None else parse_request_id(raw)
    return {
        "message_id": message_id,
        "request_id": request_id,
        "stream": _opt_bool(data, "stream", False),
        "idempotent": _opt_bool(data, "idempotent", True),
    }
