"""Gemini native streaming (#17): request shape, roles and systemInstruction, text, finish reasons,
usageMetadata, safety blocks and errors mapped onto the exception tree."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from providers import (
    ChatMessage,
    Completion,
    GeminiProvider,
    GenerationParams,
    ProviderAuthError,
    ProviderBadRequest,
    ProviderMalformedStream,
    ProviderRateLimited,
    TextDelta,
)


def _sse(*chunks: dict[str, Any]) -> bytes:
    return b"".join(b"data: " + json.dumps(c).encode() + b"\r\n\r\n" for c in chunks)


def _chunk(text: str, reason: str | None = None, **extra: Any) -> dict[str, Any]:
    cand: dict[str, Any] = {"content": {"role": "model", "parts": [{"text": text}]}, "index": 0}
    if reason:
        cand["finishReason"] = reason
    return {"candidates": [cand], **extra}


async def _run(body: bytes, status: int = 200) -> tuple[list[Any], list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, content=body, headers={"content-type": "text/event-stream"})

    provider = GeminiProvider(
        name="gem", base_url="https://g.example", model="gemini-2.5-flash", api_key="k-1",
        transport=httpx.MockTransport(handler),
    )  # fmt: skip
    messages = [ChatMessage("system", "Be brief."), ChatMessage("user", "hi"), ChatMessage("assistant", "yo"),
                ChatMessage("user", "more")]  # fmt: skip
    out: list[Any] = []
    try:
        async for ev in provider.stream(messages, GenerationParams(model="gemini-2.5-flash", max_tokens=50)):
            out.append(ev)
    finally:
        await provider.aclose()
    return out, seen


async def test_stream_request_and_usage() -> None:
    usage = {"usageMetadata": {"promptTokenCount": 7, "candidatesTokenCount": 3}}
    out, seen = await _run(_sse(_chunk("Hel"), _chunk("lo", "STOP", **usage)))
    assert out == [TextDelta("Hel"), TextDelta("lo"), Completion("stop", 7, 3)]
    req = seen[0]
    assert req.url.path == "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
    assert req.url.params["alt"] == "sse" and req.headers["x-goog-api-key"] == "k-1"
    body = json.loads(req.content)
    assert body["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert [c["role"] for c in body["contents"]] == ["user", "model", "user"]
    assert body["generationConfig"] == {"maxOutputTokens": 50}


@pytest.mark.parametrize(("reason", "mapped"), [("MAX_TOKENS", "length"), ("SAFETY", "content_filter")])
async def test_finish_reasons(reason: str, mapped: str) -> None:
    out, _ = await _run(_sse(_chunk("a"), _chunk("b", reason)))
    assert out[-1].finish_reason == mapped


async def test_safety_blocks_and_faults() -> None:
    with pytest.raises(ProviderBadRequest, match="blockReason SAFETY") as blocked:
        await _run(_sse({"promptFeedback": {"blockReason": "SAFETY"}}))
    assert "safety filters" in blocked.value.message  # what the user reads
    with pytest.raises(ProviderBadRequest):
        await _run(_sse({"candidates": [{"finishReason": "SAFETY", "index": 0}]}))
    with pytest.raises(ProviderMalformedStream):
        await _run(_sse(_chunk("cut short")))
    err = {"error": {"code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED"}}
    with pytest.raises(ProviderRateLimited):
        await _run(json.dumps(err).encode(), status=429)
    with pytest.raises(ProviderAuthError):
        await _run(b'{"error": {"code": 403, "status": "PERMISSION_DENIED"}}', status=403)


async def test_against_the_fake_servers_wire_format() -> None:
    from providers.fake.server import FakeProviderServer

    from .conftest import HELLO, collect, make_provider

    async with FakeProviderServer(ttft_ms=0, tps=0, tokens=5) as server:
        provider = make_provider("gemini", server)
        texts, completion, error = await collect(
            provider, HELLO, GenerationParams(model="g-1", max_tokens=64)
        )
        short = await collect(provider, HELLO, GenerationParams(model="g-1", max_tokens=2))
        await provider.aclose()
        assert error is None and len(texts) == 5
        assert completion == Completion("stop", input_tokens=4, output_tokens=5)
        assert short[1] == Completion("length", 4, 2)
        request = server.stats.requests[0]
        assert request["path"] == "/v1beta/models/g-1:streamGenerateContent"
        assert request["headers"]["x-goog-api-key"] == "g-test"
        assert request["body"] == {
            "contents": [{"role": "user", "parts": [{"text": "Say hello"}]}],
            "generationConfig": {"maxOutputTokens": 64},
            "systemInstruction": {"parts": [{"text": "Be brief."}]},
        }
