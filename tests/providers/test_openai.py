"""OpenAI-compatible provider: the chunk parser (table) and the request it sends (fake server)."""

from __future__ import annotations

import pytest

from providers import (
    ChatMessage,
    Completion,
    GenerationParams,
    ProviderMalformedStream,
    ProviderStreamError,
    StreamEvent,
    TextDelta,
)
from providers._openai import OpenAIStreamParser
from providers._sse import SSEEvent
from providers.fake.server import FakeProviderServer

from .conftest import HELLO, collect, make_provider

ROLE = '{"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}'
HI = '{"choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}'
STOP = '{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}'
USAGE = '{"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":2,"total_tokens":9}}'


def _parse(*datas: str) -> tuple[list[StreamEvent], Completion]:
    parser = OpenAIStreamParser("openai")
    events = [event for data in datas for event in parser.feed(SSEEvent("message", data))]
    return events, parser.finish()


@pytest.mark.parametrize(
    ("datas", "texts", "completion"),
    [
        ((ROLE, HI, STOP, USAGE, "[DONE]"), ["Hi"], Completion("stop", 7, 2)),
        ((HI, HI.replace("Hi", " there"), STOP, "[DONE]"), ["Hi", " there"], Completion("stop")),
        ((HI, STOP.replace("stop", "length"), "[DONE]"), ["Hi"], Completion("length")),
        ((HI, STOP), ["Hi"], Completion("stop")),  # no [DONE] but a finish_reason: complete
        ((HI, "[DONE]"), ["Hi"], Completion("stop")),
        ((HI.replace('"index":0', '"index":1'), STOP, "[DONE]"), [], Completion("stop")),  # choice 0 only
        (('{"id":"x","choices":null}', STOP, "[DONE]"), [], Completion("stop")),
        ((HI.replace('"Hi"', "null"), STOP, "[DONE]"), [], Completion("stop")),
    ],
)
def test_parser_table(datas: tuple[str, ...], texts: list[str], completion: Completion) -> None:
    events, final = _parse(*datas)
    assert events == [TextDelta(t) for t in texts]
    assert final == completion


@pytest.mark.parametrize(
    ("datas", "error"),
    [
        ((HI,), ProviderMalformedStream),  # ended without [DONE] or finish_reason
        (("{not json",), ProviderMalformedStream),
        (("[1, 2]",), ProviderMalformedStream),
        (('{"choices": {"0": 1}}',), ProviderMalformedStream),
        (('{"error": {"message": "boom", "type": "server_error"}}',), ProviderStreamError),
    ],
)
def test_parser_errors(datas: tuple[str, ...], error: type[Exception]) -> None:
    with pytest.raises(error):
        _parse(*datas)


def test_inband_error_retryability_follows_its_type() -> None:
    with pytest.raises(ProviderStreamError) as server_error:
        _parse('{"error": {"message": "busy", "type": "server_error"}}')
    with pytest.raises(ProviderStreamError) as bad:
        _parse('{"error": {"message": "no", "type": "BadRequestError", "code": 400}}')
    assert server_error.value.retryable and not bad.value.retryable
    assert bad.value.upstream_type == "BadRequestError" and "no" in bad.value.detail


async def test_normal_stream_and_request(fake_server: FakeProviderServer) -> None:
    provider = make_provider("openai", fake_server)
    params = GenerationParams(model="gpt-test", max_tokens=50, temperature=0.2, extra=(("top_p", "0.9"),))
    texts, completion, error = await collect(provider, HELLO, params)
    await provider.aclose()
    assert error is None and len(texts) == 5 and texts[1].startswith(" ")
    assert completion == Completion("stop", input_tokens=4, output_tokens=5)
    (request,) = fake_server.stats.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["authorization"] == "Bearer sk-test"
    assert request["body"] == {
        "model": "gpt-test",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello"}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": 50,
        "temperature": 0.2,
        "top_p": 0.9,
    }


async def test_max_tokens_ends_with_length_and_replies_are_deterministic(
    fake_server: FakeProviderServer,
) -> None:
    provider = make_provider("openai", fake_server)
    short = GenerationParams(model="m", max_tokens=3)
    first = await collect(provider, HELLO, short)
    again = await collect(provider, HELLO, short)
    other = await collect(provider, [ChatMessage("user", "Something else")], short)
    await provider.aclose()
    assert first == again and first[1] == Completion("length", 4, 3)
    assert other[0] != first[0]


async def test_no_api_key_sends_no_authorization(fake_server: FakeProviderServer) -> None:
    provider = make_provider("openai", fake_server)
    provider.api_key = ""
    await collect(provider)
    await provider.aclose()
    assert "authorization" not in fake_server.stats.requests[0]["headers"]
