"""The retry policy: only before the first token, bounded, jittered, Retry-After as a floor."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from providers import (
    ChatMessage,
    Completion,
    GenerationParams,
    OpenAIProvider,
    Provider,
    ProviderAuthError,
    ProviderBadRequest,
    ProviderConnectionError,
    ProviderError,
    ProviderOverloaded,
    ProviderQuotaExceeded,
    ProviderRateLimited,
    ProviderStreamError,
    ProviderTimeout,
    StreamEvent,
    TextDelta,
    backoff_delay,
    stream_with_retries,
)
from providers._retry import should_retry
from providers.fake.server import FakeProviderServer

from .conftest import HELLO, PARAMS, make_provider

OPENAI_OK = b'data: {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}\n\ndata: [DONE]\n\n'


@pytest.mark.parametrize(
    ("attempt", "rand", "retry_after", "expected"),
    [
        (0, 0.0, None, 0.0),
        (0, 0.999, None, 0.4995),
        (1, 0.5, None, 0.5),
        (2, 1.0, None, 2.0),
        (10, 1.0, None, 8.0),  # capped
        (10, 0.25, None, 2.0),
        (0, 0.9, 3.0, 3.0),  # Retry-After is a floor...
        (5, 0.9, 1.0, 7.2),  # ...not a ceiling
    ],
)
def test_backoff_delay(attempt: int, rand: float, retry_after: float | None, expected: float) -> None:
    assert backoff_delay(attempt, rand=rand, retry_after=retry_after) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("attempt", "rand", "retry_after", "expected"),
    [
        (0, 0.0, None, 1.0),  # a rate limit without a hint waits at least a second...
        (0, 0.999, None, 1.4995),  # ...plus up to half of it
        (1, 0.0, None, 2.0),
        (10, 1.0, None, 12.0),  # capped step (8 s), plus its jitter
        (0, 0.5, 0.25, 0.25),  # a hint wins, even a short one
    ],
)
def test_backoff_delay_of_a_rate_limit(
    attempt: int, rand: float, retry_after: float | None, expected: float
) -> None:
    delay = backoff_delay(attempt, rand=rand, retry_after=retry_after, rate_limited=True)
    assert delay == pytest.approx(expected)


@pytest.mark.parametrize(
    ("error", "attempt", "expected"),
    [
        (ProviderOverloaded("x"), 0, True),
        (ProviderOverloaded("x"), 2, False),  # attempts exhausted (max_retries=2)
        (ProviderRateLimited("x", retry_after=5), 0, True),
        (ProviderRateLimited("x", retry_after=60), 0, False),  # longer than max_retry_after
        (ProviderQuotaExceeded("x"), 0, False),
        (ProviderAuthError("x"), 0, False),
        (ProviderBadRequest("x"), 0, False),
        (ProviderTimeout("x", phase="first_byte"), 0, True),
        (ProviderTimeout("x", phase="total"), 0, False),
        (ProviderStreamError("x"), 0, False),
        (ProviderStreamError("x", retryable=True), 0, True),
    ],
)
def test_should_retry(error: ProviderError, attempt: int, expected: bool) -> None:
    assert should_retry(error, attempt=attempt, max_retries=2, max_retry_after=20) is expected


class Scripted(Provider):
    """Attempt n yields `tokens[n]` texts and then raises `errors[n]` (or completes if None)."""

    name = "scripted"
    default_model = "m"

    def __init__(self, *script: tuple[int, ProviderError | None]) -> None:
        self.script = list(script)
        self.calls = 0

    async def stream(
        self, messages: Sequence[ChatMessage], params: GenerationParams
    ) -> AsyncIterator[StreamEvent]:
        tokens, error = self.script[self.calls]
        self.calls += 1
        for i in range(tokens):
            yield TextDelta(f"t{i}")
        if error is not None:
            raise error
        yield Completion("stop")


class Recorder:
    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


async def run(provider: Provider, **options: Any) -> tuple[list[StreamEvent], ProviderError | None]:
    events: list[StreamEvent] = []
    try:
        async for event in stream_with_retries(provider, HELLO, PARAMS, **options):
            events.append(event)
    except ProviderError as exc:
        return events, exc
    return events, None


async def test_scripted_retries_then_succeeds() -> None:
    sleep = Recorder()
    provider = Scripted((0, ProviderOverloaded("a")), (0, ProviderConnectionError("b")), (2, None))
    events, error = await run(provider, max_retries=2, sleep=sleep, rand=lambda: 1.0)
    assert error is None and provider.calls == 3
    assert events == [TextDelta("t0"), TextDelta("t1"), Completion("stop")]
    assert sleep.waits == [0.5, 1.0]


@pytest.mark.parametrize(
    "error",
    [
        ProviderRateLimited("429 without a hint", upstream_status=429),
        ProviderStreamError("in-band", upstream_type="rate_limit_error", retryable=True),
    ],
)
async def test_rate_limit_without_hint_backs_off_from_a_second(error: ProviderError) -> None:
    # #16 item 14: a gateway's 429s were retried after 0.20 s and 0.26 s and gave up after 0.68 s.
    sleep, paused = Recorder(), Recorder()
    provider = Scripted((0, error), (0, error), (1, None))
    events, failure = await run(
        provider, max_retries=2, sleep=sleep, rand=lambda: 0.0, on_rate_limited=paused
    )
    assert failure is None and provider.calls == 3 and isinstance(events[-1], Completion)
    assert sleep.waits == [1.0, 2.0] and paused.waits == []  # no hint: the pacer is not paused


async def test_scripted_never_retries_after_a_token() -> None:
    provider = Scripted((1, ProviderOverloaded("mid-stream")), (3, None))
    events, error = await run(provider, max_retries=5, sleep=Recorder())
    assert isinstance(error, ProviderOverloaded) and provider.calls == 1 and events == [TextDelta("t0")]


async def test_scripted_gives_up_after_max_retries() -> None:
    provider = Scripted(*[(0, ProviderOverloaded(str(n))) for n in range(5)])
    _, error = await run(provider, max_retries=2, sleep=Recorder())
    assert error is not None and error.detail == "2" and provider.calls == 3


async def test_default_max_retries_comes_from_settings(settings: Any) -> None:
    settings.PROVIDER_MAX_RETRIES = 1
    provider = Scripted(*[(0, ProviderOverloaded(str(n))) for n in range(5)])
    await run(provider, sleep=Recorder())
    assert provider.calls == 2


def _attempts(outcome: str) -> float:
    value = REGISTRY.get_sample_value(
        "chatapp_provider_attempts_total", {"provider": "openai", "outcome": outcome}
    )
    return value or 0.0


async def test_every_attempt_is_counted_by_outcome(fake_server: FakeProviderServer) -> None:
    # #16 item 15: behind a gateway that retries too, an operator sees our share of the multiplication.
    before = {o: _attempts(o) for o in ("ok", "error", "timeout", "rate_limited", "cancelled")}
    fake_server.queue_faults("http:503", "rate_limit:0")
    provider = make_provider("openai", fake_server)
    events, error = await run(provider, max_retries=2, sleep=Recorder())
    stream = stream_with_retries(provider, HELLO, PARAMS, max_retries=0)
    await anext(stream)
    await stream.aclose()  # type: ignore[attr-defined]  # the consumer goes away mid-stream
    await provider.aclose()
    assert error is None and isinstance(events[-1], Completion) and fake_server.stats.calls == 4
    after = {o: _attempts(o) - n for o, n in before.items()}
    assert after == {"ok": 1, "error": 1, "timeout": 0, "rate_limited": 1, "cancelled": 1}


async def test_cancel_during_backoff_propagates() -> None:
    provider = Scripted((0, ProviderOverloaded("a")), (0, None))
    backing_off = asyncio.Event()

    async def long_sleep(seconds: float) -> None:
        backing_off.set()
        await asyncio.sleep(3600)

    task = asyncio.create_task(run(provider, max_retries=1, sleep=long_sleep))
    await asyncio.wait_for(backing_off.wait(), 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert provider.calls == 1


# --- through the real provider classes and the fake server --------------------------------------


@pytest.mark.parametrize("fault", ["http:503", "rate_limit:0", "drop", "error_event"])
@pytest.mark.parametrize("kind", ["openai", "anthropic", "gemini"])
async def test_retry_before_first_token_over_http(
    fake_server: FakeProviderServer, kind: str, fault: str
) -> None:
    fake_server.queue_faults(fault)
    provider = make_provider(kind, fake_server)
    events, error = await run(provider, max_retries=2, sleep=Recorder())
    await provider.aclose()
    assert error is None and fake_server.stats.calls == 2
    assert [type(e) for e in events] == [TextDelta] * 5 + [Completion]  # one stream, no duplicates


@pytest.mark.parametrize(
    ("fault", "error"),
    [("disconnect_after:3", ProviderConnectionError), ("error_after:3", ProviderStreamError)],
)
@pytest.mark.parametrize("kind", ["openai", "anthropic", "gemini"])
async def test_no_retry_after_first_token_over_http(
    fake_server: FakeProviderServer, kind: str, fault: str, error: type[ProviderError]
) -> None:
    fake_server.queue_faults(fault)
    provider = make_provider(kind, fake_server)
    events, raised = await run(provider, max_retries=2, sleep=Recorder())
    await provider.aclose()
    assert isinstance(raised, error) and fake_server.stats.calls == 1
    assert len(events) == 3 and all(isinstance(e, TextDelta) for e in events)


async def test_quota_is_never_retried(fake_server: FakeProviderServer) -> None:
    fake_server.queue_faults("quota")
    sleep = Recorder()
    provider = make_provider("openai", fake_server)
    _, error = await run(provider, max_retries=3, sleep=sleep)
    await provider.aclose()
    assert isinstance(error, ProviderQuotaExceeded) and fake_server.stats.calls == 1 and sleep.waits == []


async def test_retry_after_is_honoured_and_reported(fake_server: FakeProviderServer) -> None:
    fake_server.queue_faults("rate_limit:2", "rate_limit:0.5")
    sleep, paused = Recorder(), Recorder()
    provider = make_provider("anthropic", fake_server)
    events, error = await run(provider, max_retries=2, sleep=sleep, rand=lambda: 0.1, on_rate_limited=paused)
    await provider.aclose()
    assert error is None and isinstance(events[-1], Completion) and fake_server.stats.calls == 3
    assert sleep.waits == [2.0, 0.5] and paused.waits == [2.0, 0.5]


async def test_litellm_hint_is_honoured_and_reported() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) == 1:
            return httpx.Response(429, headers={"llm_provider-retry-after": "3"}, json={"error": {}})
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=OPENAI_OK)

    calls: list[httpx.Request] = []
    provider = OpenAIProvider(
        name="openai", base_url="http://gw.test/v1", model="m", transport=httpx.MockTransport(handler)
    )
    sleep, paused = Recorder(), Recorder()
    events, error = await run(provider, max_retries=2, sleep=sleep, rand=lambda: 0.0, on_rate_limited=paused)
    await provider.aclose()
    assert error is None and len(calls) == 2 and events[-1] == Completion("stop")
    assert sleep.waits == [3.0] and paused.waits == [3.0]


async def test_long_retry_after_is_not_waited_out(fake_server: FakeProviderServer) -> None:
    fake_server.queue_faults("rate_limit:120")
    sleep, paused = Recorder(), Recorder()
    provider = make_provider("openai", fake_server)
    _, error = await run(provider, max_retries=2, sleep=sleep, on_rate_limited=paused)
    await provider.aclose()
    assert isinstance(error, ProviderRateLimited) and error.retry_after == 120
    assert sleep.waits == [] and paused.waits == [120.0] and fake_server.stats.calls == 1
