"""Google Gemini API streaming (the native API, not its OpenAI-compatible layer).

POST {base_url}/v1beta/models/{model}:streamGenerateContent?alt=sse with `x-goog-api-key`. Roles map
`assistant` -> `model`; system messages go to `systemInstruction`. Each SSE event is a
`GenerateContentResponse`: `candidates[0].content.parts[].text`, `candidates[0].finishReason` on the
last one, and `usageMetadata` (promptTokenCount, candidatesTokenCount; cumulative). A prompt blocked by
safety filters answers `promptFeedback.blockReason` and no candidate. There is no end marker: the
stream is complete once a finishReason arrived.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from ._base import ChatMessage, Completion, GenerationParams, StreamEvent, TextDelta
from ._errors import ProviderBadRequest, ProviderMalformedStream, ProviderStreamError
from ._http import HTTPProvider, StreamParser, extra_params, load_event_json
from ._sse import SSEEvent
from ._util import as_int as _int
from ._util import as_object as _object

# Gemini finish reasons in the vocabulary of OpenAI's finish_reason, which the app stores.
_FINISH_REASONS = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "LANGUAGE": "stop",
    "MALFORMED_FUNCTION_CALL": "tool_calls",
}
# google.rpc status names after which a fresh attempt may succeed.
_RETRYABLE_STATUSES = frozenset({"RESOURCE_EXHAUSTED", "UNAVAILABLE", "INTERNAL", "DEADLINE_EXCEEDED"})
BLOCKED_MESSAGE = "The model's safety filters blocked this request. Rephrase it and try again."


class GeminiStreamParser:
    """`GenerateContentResponse` events -> `TextDelta`s and one `Completion` (candidate 0 only)."""

    def __init__(self, provider: str) -> None:
        self.provider = provider
        self.done = False
        self.finish_reason: str | None = None
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None
        self.text_seen = False

    def feed(self, event: SSEEvent) -> list[StreamEvent]:
        data = load_event_json(self.provider, event.data)
        if "error" in data:
            self._raise_error(_object(data["error"]))
        usage = _object(data.get("usageMetadata"))
        if usage:
            self.input_tokens = _int(usage.get("promptTokenCount")) or self.input_tokens
            self.output_tokens = _int(usage.get("candidatesTokenCount")) or self.output_tokens
        blocked = _object(data.get("promptFeedback")).get("blockReason")
        if blocked:
            raise ProviderBadRequest(
                f"{self.provider} blocked the prompt (blockReason {blocked}).",
                provider=self.provider,
                message=BLOCKED_MESSAGE,
            )
        candidates = data.get("candidates")
        if candidates is not None and not isinstance(candidates, list):
            raise ProviderMalformedStream(
                f"{self.provider} sent non-list candidates.", provider=self.provider
            )
        out: list[StreamEvent] = []
        for candidate in map(_object, candidates or ()):
            if candidate.get("index", 0) != 0:
                continue
            for part in map(_object, _object(candidate.get("content")).get("parts") or ()):
                text = part.get("text")
                if isinstance(text, str) and text and not part.get("thought"):
                    self.text_seen = True
                    out.append(TextDelta(text))
            reason = candidate.get("finishReason")
            if reason and reason != "FINISH_REASON_UNSPECIFIED":
                self.finish_reason = str(reason)
        return out

    def _raise_error(self, error: dict[str, Any]) -> None:
        status = str(error.get("status") or error.get("code") or "error")
        raise ProviderStreamError(
            f"{self.provider} reported an error mid-stream ({status}): {error.get('message') or status}",
            provider=self.provider,
            upstream_type=status,
            retryable=status in _RETRYABLE_STATUSES,
        )

    def finish(self) -> Completion:
        if self.finish_reason is None:
            raise ProviderMalformedStream(
                f"{self.provider} ended the stream without a finishReason (truncated response).",
                provider=self.provider,
            )
        reason = _FINISH_REASONS.get(self.finish_reason, self.finish_reason.lower())
        if reason == "content_filter" and not self.text_seen:
            raise ProviderBadRequest(
                f"{self.provider} blocked the answer (finishReason {self.finish_reason}).",
                provider=self.provider,
                message=BLOCKED_MESSAGE,
            )
        return Completion(reason, self.input_tokens, self.output_tokens)


def _daily_quota(error: dict[str, Any]) -> bool:
    """A 429 whose google.rpc.QuotaFailure names a per-day quota (e.g. GenerateRequestsPerDayPerProject...)."""
    for detail in map(_object, error.get("details") or ()):
        for violation in map(_object, detail.get("violations") or ()):
            if "PerDay" in str(violation.get("quotaId", "")):
                return True
    return False


def gemini_contents(messages: Sequence[ChatMessage]) -> tuple[str, list[dict[str, Any]]]:
    """(system instruction, contents): system messages joined; `assistant` -> `model`; consecutive
    same-role turns merged (Gemini expects them to alternate)."""
    system = "\n\n".join(m.content for m in messages if m.role == "system")
    contents: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "system":
            continue
        role = "model" if m.role == "assistant" else "user"
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"][0]["text"] += "\n\n" + m.content
        else:
            contents.append({"role": role, "parts": [{"text": m.content}]})
    return system, contents


class GeminiProvider(HTTPProvider):
    """The Google Gemini API (generativelanguage.googleapis.com, or anything speaking it)."""

    env_prefix = "GEMINI"

    def _build_request(
        self, messages: Sequence[ChatMessage], params: GenerationParams
    ) -> tuple[str, dict[str, str], dict[str, Any]]:
        system, contents = gemini_contents(messages)
        config: dict[str, Any] = {"maxOutputTokens": params.max_tokens}
        if params.temperature is not None:
            config["temperature"] = params.temperature
        body: dict[str, Any] = {"contents": contents, "generationConfig": config}
        if system:
            body["systemInstruction"] = {"parts": [{"text": system}]}
        body.update(extra_params(params.extra))
        model = params.model or self.default_model
        headers = {"accept": "text/event-stream", "x-goog-api-key": self.api_key}
        return f"/v1beta/models/{quote(model, safe='')}:streamGenerateContent?alt=sse", headers, body

    def _new_parser(self) -> StreamParser:
        return GeminiStreamParser(self.name)

    def _error_details(self, body: Any) -> tuple[str | None, str]:
        # {"error": {"code": 429, "message": "...", "status": "RESOURCE_EXHAUSTED"}}
        error = _object(_object(body).get("error"))
        status = error.get("status")
        if status == "RESOURCE_EXHAUSTED" and _daily_quota(error):
            status = "insufficient_quota"  # a daily (or billing) quota: waiting seconds will not help
        return (str(status) if status else None), str(error.get("message") or "")
