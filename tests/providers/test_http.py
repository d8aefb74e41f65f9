"""The HTTP machinery shared by both vendors: error mapping, deadlines, cancellation, client lifecycle."""

from __future__ import annotations

import asyncio
import email.utils
import json
from typing import Any

import httpx
import pytest

from providers import (
    HTTPProvider,
    ProviderAuthError,
    ProviderBadRequest,
    ProviderConnectionError,
    ProviderError,
    ProviderMalformedStream,
    ProviderOverloaded,
    ProviderQuotaExceeded,
    ProviderRateLimited,
    ProviderStreamError,
    ProviderTimeout,
    TextDelta,
    Timeouts,
)
from providers._http import extra_params, parse_retry_after
from providers.fake.server import FakeProviderServer
from tests.deadlines import provider_timeouts

from .conftest import HELLO, PARAMS, collect, make_provider


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"retry-after": "3"}, 3.0),
        ({"retry-after": "0.5"}, 0.5),
        ({"retry-after": "-4"}, 0.0),
        ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),
        ({"retry-after-ms": "junk", "retry-after": "2"}, 2.0),
        ({"retry-after": email.utils.formatdate(1_000_030, usegmt=True)}, 30.0),
        ({"retry-after": email.utils.formatdate(999_000, usegmt=True)}, 0.0),
        ({"retry-after": "soon"}, None),
        # Behind LiteLLM: the provider's hints arrive prefixed (#16 item 14).
        ({"llm_provider-retry-after": "4"}, 4.0),
        ({"llm_provider-retry-after-ms": "750", "llm_provider-retry-after": "4"}, 0.75),
        ({"retry-after": "2", "llm_provider-retry-after": "4"}, 2.0),
        ({"retry-after": "soon", "llm_provider-retry-after": "4"}, 4.0),
        ({"retry-after-ms": "soon"}, None),
    ],
)
def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    assert parse_retry_after(headers, now=1_000_000) == expected


@pytest.mark.parametrize(
    ("extra", "fields"),
    [
        ((), {}),
        ((("top_p", "0.9"),), {"top_p": 0.9}),
        ((("stop", '["\\n"]'), ("user", "bob")), {"stop": ["\n"], "user": "bob"}),
    ],
)
def test_extra_params_decode_json_values(extra: tuple[tuple[str, str], ...], fields: dict[str, Any]) -> None:
    assert extra_params(extra) == fields


def test_timeouts_from_settings_keeps_defaults_for_missing_keys() -> None:
    assert Timeouts.from_settings({"connect": 1, "idle": 2.5, "unknown": 9}) == Timeouts(
        1.0, 60.0, 2.5, 600.0
    )


def _mock_provider(kind: str, handler: Any) -> HTTPProvider:
    from providers import AnthropicProvider, OpenAIProvider

    cls = OpenAIProvider if kind == "openai" else AnthropicProvider
    return cls(
        name=kind, base_url="http://upstream.test/v1", model="m", transport=httpx.MockTransport(handler)
    )


