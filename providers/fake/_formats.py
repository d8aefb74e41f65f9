"""What the fake provider server says: reply plans, faults, OpenAI, Anthropic and Gemini wire formats (pure)."""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from typing import Any

# fault kind -> meaning of its argument (None: takes none). Documented in docs/providers.md.
FAULT_KINDS: dict[str, str | None] = {
    "http": "status code: answer with that status and a vendor-style JSON error body",
    "rate_limit": "seconds: 429 with Retry-After (default 1)",
    "quota": None,  # 429 insufficient_quota
    "drop": None,  # close the connection without answering
    "hang": None,  # never send the response headers
    "stall": None,  # headers, then no bytes at all
    "stall_after": "tokens: send K tokens, then nothing",
    "disconnect_after": "tokens: send K tokens, then reset the connection",
    "malformed": None,  # a non-JSON event before any token
    "malformed_after": "tokens: K tokens, then a non-JSON event",
    "error_event": None,  # an in-band error event (overloaded) before any token
    "error_after": "tokens: K tokens, then an in-band error event",
    "truncate_after": "tokens: K tokens, then end the body cleanly without the terminal event",
}
# Shorthands: "stall" is "stall_after:0" and so on.
_ALIASES = {"stall": "stall_after", "malformed": "malformed_after", "error_event": "error_after"}
_DEFAULT_ARGS = {"rate_limit": 1.0}

_VOCABULARY = (
    "the a model answer question stream token server request simple fast quiet river mountain light "
    "garden window story careful bright system network signal pattern value number letter future "
    "morning evening idea reason example detail moment planet music color paper table water stone "
    "clear gentle quick steady open small large early late often always never maybe because while "
    "and but so then also still just even only very quite rather really almost nearly is was are "
    "were will can could should would might makes takes gives finds keeps shows brings holds turns "
    "starts learns builds writes reads moves grows works helps thinks knows feels seems looks"
).split()


@dataclass(frozen=True, slots=True)
class Fault:
    """One injected failure: `kind` from FAULT_KINDS (aliases resolved) and its argument."""

    kind: str
    arg: float = 0.0

    @property
    def after(self) -> int:
        return int(self.arg)

    def __str__(self) -> str:
        return self.kind if FAULT_KINDS[self.kind] is None else f"{self.kind}:{self.arg:g}"


def parse_fault(spec: str | None) -> Fault | None:
    """`"http:503"`, `"rate_limit:2"`, `"disconnect_after:3"`, `"stall"`... ; "" or "none" -> None."""
    spec = (spec or "").strip().lower()
    if spec in ("", "none"):
        return None
    kind, _, raw_arg = spec.partition(":")
    if kind not in FAULT_KINDS:
        raise ValueError(f"unknown fault {kind!r}; known: {', '.join(FAULT_KINDS)}")
    try:
        arg = float(raw_arg) if raw_arg else _DEFAULT_ARGS.get(kind, 0.0)
    except ValueError as exc:
        raise ValueError(f"fault argument must be a number: {spec!r}") from exc
    if kind == "http" and not 300 <= arg <= 599:
        raise ValueError(f"http fault needs a status code between 300 and 599: {spec!r}")
    return Fault(_ALIASES.get(kind, kind), arg)


def _gemini_parts(obj: Any) -> list[str]:
    parts = obj.get("parts") if isinstance(obj, dict) else None
    return [p["text"] for p in parts or () if isinstance(p, dict) and isinstance(p.get("text"), str)]


def prompt_text(body: dict[str, Any]) -> str:
    """All the text of a request (system + messages, or Gemini's systemInstruction + contents), for
    seeding and counting."""
    parts = [body["system"]] if isinstance(body.get("system"), str) else []
    parts += _gemini_parts(body.get("systemInstruction"))
    for content in body.get("contents") or ():
        parts += _gemini_parts(content)
    for message in body.get("messages") or ():
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):  # content blocks: [{"type": "text", "text": ...}]
            parts += [b.get("text", "") for b in content if isinstance(b, dict)]
    return "\n".join(parts)


def reply_tokens(prompt: str, count: int) -> list[str]:
    """`count` deterministic word tokens for `prompt` (the first without a leading space)."""
    seed = int.from_bytes(hashlib.blake2b(prompt.encode("utf-8", "surrogatepass"), digest_size=8).digest())
    words = random.Random(seed).choices(_VOCABULARY, k=count)
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


