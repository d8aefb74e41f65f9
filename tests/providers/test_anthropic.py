"""Anthropic provider: the event parser (table), message shaping and the request it sends."""

from __future__ import annotations

import json
from typing import Any

import pytest

from providers import (
    ChatMessage,
    Completion,
    GenerationParams,
    ProviderMalformedStream,
    ProviderStreamError,
    TextDelta,
)
from providers._anthropic import AnthropicStreamParser, anthropic_messages
from providers._sse import SSEEvent
from providers.fake.server import FakeProviderServer

from .conftest import HELLO, collect, make_provider


def ev(kind: str, **data: Any) -> SSEEvent:
    return SSEEvent(kind, json.dumps({"type": kind, **data}))


START = ev("message_start", message={"usage": {"input_tokens": 12, "output_tokens": 1}})
BLOCK = ev("content_block_start", index=0, content_block={"type": "text", "text": ""})
PING = ev("ping")
HI = ev("content_block_delta", index=0, delta={"type": "text_delta", "text": "Hi"})
THINK = ev("content_block_delta", index=0, delta={"type": "thinking_delta", "thinking": "hmm"})
BLOCK_STOP = ev("content_block_stop", index=0)
END = ev("message_delta", delta={"stop_reason": "end_turn"}, usage={"output_tokens": 2})
MAXED = ev("message_delta", delta={"stop_reason": "max_tokens"}, usage={"output_tokens": 2})
STOP = ev("message_stop")
FUTURE = ev("some_future_event", whatever=1)
# LiteLLM's /v1/messages: 0 input tokens at the start, the cumulative count in message_delta.
START_ZERO = ev("message_start", message={"usage": {"input_tokens": 0, "output_tokens": 0}})
END_WITH_INPUT = ev(
    "message_delta", delta={"stop_reason": "end_turn"}, usage={"input_tokens": 12, "output_tokens": 2}
)
END_NULL_INPUT = ev(
    "message_delta", delta={"stop_reason": "end_turn"}, usage={"input_tokens": None, "output_tokens": 2}
)


@pytest.mark.parametrize(
    ("events", "texts", "completion"),
    [
        ((START, BLOCK, PING, HI, HI, BLOCK_STOP, END, STOP), ["Hi", "Hi"], Completion("stop", 12, 2)),
        ((START, HI, MAXED, STOP), ["Hi"], Completion("length", 12, 2)),
        ((START, THINK, HI, FUTURE, END, STOP), ["Hi"], Completion("stop", 12, 2)),
        ((START, HI, END), ["Hi"], Completion("stop", 12, 2)),  # stop_reason but no message_stop: complete
        ((HI, STOP), ["Hi"], Completion("stop")),
        ((START_ZERO, HI, END_WITH_INPUT, STOP), ["Hi"], Completion("stop", 12, 2)),
        ((START, HI, END_NULL_INPUT, STOP), ["Hi"], Completion("stop", 12, 2)),  # null keeps the start's
    ],
)
def test_parser_table(events: tuple[SSEEvent, ...], texts: list[str], completion: Completion) -> None:
    parser = AnthropicStreamParser("anthropic")
    out = [item for event in events for item in parser.feed(event)]
    assert out == [TextDelta(t) for t in texts]
    assert parser.finish() == completion


@pytest.mark.parametrize(
    ("events", "error", "retryable"),
    [
        ((START, HI), ProviderMalformedStream, True),
        (
            (SSEEvent("content_block_delta", '{"type": "content_block_delta", "delta":'),),
            ProviderMalformedStream,
            True,
        ),
        (
            (START, ev("error", error={"type": "overloaded_error", "message": "Overloaded"})),
            ProviderStreamError,
            True,
        ),
        (
            (START, ev("error", error={"type": "invalid_request_error", "message": "no"})),
            ProviderStreamError,
            False,
        ),
    ],
)
def test_parser_errors(
    events: tuple[SSEEvent, ...], error: type[ProviderStreamError], retryable: bool
) -> None:
    parser = AnthropicStreamParser("anthropic")
    with pytest.raises(error) as caught:
        for event in events:
            parser.feed(event)
        parser.finish()
    assert caught.value.retryable is retryable


@pytest.mark.parametrize(
    ("messages", "system", "turns"),
    [
        ([ChatMessage("user", "hi")], "", [{"role": "user", "content": "hi"}]),
        (
            [ChatMessage("system", "a"), ChatMessage("user", "hi"), ChatMessage("system", "b")],
            "a\n\nb",
            [{"role": "user", "content": "hi"}],
        ),
        (
            [ChatMessage("user", "one"), ChatMessage("user", "two"), ChatMessage("assistant", "ok")],
            "",
            [{"role": "user", "content": "one\n\ntwo"}, {"role": "assistant", "content": "ok"}],
        ),
    ],
)
def test_messages_shaping(messages: list[ChatMessage], system: str, turns: list[dict[str, str]]) -> None:
    assert anthropic_messages(messages) == (system, turns)


async def test_normal_stream_and_request(fake_server: FakeProviderServer) -> None:
    provider = make_provider("anthropic", fake_server)
    texts, completion, error = await collect(
        provider, HELLO, GenerationParams(model="claude-test", max_tokens=64)
    )
    await provider.aclose()
    assert error is None and len(texts) == 5
    assert completion == Completion("stop", input_tokens=4, output_tokens=5)
    (request,) = fake_server.stats.requests
    assert request["path"] == "/v1/messages"
    assert request["headers"]["x-api-key"] == "sk-ant-test"
    assert request["headers"]["anthropic-version"] == "2023-06-01"
    assert request["body"] == {
        "model": "claude-test",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "Say hello"}],
        "stream": True,
        "system": "Be brief.",
    }


async def test_max_tokens_maps_to_length(fake_server: FakeProviderServer) -> None:
    provider = make_provider("anthropic", fake_server)
    texts, completion, _ = await collect(provider, HELLO, GenerationParams(model="m", max_tokens=2))
    await provider.aclose()
    assert len(texts) == 2 and completion == Completion("length", 4, 2)
