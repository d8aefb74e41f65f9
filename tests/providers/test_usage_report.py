"""Usage from each provider's own report, through the fake server's wire formats, and none when the
fake omits it (as some OpenAI-compatible servers and gateways do)."""

from __future__ import annotations

import httpx
import pytest

from providers import Completion
from providers.fake.server import FakeProviderServer
from tests.providers.conftest import collect, make_provider


@pytest.mark.parametrize("kind", ["openai", "anthropic", "gemini"])
async def test_usage_comes_from_the_providers_report(kind: str, fake_server: FakeProviderServer) -> None:
    provider = make_provider(kind, fake_server)
    texts, completion, error = await collect(provider)
    await provider.aclose()
    assert error is None and len(texts) == 5
    # The fake counts the prompt's words ("Be brief." + "Say hello") and the reply's tokens.
    assert completion == Completion("stop", input_tokens=4, output_tokens=5)


@pytest.mark.parametrize("kind", ["openai", "anthropic", "gemini"])
async def test_no_usage_when_the_server_reports_none(kind: str, fake_server: FakeProviderServer) -> None:
    fake_server.configure(usage=False)
    provider = make_provider(kind, fake_server)
    texts, completion, error = await collect(provider)
    await provider.aclose()
    assert error is None and len(texts) == 5
    assert completion == Completion("stop", input_tokens=None, output_tokens=None)


async def test_the_fake_omits_usage_on_a_header(fake_server: FakeProviderServer) -> None:
    body = {
        "model": "m",
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "hello"}],
    }
    async with httpx.AsyncClient(base_url=fake_server.base_url) as http:
        reported = (await http.post("/v1/chat/completions", json=body)).text
        omitted = (await http.post("/v1/chat/completions", json=body, headers={"x-fake-usage": "omit"})).text
        anthropic = (await http.post("/v1/messages", json=body, headers={"x-fake-usage": "omit"})).text
    assert '"usage"' in reported and '"prompt_tokens"' in reported
    assert '"usage"' not in omitted
    assert '"usage"' not in anthropic and "message_delta" in anthropic


async def test_usage_config_is_validated(fake_server: FakeProviderServer) -> None:
    async with httpx.AsyncClient(base_url=fake_server.base_url) as http:
        bad = await http.post("/_fake/config", json={"usage": "no"})
        good = await http.post("/_fake/config", json={"usage": False})
    assert bad.status_code == 400
    assert good.json()["usage"] is False