class OpenAIWire:
    """`chat.completion.chunk` SSE, `[DONE]`, and OpenAI-style error bodies."""

    def __init__(self, model: str, call_id: int, include_usage: bool) -> None:
        self.include_usage = include_usage
        head = f'{{"id":"chatcmpl-fake-{call_id}","object":"chat.completion.chunk","created":0,"model":{_dumps(model)}'
        self._head = head
        # Built once per stream: each token is then one string concatenation plus json.dumps of the token.
        self._token_prefix = f'data: {head},"choices":[{{"index":0,"delta":{{"content":'
        self.model = model
        self.call_id = call_id

    def prologue(self, input_tokens: int) -> bytes:
        return f'data: {self._head},"choices":[{{"index":0,"delta":{{"role":"assistant","content":""}},"finish_reason":null}}]}}\n\n'.encode()

    def token(self, text: str) -> bytes:
        return f'{self._token_prefix}{_dumps(text)}}},"finish_reason":null}}]}}\n\n'.encode()

    def epilogue(self, finish: str, input_tokens: int, output_tokens: int) -> bytes:
        reason = "length" if finish == "length" else "stop"
        out = f'data: {self._head},"choices":[{{"index":0,"delta":{{}},"finish_reason":"{reason}"}}]}}\n\n'
        if self.include_usage:
            usage = {
                "prompt_tokens": input_tokens,
                "completion_tokens": output_tokens,
                "total_tokens": input_tokens + output_tokens,
            }
            out += f'data: {self._head},"choices":[],"usage":{_dumps(usage)}}}\n\n'
        return (out + "data: [DONE]\n\n").encode()

    def error_event(self) -> bytes:
        error = {"message": "The server is overloaded (fake).", "type": "server_error", "code": None}
        return f"data: {_dumps({'error': error})}\n\n".encode()

    def malformed_event(self) -> bytes:
        return b'data: {"choices": [{"delta": {"content": "unterminated\n\n'

    def error_body(self, status: int, quota: bool = False) -> dict[str, Any]:
        if quota:
            kind, code, message = (
                "insufficient_quota",
                "insufficient_quota",
                "You exceeded your current quota for organization org-fake (fake).",
            )
        elif status == 429:
            kind, code, message = (
                "requests",
                "rate_limit_exceeded",
                "Rate limit reached in organization org-fake on requests per min (fake).",
            )
        elif status in (401, 403):
            kind, code, message = (
                "invalid_request_error",
                "invalid_api_key",
                "Incorrect API key provided (fake).",
            )
        elif status >= 500:
            kind, code, message = "server_error", None, "The server had an error (fake)."
        else:
            kind, code, message = "invalid_request_error", None, f"Invalid request (fake {status})."
        return {"error": {"message": message, "type": kind, "param": None, "code": code}}

    def full_body(self, text: str, finish: str, input_tokens: int, output_tokens: int) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-fake-{self.call_id}",
            "object": "chat.completion",
            "created": 0,
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "length" if finish == "length" else "stop",
                }
            ],
            "usage": {
                "prompt_tokens": input_tokens,
                "completion_tokens": output_tokens,
                "total_tokens": input_tokens + output_tokens,
            },
        }


_ANTHROPIC_ERRORS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def _event(name: str, data: str) -> str:
    return f"event: {name}\ndata: {data}\n\n"


class AnthropicWire:
    """Messages API SSE events and Anthropic-style error bodies."""

    def __init__(self, model: str, call_id: int, include_usage: bool = True) -> None:
        self.model = model
        self.call_id = call_id
        self.include_usage = include_usage

    def prologue(self, input_tokens: int) -> bytes:
        message: dict[str, Any] = {
            "id": f"msg_fake_{self.call_id}",
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": 1},
        }
        if not self.include_usage:  # as a gateway that strips usage would send it
            del message["usage"]
        return (
            _event("message_start", _dumps({"type": "message_start", "message": message}))
            + _event(
                "content_block_start",
                '{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}',
            )
            + _event("ping", '{"type":"ping"}')
        ).encode()

    def token(self, text: str) -> bytes:
        data = f'{{"type":"content_block_delta","index":0,"delta":{{"type":"text_delta","text":{_dumps(text)}}}}}'
        return _event("content_block_delta", data).encode()

    def epilogue(self, finish: str, input_tokens: int, output_tokens: int) -> bytes:
        delta = {
            "type": "message_delta",
            "delta": {
                "stop_reason": "max_tokens" if finish == "length" else "end_turn",
                "stop_sequence": None,
            },
            "usage": {"output_tokens": output_tokens},
        }
        if not self.include_usage:
            del delta["usage"]
        return (
            _event("content_block_stop", '{"type":"content_block_stop","index":0}')
            + _event("message_delta", _dumps(delta))
            + _event("message_stop", '{"type":"message_stop"}')
        ).encode()

    def error_event(self) -> bytes:
        return _event(
            "error", '{"type":"error","error":{"type":"overloaded_error","message":"Overloaded (fake)"}}'
        ).encode()

    def malformed_event(self) -> bytes:
        return b'event: content_block_delta\ndata: {"type":"content_block_delta","delta":\n\n'

    def error_body(self, status: int, quota: bool = False) -> dict[str, Any]:
        kind = "insufficient_quota" if quota else _ANTHROPIC_ERRORS.get(status, "api_error")
        return {"type": "error", "error": {"type": kind, "message": f"{kind} (fake {status})"}}

    def full_body(self, text: str, finish: str, input_tokens: int, output_tokens: int) -> dict[str, Any]:
        return {
            "id": f"msg_fake_{self.call_id}",
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [{"type": "text", "text": text}],
            "stop_reason": "max_tokens" if finish == "length" else "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
        }


