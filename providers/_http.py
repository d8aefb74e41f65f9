"""Shared machinery of the HTTP providers: client lifecycle, deadlines, SSE reading, error mapping.

A subclass says how to build the request (`_build_request`), how to read its stream
(`_new_parser`, a pure `StreamParser`) and what its error bodies mean (`_error_details`).

Timeouts (`Timeouts`, from `settings.PROVIDER_TIMEOUTS`): `connect` is httpx's; `first_byte`
(request sent -> headers and first chunk), `idle` (longest wait for the next chunk) and `total`
(the whole stream) are `asyncio.timeout_at` deadlines around each read, because httpx's read
timeout restarts at every read. No deadline is ever held across a `yield`: a timeout context
cancels the task that entered it, which while suspended at a yield would be the consumer.
"""

from __future__ import annotations

import abc
import asyncio
import email.utils
import functools
import importlib
import json
import ssl
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from ._base import ChatMessage, Completion, GenerationParams, Provider, StreamEvent
from ._errors import (
    ProviderAuthError,
    ProviderBadRequest,
    ProviderConnectionError,
    ProviderError,
    ProviderMalformedStream,
    ProviderOverloaded,
    ProviderQuotaExceeded,
    ProviderRateLimited,
    ProviderTimeout,
    TimeoutPhase,
)
from ._sse import SSEDecoder, SSEEvent
from ._util import closing_iter

