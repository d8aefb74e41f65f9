"""The provider exception tree (shaped like `httpx/_exceptions.py`).

Every failure of a provider reaches the caller as one `ProviderError` subclass; vendor and transport
errors (httpx, JSON) are translated with `raise ... from exc` so the cause stays in the traceback.

    ProviderError
    ├── UnknownProvider            no such provider configured             400 unknown_provider
    ├── ProviderTransportError     nothing usable came back
    │   ├── ProviderTimeout        connect / first_byte / idle / total     504 provider_timeout
    │   └── ProviderConnectionError refused, reset, closed mid-body        502 provider_connection_error
    ├── ProviderStatusError        upstream answered with an error status
    │   ├── ProviderRateLimited    429 (Retry-After honoured)              429 provider_rate_limited
    │   ├── ProviderQuotaExceeded  429 insufficient_quota, never retried   429 provider_quota_exceeded
    │   ├── ProviderOverloaded     5xx, Anthropic 529                      502 provider_overloaded
    │   ├── ProviderBadRequest     other 4xx (bad model, too long...)      400 provider_bad_request
    │   └── ProviderAuthError      401 / 403                               502 provider_auth_failed
    └── ProviderStreamError        went wrong after a 200                  502 provider_stream_error
        └── ProviderMalformedStream bad JSON, missing terminal event       502 provider_malformed_stream

`code`, `message` and `http_status` are what our API answers with (`{"error": {"code", "message"}}`):
`message` is a plain sentence fixed by the class (`public_message`), so it never carries a URL, a
key or the upstream's own words (which can name the operator's organisation). The constructor's text
is `detail`, for logs and staff only (also `str(exc)`). `retryable` says whether a fresh attempt may
succeed (the retry layer still never retries once a token reached the caller); `retry_after` is the
upstream's rate-limit hint in seconds, when it sent one.
"""

from __future__ import annotations

from typing import ClassVar, Literal, TypedDict, Unpack

TimeoutPhase = Literal["connect", "first_byte", "idle", "total"]


class ErrorOptions(TypedDict, total=False):
    """The optional keyword arguments every `ProviderError` accepts."""

    message: str | None
    provider: str | None
    retry_after: float | None
    retryable: bool | None
    upstream_status: int | None


class ProviderError(Exception):
    """Base class of every provider failure."""

    code: ClassVar[str] = "provider_error"
    http_status: ClassVar[int] = 502
    default_retryable: ClassVar[bool] = False
    # What users read: written here, never built from the upstream's answer or the configuration.
    public_message: ClassVar[str] = "The model provider failed. Please try again."

    def __init__(
        self,
        detail: str,
        *,
        message: str | None = None,
        provider: str | None = None,
        retry_after: float | None = None,
        retryable: bool | None = None,
        upstream_status: int | None = None,
    ) -> None:
        super().__init__(detail)
        # For logs and staff: may name the base URL and quote the upstream.
        self.detail = detail
        # `message` overrides the class's sentence only where the caller builds it from safe parts
        # (the pacer's queue wait, the configured provider names): never pass `detail` through it.
        self.message = message or self.public_message
        self.provider = provider
        self.retry_after = retry_after
        self.retryable = self.default_retryable if retryable is None else retryable
        # The status the upstream answered with (None for transport errors and in-band errors).
        self.upstream_status = upstream_status


class UnknownProvider(ProviderError):
    """The requested provider name is not in `settings.PROVIDERS` (or its kind is not implemented)."""

    code = "unknown_provider"
    http_status = 400
    public_message = "Unknown provider."


class ProviderTransportError(ProviderError):
    """The request did not produce a usable HTTP exchange."""

    default_retryable = True


class ProviderTimeout(ProviderTransportError):
    """A deadline passed: `phase` says which one (see `Timeouts`)."""

    code = "provider_timeout"
    http_status = 504
    public_message = "The model took too long to answer. Please try again."

    def __init__(self, detail: str, *, phase: TimeoutPhase, **options: Unpack[ErrorOptions]) -> None:
        # The whole-stream budget is spent: a fresh attempt would start with no time left.
        options.setdefault("retryable", phase != "total")
        super().__init__(detail, **options)
        self.phase: TimeoutPhase = phase


class ProviderConnectionError(ProviderTransportError):
    """Connection refused, reset, or closed before the response was complete."""

    code = "provider_connection_error"
    public_message = "The model provider could not be reached, or the connection broke. Please try again."


class ProviderStatusError(ProviderError):
    """The upstream answered with an error status code (`upstream_status`)."""


class ProviderRateLimited(ProviderStatusError):
    """Upstream 429 (requests or tokens per minute); `retry_after` holds its Retry-After, if sent."""

    code = "provider_rate_limited"
    http_status = 429
    default_retryable = True
    public_message = "The model provider is receiving too many requests. Please try again shortly."


class ProviderQuotaExceeded(ProviderStatusError):
    """Upstream 429 `insufficient_quota`: billing, not load. Waiting does not help, so never retried."""

    code = "provider_quota_exceeded"
    http_status = 429
    public_message = "The model provider refused the request: this service's usage quota is used up."


class ProviderOverloaded(ProviderStatusError):
    """Upstream 5xx or Anthropic 529 `overloaded_error`."""

    code = "provider_overloaded"
    default_retryable = True
    public_message = "The model provider is overloaded or failing. Please try again."


class ProviderBadRequest(ProviderStatusError):
    """Upstream rejected the request (400, 404 unknown model, 413, 422): fix the request, not retry."""

    code = "provider_bad_request"
    http_status = 400
    public_message = (
        "The model provider rejected the request (for example, the conversation is too long for the model)."
    )


class ProviderAuthError(ProviderStatusError):
    """Upstream 401/403: the API key is missing, wrong or lacks permission (a server-side problem)."""

    code = "provider_auth_failed"
    public_message = "The model provider refused this service's credentials. Please tell the operator."


class ProviderStreamError(ProviderError):
    """The upstream reported an error inside a 200 stream (in-band error event)."""

    code = "provider_stream_error"
    public_message = "The model provider reported an error while answering."

    def __init__(
        self, detail: str, *, upstream_type: str | None = None, **options: Unpack[ErrorOptions]
    ) -> None:
        super().__init__(detail, **options)
        # The vendor's error type, e.g. "overloaded_error", when the upstream sent one.
        self.upstream_type = upstream_type


class ProviderMalformedStream(ProviderStreamError):
    """The stream broke the protocol: undecodable JSON, or it ended without a terminal event."""

    code = "provider_malformed_stream"
    default_retryable = True
    public_message = "The model provider sent an answer that could not be read."
