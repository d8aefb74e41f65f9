"""OpenAI-compatible Chat Completions streaming (OpenAI, vLLM, Ollama, llama.cpp, LM Studio...).

POST {base_url}/chat/completions with `stream: true` and `stream_options.include_usage`; the body is
SSE `data:` lines holding `chat.completion.chunk` objects, then `data: [DONE]`. Some servers send an
in-band `{"error": {...}}` object instead of a chunk; that is a `ProviderStreamError`.

A stream counts as complete when `[DONE]` arrived, or (for servers that omit it) when the body ended
after a `finish_reason`; a body that ends with neither is a `ProviderMalformedStream`.
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

# In-band error types after which a fresh attempt may succeed (before any token reached the caller).
_RETRYABLE_ERRORS = frozenset({"server_error", "overloaded_error", "rate_limit_exceeded", "timeout"})


class OpenAIStreamParser:
    """`chat.completion.chunk` events -> `TextDelta`s and one `Completion` (choice 0 only)."""

    def __init__(self, provider: str) -> None:
        self.provider = provider
        self.done = False
        self.finish_reason: str | None = None
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None

    def feed(self, event: SSEEvent) -> list[StreamEvent]:
        if event.data.strip() == "[DONE]":
            self.done = True
            return []
        chunk = load_event_json(self.provider, event.data)
        if "error" in chunk:
            error = _object(chunk["error"])
            kind = str(error.get("type") or error.get("code") or "error")
            raise ProviderStreamError(
                f"{self.provider} reported an error mid-stream ({kind}): {error.get('message') or chunk['error']}",
                provider=self.provider,
                upstream_type=kind,
                retryable=kind in _RETRYABLE_ERRORS,
            )
        usage = _object(chunk.get("usage"))
        if usage:
            self.input_tokens = _int(usage.get("prompt_tokens"))
            self.output_tokens = _int(usage.get("completion_tokens"))
        choices = chunk.get("choices")
        if choices is not None and not isinstance(choices, list):
            raise ProviderMalformedStream(f"{self.provider} sent non-list choices.", provider=self.provider)
        out: list[StreamEvent] = []
        for choice in map(_object, choices or ()):
            if choice.get("index", 0) != 0:
                continue
            content = _object(choice.get("delta")).get("content")
            if isinstance(content, str) and content:
                out.append(TextDelta(content))
            if choice.get("finish_reason"):
                self.finish_reason = str(choice["finish_reason"])
        return out

    def finish(self) -> Completion:
        if not self.done and self.finish_reason is None:
            raise ProviderMalformedStream(
                f"{self.provider} ended the stream without [DONE] or a finish_reason (truncated response).",
                provider=self.provider,
            )
        return Completion(self.finish_reason or "stop", self.input_tokens, self.output_tokens)


class OpenAIProvider(HTTPProvider):
    """Any server speaking the OpenAI Chat Completions streaming API."""

    env_prefix = "OPENAI"

    def _build_request(
        self, messages: Sequence[ChatMessage], params: GenerationParams
    ) -> tuple[str, dict[str, str], dict[str, Any]]:
        body: dict[str, Any] = {
            "model": params.model or self.default_model,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "stream": True,
            "stream_options": {"include_usage": True},
            # max_tokens, not max_completion_tokens: every compatible server understands it.
            "max_tokens": params.max_tokens,
        }
        if params.temperature is not None:
            body["temperature"] = params.temperature
        body.update(extra_params(params.extra))
        headers = {"accept": "text/event-stream"}
        if self.api_key:  # local servers (Ollama, llama.cpp) need none
            headers["authorization"] = f"Bearer {self.api_key}"
        return "/chat/completions", headers, body

    def _new_parser(self) -> StreamParser:
        return OpenAIStreamParser(self.name)

    def _error_details(self, body: Any) -> tuple[str | None, str]:
        # {"error": {"message", "type", "code"}}; quota errors carry "insufficient_quota" in either.
        error = _object(_object(body).get("error"))
        kinds = [str(error[k]) for k in ("code", "type") if error.get(k)]
        kind = "insufficient_quota" if "insufficient_quota" in kinds else (kinds[0] if kinds else None)
        return kind, str(error.get("message") or "")