_GEMINI_STATUSES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


class GeminiWire:
    """`streamGenerateContent?alt=sse` events (each a whole GenerateContentResponse) and google.rpc
    error bodies. There is no end marker: the last event carries finishReason and usageMetadata."""

    def __init__(self, model: str, call_id: int, include_usage: bool = True) -> None:
        self.model = model
        self.call_id = call_id
        self.include_usage = include_usage
        self._token_prefix = 'data: {"candidates":[{"content":{"parts":[{"text":'
        self._token_suffix = f'}}],"role":"model"}},"index":0}}],"modelVersion":{_dumps(model)}}}\r\n\r\n'

    def prologue(self, input_tokens: int) -> bytes:
        return b""

    def token(self, text: str) -> bytes:
        return f"{self._token_prefix}{_dumps(text)}{self._token_suffix}".encode()

    def _usage(self, input_tokens: int, output_tokens: int) -> dict[str, Any]:
        """`usageMetadata`, as the last event carries it; omitted: a stream without it."""
        if not self.include_usage:
            return {}
        counts = {
            "promptTokenCount": input_tokens,
            "candidatesTokenCount": output_tokens,
            "totalTokenCount": input_tokens + output_tokens,
        }
        return {"usageMetadata": counts}

    def epilogue(self, finish: str, input_tokens: int, output_tokens: int) -> bytes:
        last = {
            "candidates": [
                {
                    "content": {"parts": [{"text": ""}], "role": "model"},
                    "finishReason": "MAX_TOKENS" if finish == "length" else "STOP",
                    "index": 0,
                }
            ],
            **self._usage(input_tokens, output_tokens),
            "modelVersion": self.model,
        }
        return f"data: {_dumps(last)}\r\n\r\n".encode()

    def error_event(self) -> bytes:
        error = {"code": 503, "message": "The model is overloaded (fake).", "status": "UNAVAILABLE"}
        return f"data: {_dumps({'error': error})}\r\n\r\n".encode()

    def malformed_event(self) -> bytes:
        return b'data: {"candidates": [{"content": {"parts": [{"text": "unterminated\r\n\r\n'

    def error_body(self, status: int, quota: bool = False) -> dict[str, Any]:
        kind = _GEMINI_STATUSES.get(status, "UNKNOWN")
        if not quota:
            return {"error": {"code": status, "message": f"{kind} (fake {status})", "status": kind}}
        violation = {
            "quotaMetric": "generate_requests",
            "quotaId": "GenerateRequestsPerDayPerProjectPerModel",
        }
        details = [{"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [violation]}]
        message = "You exceeded your current quota (fake)."
        return {"error": {"code": 429, "message": message, "status": kind, "details": details}}

    def full_body(self, text: str, finish: str, input_tokens: int, output_tokens: int) -> dict[str, Any]:
        return {
            "candidates": [
                {
                    "content": {"parts": [{"text": text}], "role": "model"},
                    "finishReason": "MAX_TOKENS" if finish == "length" else "STOP",
                    "index": 0,
                }
            ],
            **self._usage(input_tokens, output_tokens),
            "modelVersion": self.model,
        }


Wire = OpenAIWire | AnthropicWire | GeminiWire


def model_list(kind: str, models: list[str]) -> dict[str, Any]:
    """The model list in each vendor's shape (OpenAI `GET /v1/models`, Anthropic's `GET /v1/models`
    when `anthropic-version` is sent, Gemini's `GET /v1beta/models`)."""
    if kind == "gemini":
        return {
            "models": [
                {"name": f"models/{m}", "displayName": m, "supportedGenerationMethods": ["generateContent"]}
                for m in models
            ]
            + [{"name": "models/embedding-fake", "supportedGenerationMethods": ["embedContent"]}]
        }
    if kind == "anthropic":
        data = [
            {"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z"}
            for m in models
        ]
        return {"data": data, "has_more": False, "first_id": models[0] if models else None, "last_id": None}
    return {
        "object": "list",
        "data": [{"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in models],
    }