@pytest.mark.parametrize(
    ("kind", "status", "headers", "body", "error", "retry_after"),
    [
        (
            "openai",
            429,
            {},
            {"error": {"type": "insufficient_quota", "code": "insufficient_quota"}},
            ProviderQuotaExceeded,
            None,
        ),
        (
            "openai",
            429,
            {},
            {"error": {"type": "requests", "code": "insufficient_quota"}},
            ProviderQuotaExceeded,
            None,
        ),
        (
            "openai",
            429,
            {"retry-after": "3"},
            {"error": {"code": "rate_limit_exceeded"}},
            ProviderRateLimited,
            3.0,
        ),
        ("openai", 429, {"retry-after-ms": "250"}, {}, ProviderRateLimited, 0.25),
        ("openai", 429, {"llm_provider-retry-after": "6"}, {}, ProviderRateLimited, 6.0),
        ("openai", 500, {}, {"error": {"type": "server_error"}}, ProviderOverloaded, None),
        ("openai", 503, {"retry-after": "1"}, None, ProviderOverloaded, 1.0),
        ("openai", 401, {}, {"error": {"code": "invalid_api_key"}}, ProviderAuthError, None),
        ("openai", 404, {}, {"error": {"code": "model_not_found"}}, ProviderBadRequest, None),
        ("openai", 408, {}, None, ProviderTimeout, None),
        (
            "anthropic",
            529,
            {},
            {"type": "error", "error": {"type": "overloaded_error"}},
            ProviderOverloaded,
            None,
        ),
        (
            "anthropic",
            429,
            {"retry-after": "7"},
            {"type": "error", "error": {"type": "rate_limit_error"}},
            ProviderRateLimited,
            7.0,
        ),
        (
            "anthropic",
            403,
            {},
            {"type": "error", "error": {"type": "permission_error"}},
            ProviderAuthError,
            None,
        ),
        (
            "anthropic",
            400,
            {},
            {"type": "error", "error": {"type": "invalid_request_error"}},
            ProviderBadRequest,
            None,
        ),
        (
            "anthropic",
            413,
            {},
            {"type": "error", "error": {"type": "request_too_large"}},
            ProviderBadRequest,
            None,
        ),
        ("anthropic", 502, {}, "<html>bad gateway</html>", ProviderOverloaded, None),
    ],
)
async def test_status_mapping(
    kind: str,
    status: int,
    headers: dict[str, str],
    body: Any,
    error: type[ProviderError],
    retry_after: float | None,
) -> None:
    content = (
        body.encode() if isinstance(body, str) else json.dumps(body).encode() if body is not None else b""
    )
    provider = _mock_provider(kind, lambda request: httpx.Response(status, headers=headers, content=content))
    texts, completion, exc = await collect(provider)
    await provider.aclose()
    assert type(exc) is error and not texts and completion is None
    assert (exc.retry_after, exc.upstream_status, exc.provider) == (retry_after, status, kind)
    assert exc.__cause__ is None and str(status) in exc.detail
    if isinstance(body, str):
        assert "bad gateway" in exc.detail


