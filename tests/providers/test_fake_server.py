"""The fake provider server over real sockets: control endpoints, knobs, formats, stats."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx_sse import EventSource, ServerSentEvent

from providers.fake._formats import parse_fault
from providers.fake.server import FakeProviderServer, ThreadedFakeServer

CHAT = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hello"}]}
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def client(fake_server: FakeProviderServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=fake_server.base_url) as http:
        yield http


def decode_sse(chunks: list[bytes]) -> list[ServerSentEvent]:
    """The events of a body, by a decoder that is not ours (httpx-sse), so the fake is checked independently."""
    response = httpx.Response(200, headers={"content-type": "text/event-stream"}, content=b"".join(chunks))
    return list(EventSource(response).iter_sse())


def texts_of(body: bytes) -> list[str]:
    """The token texts of an OpenAI or Anthropic SSE body."""
    out = []
    for event in decode_sse([body]):
        if event.data == "[DONE]":
            continue
        data = json.loads(event.data)
        for choice in data.get("choices") or ():
            if choice["delta"].get("content"):
                out.append(choice["delta"]["content"])
        if data.get("type") == "content_block_delta":
            out.append(data["delta"]["text"])
    return out


@pytest.mark.parametrize(
    ("spec", "kind", "arg"),
    [
        ("http:503", "http", 503),
        ("rate_limit", "rate_limit", 1),
        ("RATE_LIMIT:2.5", "rate_limit", 2.5),
        ("stall", "stall_after", 0),
        ("malformed", "malformed_after", 0),
        ("error_event", "error_after", 0),
        ("disconnect_after:3", "disconnect_after", 3),
        ("quota", "quota", 0),
    ],
)
def test_parse_fault(spec: str, kind: str, arg: float) -> None:
    fault = parse_fault(spec)
    assert fault is not None and (fault.kind, fault.arg) == (kind, arg)


@pytest.mark.parametrize("spec", ["explode", "http:200", "http:abc", "stall_after:x"])
def test_parse_fault_rejects(spec: str) -> None:
    with pytest.raises(ValueError):
        parse_fault(spec)


async def test_openai_stream_format(client: httpx.AsyncClient, fake_server: FakeProviderServer) -> None:
    body = {**CHAT, "stream_options": {"include_usage": True}}
    response = await client.post("/v1/chat/completions", json=body, headers={"X-Fake-Tokens": "3"})
    assert response.headers["content-type"] == "text/event-stream"
    events = decode_sse([response.content])
    assert events[-1].data == "[DONE]"
    assert json.loads(events[-2].data)["usage"] == {
        "prompt_tokens": 1,
        "completion_tokens": 3,
        "total_tokens": 4,
    }
    assert json.loads(events[-3].data)["choices"][0]["finish_reason"] == "stop"
    assert len(texts_of(response.content)) == 3
    again = await client.post("/chat/completions", json=body, headers={"X-Fake-Tokens": "3"})
    assert texts_of(again.content) == texts_of(response.content)


async def test_anthropic_stream_format(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/messages", json={**CHAT, "max_tokens": 2})
    names = [e.event for e in decode_sse([response.content])]
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert '"stop_reason":"max_tokens"' in response.text


async def test_gemini_stream_format(client: httpx.AsyncClient) -> None:
    """Read with httpx-sse, not our provider: each event a whole GenerateContentResponse, the last with
    finishReason and usageMetadata; a status fault answers a google.rpc error body."""
    body = {
        "contents": [{"role": "user", "parts": [{"text": "hello"}]}],
        "generationConfig": {"maxOutputTokens": 2},
    }
    path = "/v1beta/models/g-1:streamGenerateContent"
    response = await client.post(path, params={"alt": "sse"}, json=body, headers={"x-goog-api-key": "k"})
    assert response.headers["content-type"] == "text/event-stream"
    events = [json.loads(e.data) for e in decode_sse([response.content])]
    assert [len(e["candidates"][0]["content"]["parts"][0]["text"]) > 0 for e in events] == [True, True, False]
    assert events[-1]["candidates"][0]["finishReason"] == "MAX_TOKENS"
    assert events[-1]["usageMetadata"] == {
        "promptTokenCount": 1,
        "candidatesTokenCount": 2,
        "totalTokenCount": 3,
    }
    refused = await client.post(path, params={"alt": "sse"}, json=body, headers={"X-Fake-Fault": "http:403"})
    assert refused.status_code == 403 and refused.json()["error"]["status"] == "PERMISSION_DENIED"


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/v1/chat/completions", "choices"),
        ("/v1/messages", "content"),
        ("/v1beta/models/m:generateContent", "candidates"),
    ],
)
async def test_non_streaming_json(client: httpx.AsyncClient, path: str, field: str) -> None:
    response = await client.post(path, json={**CHAT, "stream": False})
    assert response.status_code == 200 and field in response.json()


async def test_replies_are_deterministic_per_prompt(client: httpx.AsyncClient) -> None:
    first = await client.post("/v1/messages", json=CHAT)
    again = await client.post("/v1/messages", json=CHAT)
    other = await client.post("/v1/messages", json={**CHAT, "messages": [{"role": "user", "content": "bye"}]})
    assert texts_of(first.content) == texts_of(again.content) != texts_of(other.content)


async def test_config_queue_and_headers(client: httpx.AsyncClient, fake_server: FakeProviderServer) -> None:
    config = await client.post(
        "/_fake/config", json={"tokens": 2, "next_faults": ["http:503", "none", "quota"]}
    )
    assert config.json() == {
        "ttft_ms": 0.0,
        "tps": 0.0,
        "tokens": 2,
        "fault": None,
        "usage": True,
        "next_faults": ["http:503", None, "quota"],
    }
    header_fault = await client.post("/v1/messages", json=CHAT, headers={"X-Fake-Fault": "http:401"})
    assert header_fault.status_code == 401  # a header fault leaves the queue alone
    statuses = [(await client.post("/v1/messages", json=CHAT)).status_code for _ in range(4)]
    assert statuses == [503, 200, 429, 200]
    assert (await client.get("/_fake/config")).json()["next_faults"] == []
    sticky = await client.post("/_fake/config", json={"fault": "rate_limit:3"})
    assert sticky.json()["fault"] == "rate_limit:3"
    limited = await client.post("/v1/chat/completions", json=CHAT)
    assert limited.status_code == 429 and limited.headers["retry-after"] == "3"
    assert limited.json()["error"]["code"] == "rate_limit_exceeded"
    assert fake_server.stats.faults == {"http": 2, "quota": 1, "rate_limit": 1}


@pytest.mark.parametrize("payload", [{"fault": "explode"}, {"tokens": "many"}, {"colour": "red"}, [1]])
async def test_bad_config_changes_nothing(client: httpx.AsyncClient, payload: Any) -> None:
    before = (await client.get("/_fake/config")).json()
    response = await client.post("/_fake/config", json=payload)
    assert response.status_code == 400 and response.json()["error"]["message"]
    assert (await client.get("/_fake/config")).json() == before


async def test_stats_and_reset(client: httpx.AsyncClient, fake_server: FakeProviderServer) -> None:
    started = time.monotonic()
    await client.post("/v1/chat/completions", json=CHAT)
    with pytest.raises(httpx.RemoteProtocolError):
        await client.post("/v1/messages", json=CHAT, headers={"X-Fake-Fault": "drop"})
    stats = (await client.get("/_fake/stats")).json()
    assert stats["calls"] == 2 and stats["completed"] == 1 and stats["server_aborts"] == 1
    assert stats["calls_by_path"] == {"/v1/chat/completions": 1, "/v1/messages": 1}
    assert [r["body"] for r in stats["requests"]] == [CHAT, CHAT]
    assert all(started <= t <= time.monotonic() for t in stats["call_times"])
    await client.post("/_fake/config", json={"tokens": 9, "next_faults": ["quota"]})
    reset = await client.post("/_fake/reset")
    assert reset.json()["tokens"] == 5 and reset.json()["next_faults"] == []
    assert (await client.get("/_fake/stats")).json()["calls"] == 0


async def test_recorded_requests_are_bounded() -> None:
    async with FakeProviderServer(ttft_ms=0, tps=0, tokens=1, max_requests=2) as server:
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            for n in range(4):
                await http.post("/v1/messages", json={**CHAT, "model": f"m{n}"})
        assert [r["body"]["model"] for r in server.stats.requests] == ["m2", "m3"]


async def test_errors_for_bad_requests(client: httpx.AsyncClient) -> None:
    assert (await client.get("/nowhere")).status_code == 404
    assert (await client.get("/v1/messages")).status_code == 405
    assert (await client.post("/v1/messages", content=b"{oops")).status_code == 400
    assert (await client.post("/v1/messages", json=CHAT, headers={"X-Fake-TPS": "fast"})).status_code == 400
    assert (await client.get("/healthz")).json() == {"status": "ok"}


async def test_many_concurrent_streams(fake_server: FakeProviderServer) -> None:
    fake_server.configure(tps=100, tokens=5)  # each stream lasts ~40 ms
    async with httpx.AsyncClient(
        base_url=fake_server.base_url, limits=httpx.Limits(max_connections=100)
    ) as http:
        responses = await asyncio.gather(*(http.post("/v1/messages", json=CHAT) for _ in range(60)))
    assert all(len(texts_of(r.content)) == 5 for r in responses)
    assert fake_server.stats.max_concurrent > 30 and fake_server.stats.completed == 60
    assert fake_server.stats.concurrent == 0


async def test_tokens_are_paced(fake_server: FakeProviderServer) -> None:
    fake_server.configure(ttft_ms=30, tps=100, tokens=6)
    async with httpx.AsyncClient(base_url=fake_server.base_url) as http:
        started = time.monotonic()
        await http.post("/v1/messages", json=CHAT)
    assert time.monotonic() - started >= 0.03 + 5 * 0.01


def test_threaded_server_for_sync_code() -> None:
    with ThreadedFakeServer(ttft_ms=0, tps=0, tokens=2) as server:
        assert server.configure(next_faults=["http:500"])["next_faults"] == ["http:500"]
        with httpx.Client(base_url=server.openai_base_url) as http:
            assert http.post("/chat/completions", json=CHAT).status_code == 500
            assert len(texts_of(http.post("/chat/completions", json=CHAT).content)) == 2
        assert server.stats()["calls"] == 2
        server.reset()
        assert server.stats()["calls"] == 0


@pytest.mark.slow
def test_command_line_server() -> None:
    command = [
        sys.executable,
        "-m",
        "providers.fake.server",
        "--port",
        "0",
        "--ttft-ms",
        "0",
        "--tokens",
        "3",
    ]
    with subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            assert line.startswith("fake provider server listening on http://127.0.0.1:")
            base_url = line.rsplit(" ", 1)[1].strip()
            response = httpx.post(f"{base_url}/v1/chat/completions", json=CHAT, timeout=5)
            assert len(texts_of(response.content)) == 3
        finally:
            process.terminate()
            process.wait(5)


@pytest.mark.slow
def test_the_fake_needs_no_django_settings() -> None:
    # `python -m providers.fake` imports the providers package: nothing in it may read Django's settings.
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    code = "import providers, providers.fake.server"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
