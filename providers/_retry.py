"""The one retry policy of the provider layer (httpx transports underneath use retries=0).

`stream_with_retries` retries a failed stream only while nothing reached the caller: once a
`TextDelta` was yielded, a retry would duplicate or contradict text the user already saw, so the
error propagates. It retries only errors marked `retryable` (never quota, auth or bad request),
at most `max_retries` times, sleeping a full-jitter exponential backoff that is never shorter than
the upstream's Retry-After. tenacity runs the attempts; the decisions are the pure functions here.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

from django.conf import settings
from tenacity import AsyncRetrying, RetryCallState

from ._base import ChatMessage, Completion, GenerationParams, Provider, StreamEvent, TextDelta
from ._errors import ProviderError, ProviderRateLimited, ProviderStreamError
from ._util import closing_iter

logger = logging.getLogger("providers")

OnRateLimited = Callable[[float], Awaitable[None]]

# Backoff of attempt n is uniform in [0, min(MAX_DELAY_S, BASE_DELAY_S * 2**n)]: 0.5 s then 1 s
# keeps the default two retries within a chat user's patience; the cap bounds long retry chains.
BASE_DELAY_S = 0.5
MAX_DELAY_S = 8.0
# A rate limit with no hint is a per-second or per-minute window: retrying sooner than a second only
# spends attempts (a gateway's 429s were retried after 0.20 s and 0.26 s), so 1 s, 2 s... plus up to half.
RATE_LIMIT_BASE_S = 1.0
# A Retry-After longer than this is not waited out: the caller gets the 429 (and its retry_after)
# at once, which beats holding a request open for minutes.
MAX_RETRY_AFTER_S = 20.0
# In-band error types that mean "rate limited" (Anthropic, OpenAI-compatible servers).
_RATE_LIMIT_TYPES = frozenset({"rate_limit_error", "rate_limit_exceeded"})


def is_rate_limit(exc: ProviderError) -> bool:
    """An upstream 429 or an in-band rate-limit error (quota exhaustion is not one: it never clears)."""
    return isinstance(exc, ProviderRateLimited) or (
        isinstance(exc, ProviderStreamError) and exc.upstream_type in _RATE_LIMIT_TYPES
    )


def backoff_delay(
    attempt: int,
    *,
    rand: float,
    retry_after: float | None = None,
    rate_limited: bool = False,
    base: float = BASE_DELAY_S,
    cap: float = MAX_DELAY_S,
) -> float:
    """Seconds to wait before retry number `attempt` (0-based); `rand` is uniform in [0, 1).

    Full jitter (AWS Architecture Blog, "Exponential Backoff And Jitter") spreads out clients that
    failed together; a Retry-After from the upstream is a floor, never shortened by the jitter. A rate
    limit without a hint waits at least RATE_LIMIT_BASE_S * 2**attempt, plus up to half of it.
    """
    if retry_after is None and rate_limited:
        step = min(cap, RATE_LIMIT_BASE_S * 2**attempt)
        return step * (1 + rand / 2)
    delay = rand * min(cap, base * 2**attempt)
    return max(delay, retry_after) if retry_after is not None else delay


def should_retry(exc: ProviderError, *, attempt: int, max_retries: int, max_retry_after: float) -> bool:
    """Whether a failure before the first token deserves retry number `attempt` (0-based)."""
    if not exc.retryable or attempt >= max_retries:
        return False
    return exc.retry_after is None or exc.retry_after <= max_retry_after


@dataclass(slots=True)
class _Opened:
    """An attempt that got past the point of no return: its events so far, and the rest to read."""

    events: AsyncIterator[StreamEvent]
    head: list[StreamEvent]


async def _open(
    provider: Provider,
    messages: Sequence[ChatMessage],
    params: GenerationParams,
    on_rate_limited: OnRateLimited | None,
) -> _Opened:
    """One attempt, read up to its first `TextDelta` (or its end): the part that may be retried."""
    events = provider.stream(messages, params)
    head: list[StreamEvent] = []
    try:
        async for event in events:
            head.append(event)
            if isinstance(event, TextDelta):
                break
    except BaseException as exc:
        _count_attempt(provider.name, _outcome(exc))
        # Cancelled while waiting for the first token: close the upstream now, then let it go on.
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()
        if isinstance(exc, ProviderRateLimited) and exc.retry_after is not None and on_rate_limited:
            await on_rate_limited(exc.retry_after)
        raise
    return _Opened(events, head)


def _count_attempt(provider: str, outcome: str) -> None:
    # Imported here: ops.metrics reads the settings on import, and `import providers` must not (the
    # fake server, `python -m providers.fake`, runs without Django settings).
    from ops import metrics

    metrics.provider_attempt(provider, outcome)


def _outcome(exc: BaseException) -> str:
    if isinstance(exc, ProviderError):
        return exc.code
    return "cancelled" if isinstance(exc, asyncio.CancelledError | GeneratorExit) else "error"


def _retrying(
    provider: Provider,
    *,
    max_retries: int,
    max_retry_after: float,
    sleep: Callable[[float], Awaitable[None]],
    rand: Callable[[], float],
) -> AsyncRetrying:
    def failure(state: RetryCallState) -> ProviderError | None:
        exc = state.outcome.exception() if state.outcome is not None else None
        return exc if isinstance(exc, ProviderError) else None

    def retry(state: RetryCallState) -> bool:
        exc = failure(state)
        attempt = state.attempt_number - 1
        return exc is not None and should_retry(
            exc, attempt=attempt, max_retries=max_retries, max_retry_after=max_retry_after
        )

    def wait(state: RetryCallState) -> float:
        exc = failure(state)
        assert exc is not None  # only failures that `retry` accepted wait
        rate_limited = is_rate_limit(exc)
        return backoff_delay(
            state.attempt_number - 1, rand=rand(), retry_after=exc.retry_after, rate_limited=rate_limited
        )

    def before_sleep(state: RetryCallState) -> None:
        exc = failure(state)
        delay = state.next_action.sleep if state.next_action is not None else 0.0
        code, detail = (exc.code, exc.detail) if exc is not None else ("?", "?")
        logger.warning(
            "provider %s failed before the first token (%s: %s); retry %d in %.2fs",
            provider.name, code, detail, state.attempt_number, delay,
        )  # fmt: skip

    return AsyncRetrying(retry=retry, wait=wait, sleep=sleep, before_sleep=before_sleep, reraise=True)


async def stream_with_retries(
    provider: Provider,
    messages: Sequence[ChatMessage],
    params: GenerationParams,
    *,
    max_retries: int | None = None,
    on_rate_limited: OnRateLimited | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    rand: Callable[[], float] = random.random,
    max_retry_after: float = MAX_RETRY_AFTER_S,
) -> AsyncIterator[StreamEvent]:
    """`provider.stream(...)`, retried before the first token (see the module docstring).

    `max_retries` defaults to `settings.PROVIDER_MAX_RETRIES`. `on_rate_limited(seconds)` is awaited
    for every upstream 429 that carries a Retry-After (the pacer pauses the provider's bucket), even
    when no retry follows. `sleep` and `rand` are injectable so tests record waits instead of waiting.
    """
    retries = settings.PROVIDER_MAX_RETRIES if max_retries is None else max_retries
    retrying = _retrying(
        provider, max_retries=retries, max_retry_after=max_retry_after, sleep=sleep, rand=rand
    )
    try:
        opened: _Opened = await retrying(_open, provider, messages, params, on_rate_limited)
    except ProviderError as exc:
        _log_failure(provider, exc)
        raise
    outcome = "error"  # a bug in the provider's code
    try:
        async with closing_iter(opened.events) as events:
            for event in opened.head:
                outcome = "ok" if isinstance(event, Completion) else outcome
                yield event
            async for event in events:
                outcome = "ok" if isinstance(event, Completion) else outcome  # even if the reader stops here
                yield event
    except BaseException as exc:
        outcome = outcome if outcome == "ok" else _outcome(exc)
        if isinstance(exc, ProviderError):
            _log_failure(provider, exc)
        raise
    finally:
        _count_attempt(provider.name, outcome)


def _log_failure(provider: Provider, exc: ProviderError) -> None:
    # The one place every provider failure passes: its detail (URLs, upstream text) is logged here,
    # since users only ever see its code and public message.
    logger.warning("provider %s failed (%s): %s", provider.name, exc.code, exc.detail)
