"""The provider layer: stream chat completions from a model API, with typed errors and retries.

    from providers import get_provider, stream_with_retries, ChatMessage, GenerationParams

    provider = get_provider("openai")          # one instance per (name, running event loop)
    params = GenerationParams(model=provider.default_model)
    async for event in stream_with_retries(provider, [ChatMessage("user", "hi")], params):
        ...                                    # TextDelta(text)..., then one Completion

Every failure is a `ProviderError` subclass carrying the API `code`, `http_status`, `retryable`
and `retry_after`; its `message` is safe to show users, its `detail` is for logs and staff only.
See `providers/_errors.py` and docs/providers.md.
"""

from ._anthropic import AnthropicProvider
from ._base import ChatMessage, Completion, GenerationParams, Provider, Role, StreamEvent, TextDelta
from ._demo import DemoProvider
from ._errors import (
    ProviderAuthError,
    ProviderBadRequest,
    ProviderConnectionError,
    ProviderError,
    ProviderMalformedStream,
    ProviderOverloaded,
    ProviderQuotaExceeded,
    ProviderRateLimited,
    ProviderStatusError,
    ProviderStreamError,
    ProviderTimeout,
    ProviderTransportError,
    UnknownProvider,
)
from ._gemini import GeminiProvider
from ._http import HTTPProvider, Timeouts
from ._http import prepare as prepare_http
from ._openai import OpenAIProvider
from ._registry import available_providers, build_provider, get_provider
from ._retry import OnRateLimited, backoff_delay, stream_with_retries

__all__ = [
    "AnthropicProvider",
    "ChatMessage",
    "Completion",
    "DemoProvider",
    "GeminiProvider",
    "GenerationParams",
    "HTTPProvider",
    "OnRateLimited",
    "OpenAIProvider",
    "Provider",
    "ProviderAuthError",
    "ProviderBadRequest",
    "ProviderConnectionError",
    "ProviderError",
    "ProviderMalformedStream",
    "ProviderOverloaded",
    "ProviderQuotaExceeded",
    "ProviderRateLimited",
    "ProviderStatusError",
    "ProviderStreamError",
    "ProviderTimeout",
    "ProviderTransportError",
    "Role",
    "StreamEvent",
    "TextDelta",
    "Timeouts",
    "UnknownProvider",
    "available_providers",
    "backoff_delay",
    "build_provider",
    "get_provider",
    "prepare_http",
    "stream_with_retries",
]
