"""Fixtures for the provider tests: an in-process fake provider server and providers pointed at it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import pytest

from providers import (
    AnthropicProvider,
    ChatMessage,
    Completion,
    GeminiProvider,
    GenerationParams,
    HTTPProvider,
    OpenAIProvider,
    Provider,
    ProviderError,
    StreamEvent,
    TextDelta,
    Timeouts,
)
from providers.fake.server import FakeProviderServer
from tests.deadlines import provider_timeouts

TEST_TIMEOUTS = provider_timeouts(expects_timeout=False)
HELLO = [ChatMessage("system", "Be brief."), ChatMessage("user", "Say hello")]
PARAMS = GenerationParams(model="fake-model", max_tokens=100)


@pytest.fixture
async def fake_server() -> AsyncIterator[FakeProviderServer]:
    """A fake provider server on a free port: instant 5-token replies unless a test changes it."""
    async with FakeProviderServer(ttft_ms=0, tps=0, tokens=5) as server:
        yield server


def make_provider(kind: str, server: FakeProviderServer, timeouts: Timeouts = TEST_TIMEOUTS) -> HTTPProvider:
    """An OpenAI, Anthropic or Gemini provider talking to `server`."""
    if kind == "gemini":
        return GeminiProvider(
            name="gemini", base_url=server.base_url, model="fake-model", api_key="g-test", timeouts=timeouts
        )
    if kind == "openai":
        return OpenAIProvider(
            name="openai",
            base_url=server.openai_base_url,
            model="fake-model",
            api_key="sk-test",
            timeouts=timeouts,
        )
    return AnthropicProvider(
        name="anthropic",
        base_url=server.base_url,
        model="fake-model",
        api_key="sk-ant-test",
        timeouts=timeouts,
    )


@pytest.fixture(params=["openai", "anthropic", "gemini"])
async def http_provider(
    request: pytest.FixtureRequest, fake_server: FakeProviderServer
) -> AsyncIterator[HTTPProvider]:
    """Each HTTP provider class in turn, against the fake server."""
    provider = make_provider(request.param, fake_server)
    yield provider
    await provider.aclose()


async def collect(
    provider: Provider, messages: Sequence[ChatMessage] = HELLO, params: GenerationParams = PARAMS
) -> tuple[list[str], Completion | None, ProviderError | None]:
    """(texts, completion, error) of one stream; the error is returned, not raised."""
    texts: list[str] = []
    completion: Completion | None = None
    try:
        async for event in provider.stream(messages, params):
            if isinstance(event, TextDelta):
                texts.append(event.text)
            else:
                completion = event
    except ProviderError as exc:
        return texts, completion, exc
    return texts, completion, None


async def drain(events: AsyncIterator[StreamEvent]) -> list[StreamEvent]:
    return [event async for event in events]