@pytest.mark.parametrize(
    ("raised", "error", "retryable"),
    [
        (httpx.ConnectError("refused"), ProviderConnectionError, True),
        (httpx.ReadError("reset"), ProviderConnectionError, True),
        (httpx.RemoteProtocolError("closed"), ProviderConnectionError, True),
        (httpx.ConnectTimeout("slow"), ProviderTimeout, True),
        (httpx.PoolTimeout("busy"), ProviderTimeout, True),
        (httpx.UnsupportedProtocol("ftp"), ProviderConnectionError, False),
    ],
)
async def test_transport_errors_are_translated_with_their_cause(
    raised: httpx.HTTPError, error: type[ProviderError], retryable: bool
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise raised

    provider = _mock_provider("openai", handler)
    _, _, exc = await collect(provider)
    await provider.aclose()
    assert type(exc) is error and exc.retryable is retryable and exc.__cause__ is raised
    assert "OPENAI_BASE_URL" in exc.detail or isinstance(exc, ProviderTimeout)


async def test_client_is_lazy_has_no_transport_retries_and_closes_twice() -> None:
    provider = make_provider("openai", FakeProviderServer())
    assert provider._client is None
    client = provider._get_client()
    assert provider._get_client() is client
    pool = client._transport._pool  # type: ignore[attr-defined]
    assert pool._retries == 0 and pool._max_connections == 512
    await provider.aclose()
    await provider.aclose()
    assert client.is_closed and provider._client is None


FAULTS = [
    ("http:500", ProviderOverloaded, 0),
    ("http:503", ProviderOverloaded, 0),
    ("http:529", ProviderOverloaded, 0),
    ("rate_limit:2", ProviderRateLimited, 0),
    ("quota", ProviderQuotaExceeded, 0),
    ("http:401", ProviderAuthError, 0),
    ("http:400", ProviderBadRequest, 0),
    ("drop", ProviderConnectionError, 0),
    ("hang", ProviderTimeout, 0),
    ("stall", ProviderTimeout, 0),
    ("stall_after:2", ProviderTimeout, 2),
    ("disconnect_after:3", ProviderConnectionError, 3),
    ("malformed", ProviderMalformedStream, 0),
    ("malformed_after:2", ProviderMalformedStream, 2),
    ("error_event", ProviderStreamError, 0),
    ("error_after:2", ProviderStreamError, 2),
    ("truncate_after:2", ProviderMalformedStream, 2),
]


@pytest.mark.parametrize(("fault", "error", "tokens"), FAULTS)
async def test_fault_maps_to_typed_error(
    http_provider: HTTPProvider,
    fake_server: FakeProviderServer,
    fault: str,
    error: type[ProviderError],
    tokens: int,
) -> None:
    fake_server.queue_faults(fault)
    provider = http_provider
    if error is ProviderTimeout:
        provider = make_provider(http_provider.name, fake_server, provider_timeouts(expects_timeout=True))
    texts, completion, exc = await collect(provider)
    await provider.aclose()
    assert type(exc) is error, exc
    assert len(texts) == tokens and completion is None
    assert fake_server.stats.calls == 1
    if fault == "rate_limit:2":
        assert exc.retry_after == 2.0
    if fault == "error_event":
        assert exc.retryable and isinstance(exc, ProviderStreamError) and exc.upstream_type
    if isinstance(exc, ProviderTimeout):
        assert exc.phase == ("idle" if tokens else "first_byte")
        # The stalled response was abandoned: the server saw the client go.
        await fake_server.wait_until(lambda s: s.client_disconnects == 1, within=0.5)


async def test_total_deadline_ends_a_slow_stream(fake_server: FakeProviderServer) -> None:
    fake_server.configure(tps=40, tokens=100)
    provider = make_provider("openai", fake_server, Timeouts(connect=1, first_byte=1, idle=1, total=0.2))
    texts, _, exc = await collect(provider)
    await provider.aclose()
    assert isinstance(exc, ProviderTimeout) and exc.phase == "total" and not exc.retryable
    assert 0 < len(texts) < 100


async def test_a_slow_consumer_is_not_an_idle_upstream(fake_server: FakeProviderServer) -> None:
    # Deadlines bound reads only: time the consumer spends between events must not count.
    provider = make_provider("anthropic", fake_server, Timeouts(connect=1, first_byte=1, idle=0.02, total=5))
    events = []
    async for event in provider.stream(HELLO, PARAMS):
        events.append(event)
        await asyncio.sleep(0.03)  # the scenario itself: a consumer slower than the idle timeout
    await provider.aclose()
    assert len(events) == 6


async def test_cancelling_the_consumer_closes_the_upstream_at_once(
    http_provider: HTTPProvider, fake_server: FakeProviderServer
) -> None:
    fake_server.configure(tps=20, tokens=200)  # a 10-second reply
    first_token = asyncio.Event()

    async def consume() -> None:
        async for event in http_provider.stream(HELLO, PARAMS):
            if isinstance(event, TextDelta):
                first_token.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first_token.wait(), 1)
    assert fake_server.stats.concurrent == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await fake_server.wait_until(lambda s: s.client_disconnects == 1 and s.concurrent == 0, within=0.1)
    assert fake_server.stats.completed == 0


async def test_closing_the_stream_early_closes_the_upstream(
    http_provider: HTTPProvider, fake_server: FakeProviderServer
) -> None:
    fake_server.configure(tps=20, tokens=200)
    stream = http_provider.stream(HELLO, PARAMS)
    assert isinstance(await anext(stream), TextDelta)
    await stream.aclose()  # type: ignore[attr-defined]
    await fake_server.wait_until(lambda s: s.client_disconnects == 1, within=0.1)


async def test_connection_refused_names_the_setting() -> None:
    server = FakeProviderServer()
    await server.start()
    await server.stop()  # a port that nobody listens on any more
    provider = make_provider("anthropic", server)
    _, _, exc = await collect(provider)
    await provider.aclose()
    assert isinstance(exc, ProviderConnectionError) and "ANTHROPIC_BASE_URL" in exc.detail
