"""Anthropic Messages API streaming.

POST {base_url}/v1/messages (headers `x-api-key`, `anthropic-version: 2023-06-01`) with
`stream: true`. System messages go to the top-level `system` parameter. Events: `message_start`
(usage.input_tokens), `content_block_delta` (`text_delta`), `message_delta` (stop_reason,
cumulative usage: output_tokens and, from some gateways, input_tokens), `message_stop`, `ping`, and
in-band `error` (e.g. `overloaded_error`). Unknown event types are ignored, as Anthropic's versioning policy asks.

A stream is complete at `message_stop`, or when the body ends after a `message_delta` carrying a
stop_reason; anything shorter is a `ProviderMalformedStream`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ._base import ChatMessage, Completion, GenerationParams, StreamEvent, TextDelta
from ._errors import ProviderMalformedStream, ProviderStreamError
from ._http import HTTPProvider, StreamParser, extra_params, load_event_json
from ._sse import SSEEvent
from ._util import as_int as _int
from ._util import as_object as _object

ANTHROPIC_VERSION = "2023-06-01"
# Anthropic stop reasons in the vocabulary of OpenAI's finish_reason, which the app stores.
_STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
}
_RETRYABLE_ERRORS = frozenset({"overloaded_error", "api_error", "rate_limit_error", "timeout_error"})


class AnthropicStreamParser:
    """Messages API events -> `TextDelta`s and one `Completion`."""

    def __init__(self, provider: str) -> None:
        self.provider = provider
        self.done = False
        self.stop_reason: str | None = None
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None

    def feed(self, event: SSEEvent) -> list[StreamEvent]:
        data = load_event_json(self.provider, event.data)
        kind = data.get("type") or event.event
        if kind == "content_block_delta":
            delta = _object(data.get("delta"))
            text = delta.get("text")
            if delta.get("type") == "text_delta" and isinstance(text, str) and text:
                return [TextDelta(text)]
        elif kind == "message_start":
            usage = _object(_object(data.get("message")).get("usage"))
            self.input_tokens = _int(usage.get("input_tokens"))
            self.output_tokens = _int(usage.get("output_tokens"))
        elif kind == "message_delta":
            stop_reason = _object(data.get("delta")).get("stop_reason")
            if stop_reason:
                self.stop_reason = str(stop_reason)
            usage = _object(data.get("usage"))
            # Cumulative counts: a gateway (LiteLLM) may send input_tokens only here, after a 0 at the start.
            self.input_tokens = _int(usage.get("input_tokens")) or self.input_tokens
            self.output_tokens = _int(usage.get("output_tokens")) or self.output_tokens
        elif kind == "message_stop":
            self.done = True
        elif kind == "error":
            self._raise_error(_object(data.get("error")))
        return []

    def _raise_error(self, error: dict[str, Any]) -> None:
        kind = str(error.get("type") or "error")
        raise ProviderStreamError(
            f"{self.provider} reported an error mid-stream ({kind}): {error.get('message') or kind}",
            provider=self.provider,
            upstream_type=kind,
            retryable=kind in _RETRYABLE_ERRORS,
        )

    def finish(self) -> Completion:
        if not self.done and self.stop_reason is None:
            raise ProviderMalformedStream(
                f"{self.provider} ended the stream without message_stop (truncated response).",
                provider=self.provider,
            )
        reason = self.stop_reason or "end_turn"
        return Completion(_STOP_REASONS.get(reason, reason), self.input_tokens, self.output_tokens)


def anthropic_messages(messages: Sequence[ChatMessage]) -> tuple[str, list[dict[str, str]]]:
    """(system prompt, turns): system messages joined; consecutive same-role turns merged."""
    system = "\n\n".join(m.content for m in messages if m.role == "system")
    turns: list[dict[str, str]] = []
    for m in messages:
        if m.role == "system":
            continue
        if turns and turns[-1]["role"] == m.role:
            turns[-1]["content"] += "\n\n" + m.content
        else:
            turns.append({"role": m.role, "content": m.content})
    return system, turns


class AnthropicProvider(HTTPProvider):
    """The Anthropic Messages API."""

    env_prefix = "ANTHROPIC"

    def _build_request(
        self, messages: Sequence[ChatMessage], params: GenerationParams
    ) -> tuple[str, dict[str, str], dict[str, Any]]:
        system, turns = anthropic_messages(messages)
        body: dict[str, Any] = {
            "model": params.model or self.default_model,
            "max_tokens": params.max_tokens,
            "messages": turns,
            "stream": True,
        }
        if system:
            body["system"] = system
        if params.temperature is not None:
            body["temperature"] = params.temperature
        body.update(extra_params(params.extra))
        headers = {
            "accept": "text/event-stream",
            "anthropic-version": ANTHROPIC_VERSION,
            "x-api-key": self.api_key,
        }
        return "/v1/messages", headers, body

    def _new_parser(self) -> StreamParser:
        return AnthropicStreamParser(self.name)

    def _error_details(self, body: Any) -> tuple[str | None, str]:
        # {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
        error = _object(_object(body).get("error"))
        kind = error.get("type")
        return (str(kind) if kind else None), str(error.get("message") or "")