# One HTTP/1.1 connection per concurrent stream: 512 covers the benchmarks' few hundred concurrent
# streams with headroom while bounding sockets per process. Keep-alive connections are cheap to
# keep but each holds a file descriptor, hence fewer. Override per provider with "max_connections".
DEFAULT_MAX_CONNECTIONS = 512
DEFAULT_MAX_KEEPALIVE = 64
# Error bodies are read only to explain the failure: 64 KiB is plenty and bounds a hostile upstream.
MAX_ERROR_BODY = 64 * 1024


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The TLS settings every provider client of this process shares: httpx's defaults (certifi's CAs,
    or SSL_CERT_FILE / SSL_CERT_DIR). Built once: each build reads the CA bundle, 20-40 ms of CPU, which
    a client made per connection and event loop spent on its first call (a leader's way to the provider)."""
    return httpx.create_ssl_context()


def prepare() -> None:
    """Make the HTTP stack ready before the first call: the TLS context, and the modules httpx and
    httpcore import only once a client is built or first used (a server process's start-up calls this,
    chatapp/warmup.py). About 30-60 ms that the first send after a (re)start no longer waits."""
    tls_context()
    for module in ("httpcore", "h11", "anyio._backends._asyncio"):  # anyio loads its backend lazily
        importlib.import_module(module)


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds; see the module docstring for what each one bounds."""

    connect: float = 10.0
    first_byte: float = 60.0
    idle: float = 60.0
    total: float = 600.0

    @classmethod
    def from_settings(cls, values: Mapping[str, float]) -> Timeouts:
        """From `settings.PROVIDER_TIMEOUTS` (missing keys keep their defaults)."""
        known = {k: float(v) for k, v in values.items() if k in cls.__dataclass_fields__}
        return cls(**known)


class StreamParser(Protocol):
    """Turns one vendor's SSE events into `StreamEvent`s (pure and synchronous, so table-testable)."""

    done: bool

    def feed(self, event: SSEEvent) -> list[StreamEvent]:
        """Events produced by one SSE event; raises `ProviderError` for in-band errors."""
        ...

    def finish(self) -> Completion:
        """The final `Completion`; raises `ProviderMalformedStream` if the stream was cut short."""
        ...


# Rate-limit hints, most precise first: OpenAI's milliseconds, the standard header, then the same two
# as LiteLLM forwards them from the provider behind it (its own answer may carry neither).
_RETRY_AFTER_HEADERS = (
    ("retry-after-ms", 0.001),
    ("retry-after", 1.0),
    ("llm_provider-retry-after-ms", 0.001),
    ("llm_provider-retry-after", 1.0),
)


def parse_retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds to wait from the first usable rate-limit hint (see `_RETRY_AFTER_HEADERS`); else None.

    Seconds may be an HTTP date (`retry-after`); a hint that does not parse is skipped."""
    for name, unit in _RETRY_AFTER_HEADERS:
        value = (headers.get(name) or "").strip()
        seconds = _hint_seconds(value, unit, time.time() if now is None else now) if value else None
        if seconds is not None:
            return seconds
    return None


def _hint_seconds(value: str, unit: float, now: float) -> float | None:
    try:
        return max(0.0, float(value) * unit)
    except ValueError:
        pass
    if unit != 1.0:
        return None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


def extra_params(extra: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """`GenerationParams.extra` as JSON fields: values that parse as JSON are sent decoded ("0.5" -> 0.5)."""
    fields: dict[str, Any] = {}
    for key, value in extra:
        try:
            fields[key] = json.loads(value)
        except ValueError:
            fields[key] = value
    return fields


def load_event_json(provider: str, data: str) -> dict[str, Any]:
    """Decode one SSE event's data as a JSON object, or raise `ProviderMalformedStream`."""
    try:
        obj = json.loads(data)
    except ValueError as exc:
        raise ProviderMalformedStream(
            f"{provider} sent an event that is not valid JSON: {data[:200]!r}", provider=provider
        ) from exc
    if not isinstance(obj, dict):
        raise ProviderMalformedStream(
            f"{provider} sent a non-object event: {data[:200]!r}", provider=provider
        )
    return obj


class _Deadlines:
    """Absolute loop times for the first-byte, idle and total budgets of one stream."""

    def __init__(self, timeouts: Timeouts, now: float) -> None:
        self.timeouts = timeouts
        self.total_at = now + timeouts.total
        self.first_byte_at = now + timeouts.first_byte

    def first_byte(self) -> tuple[float, TimeoutPhase]:
        return (
            (self.first_byte_at, "first_byte")
            if self.first_byte_at < self.total_at
            else (self.total_at, "total")
        )

    def idle(self, now: float) -> tuple[float, TimeoutPhase]:
        idle_at = now + self.timeouts.idle
        return (idle_at, "idle") if idle_at < self.total_at else (self.total_at, "total")


class HTTPProvider(Provider):
    """A provider that streams SSE over HTTP with one lazily created `httpx.AsyncClient`."""

    # Prefix of the environment variables that configure this kind (for error messages).
    env_prefix = "PROVIDER"

    def __init__(
        self,
        *,
        name: str,
        base_url: str,
        model: str,
        api_key: str = "",
        timeouts: Timeouts | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
    ) -> None:
        self.name = name
        self.default_model = model
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeouts = timeouts or Timeouts()
        self._transport = transport
        self._max_connections = max_connections
        self._client: httpx.AsyncClient | None = None

    @classmethod
    def from_settings(
        cls,
        name: str,
        config: Mapping[str, Any],
        *,
        timeouts: Timeouts | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> HTTPProvider:
        """Build from one `settings.PROVIDERS` entry (`base_url`, `model`, `api_key`, `max_connections`)."""
        return cls(
            name=name,
            base_url=str(config["base_url"]),
            model=str(config["model"]),
            api_key=str(config.get("api_key") or ""),
            timeouts=timeouts,
            transport=transport,
            max_connections=int(config.get("max_connections", DEFAULT_MAX_CONNECTIONS)),
        )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} {self.base_url}>"

    def _get_client(self) -> httpx.AsyncClient:
        # Created on first use, inside the running loop that will own its connections.
        if self._client is None:
            limits = httpx.Limits(
                max_connections=self._max_connections,
                max_keepalive_connections=min(DEFAULT_MAX_KEEPALIVE, self._max_connections),
            )
            t = self.timeouts
            self._client = httpx.AsyncClient(
                base_url=self.base_url,
                # retries=0: the one retry policy lives in providers._retry, not underneath it.
                transport=self._transport
                or httpx.AsyncHTTPTransport(verify=tls_context(), retries=0, limits=limits),
                # read=None: reads are bounded by our first_byte/idle/total deadlines instead. Waiting
                # for a free pooled connection counts toward the first byte.
                timeout=httpx.Timeout(connect=t.connect, read=None, write=t.connect, pool=t.first_byte),
                headers={"user-agent": "chatapp-providers"},
            )
        return self._client

    async def aclose(self) -> None:
        """Close the HTTP client and its connections. Safe to call twice."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    @abc.abstractmethod
    def _build_request(
        self, messages: Sequence[ChatMessage], params: GenerationParams
    ) -> tuple[str, dict[str, str], dict[str, Any]]:
        """(path relative to base_url, headers, JSON body) of the streaming request."""

    @abc.abstractmethod
    def _new_parser(self) -> StreamParser:
        """A fresh parser for one stream."""

    @abc.abstractmethod
    def _error_details(self, body: Any) -> tuple[str | None, str]:
        """(vendor error type or code, message) from a decoded error body (any JSON, maybe None)."""

    async def stream(
        self, messages: Sequence[ChatMessage], params: GenerationParams
    ) -> AsyncIterator[StreamEvent]:
        """POST the request and yield its events (see `Provider.stream`)."""
        path, headers, body = self._build_request(messages, params)
        client = self._get_client()
        deadlines = _Deadlines(self.timeouts, asyncio.get_running_loop().time())
        response = await self._send(
            client, client.build_request("POST", path, headers=headers, json=body), deadlines
        )
        try:
            parser = self._new_parser()
            async with closing_iter(self._sse_events(response, deadlines)) as events:
                async for event in events:
                    for out in parser.feed(event):
                        yield out
                    if parser.done:
                        break
            yield parser.finish()
        finally:
            # Runs on success, on errors, on the consumer's aclose() and on task cancellation (the
            # CancelledError is not caught anywhere here, so it propagates after this cleanup).
            # Closing a response whose body was not read to the end closes its connection, so the
            # upstream sees the disconnect at once and stops generating (and billing) tokens.
            await response.aclose()

    async def _send(
        self, client: httpx.AsyncClient, request: httpx.Request, deadlines: _Deadlines
    ) -> httpx.Response:
        """Send and wait for the response headers; error statuses become `ProviderError`s."""
        deadline, phase = deadlines.first_byte()
        try:
            async with asyncio.timeout_at(deadline):
                response = await client.send(request, stream=True)
        except TimeoutError as exc:
            raise self._timeout(phase) from exc
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from exc
        if response.is_success:
            return response
        try:
            raw = await self._read_error_body(response, deadline)
        finally:
            await response.aclose()
        raise self._status_error(response.status_code, response.headers, raw)

    async def _read_error_body(self, response: httpx.Response, deadline: float) -> bytes:
        """Up to MAX_ERROR_BODY bytes of an error response; b"" if it cannot be read in time."""
        body = bytearray()
        try:
            async with asyncio.timeout_at(deadline), closing_iter(response.aiter_bytes()) as chunks:
                async for chunk in chunks:
                    body += chunk
                    if len(body) >= MAX_ERROR_BODY:
                        break
        except (TimeoutError, httpx.HTTPError):
            pass  # The status alone still says what happened; the body only adds detail.
        return bytes(body[:MAX_ERROR_BODY])

    async def _sse_events(self, response: httpx.Response, deadlines: _Deadlines) -> AsyncIterator[SSEEvent]:
        """The response's SSE events; each read is bounded by the first-byte, idle or total deadline."""
        loop = asyncio.get_running_loop()
        decoder = SSEDecoder()
        deadline, phase = deadlines.first_byte()
        async with closing_iter(response.aiter_bytes()) as chunks:
            while True:
                try:
                    async with asyncio.timeout_at(deadline):
                        chunk = await anext(chunks, None)
                    events = decoder.feed(chunk) if chunk is not None else decoder.flush()
                except TimeoutError as exc:
                    raise self._timeout(phase) from exc
                except httpx.HTTPError as exc:
                    raise self._transport_error(exc) from exc
                except UnicodeDecodeError as exc:
                    raise ProviderMalformedStream(
                        f"{self.name} sent invalid UTF-8.", provider=self.name
                    ) from exc
                for event in events:  # yielded outside the deadline (see the module docstring)
                    yield event
                if chunk is None:
                    return
                deadline, phase = deadlines.idle(loop.time())

    def _timeout(self, phase: TimeoutPhase) -> ProviderTimeout:
        seconds = getattr(self.timeouts, phase)
        return ProviderTimeout(
            f"{self.name} timed out ({phase}: nothing within {seconds:g}s). If the model is just slow, "
            f"raise PROVIDER_{phase.upper()}_TIMEOUT_S.",
            phase=phase,
            provider=self.name,
        )

    def _transport_error(self, exc: httpx.HTTPError) -> ProviderError:
        if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout):
            return self._timeout("connect")
        if isinstance(exc, httpx.TimeoutException):
            return self._timeout("idle")
        if isinstance(exc, httpx.DecodingError):
            return ProviderMalformedStream(f"{self.name} sent an undecodable body: {exc}", provider=self.name)
        if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
            return ProviderConnectionError(
                f"{self.name} has an unusable base URL {self.base_url!r} ({exc}). Check {self.env_prefix}_BASE_URL.",
                provider=self.name,
                retryable=False,
            )
        return ProviderConnectionError(
            f"Connection to {self.name} at {self.base_url} failed: {exc or type(exc).__name__}. "
            f"Check that the server is up and {self.env_prefix}_BASE_URL is right.",
            provider=self.name,
        )

    def _status_error(self, status: int, headers: Mapping[str, str], raw: bytes) -> ProviderError:
        """Map an upstream error status (and its JSON body, if any) to our exception tree."""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        kind, detail = self._error_details(body)
        detail = detail or raw[:200].decode("utf-8", "replace") or httpx.codes.get_reason_phrase(status)
        message = f"{self.name} answered HTTP {status}: {detail}"
        common: dict[str, Any] = {"provider": self.name, "upstream_status": status}
        if status == 429 and kind == "insufficient_quota":
            return ProviderQuotaExceeded(f"{message}. Check the account's plan and billing.", **common)
        if status == 429:
            return ProviderRateLimited(message, retry_after=parse_retry_after(headers), **common)
        if status in (401, 403):
            return ProviderAuthError(f"{message}. Check {self.env_prefix}_API_KEY.", **common)
        if status == 408:
            return ProviderTimeout(message, phase="first_byte", **common)
        if status >= 500 or kind == "overloaded_error":
            return ProviderOverloaded(message, retry_after=parse_retry_after(headers), **common)
        return ProviderBadRequest(message, **common)
