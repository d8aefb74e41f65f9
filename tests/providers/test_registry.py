"""The registry: instances per (name, event loop), built from settings, closed per loop."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from core.loopres import aclose_all
from providers import (
    AnthropicProvider,
    DemoProvider,
    OpenAIProvider,
    Timeouts,
    UnknownProvider,
    available_providers,
    build_provider,
    get_provider,
)


async def test_one_instance_per_name_and_loop(settings: Any) -> None:
    settings.DEFAULT_PROVIDER = "demo"
    demo = get_provider("demo")
    assert isinstance(demo, DemoProvider)
    assert get_provider("demo") is demo and get_provider() is demo
    assert get_provider("openai") is not demo
    assert demo.default_model == settings.PROVIDERS["demo"]["model"]


async def test_another_loop_gets_another_instance() -> None:
    here = get_provider("demo")

    def in_thread() -> object:
        async def main() -> object:
            provider = get_provider("demo")
            await aclose_all()
            return provider

        return asyncio.run(main())

    there = await asyncio.to_thread(in_thread)
    assert there is not here and isinstance(there, DemoProvider)


def test_without_a_running_loop_each_call_builds_a_fresh_instance() -> None:
    assert get_provider("demo") is not get_provider("demo")


async def test_the_loops_close_all_closes_and_forgets(settings: Any) -> None:
    openai = get_provider("openai")
    assert isinstance(openai, OpenAIProvider)
    client = openai._get_client()
    await aclose_all()
    assert client.is_closed
    assert get_provider("openai") is not openai
    await aclose_all()
    await aclose_all()  # nothing left: still fine


async def test_unknown_names_raise_with_the_choices(settings: Any) -> None:
    with pytest.raises(UnknownProvider) as caught:
        get_provider("nope")
    assert caught.value.code == "unknown_provider" and caught.value.http_status == 400
    assert "demo, openai, anthropic" in caught.value.message
    settings.DEFAULT_PROVIDER = "missing"
    with pytest.raises(UnknownProvider):
        get_provider()


def test_settings_drive_construction(settings: Any) -> None:
    settings.PROVIDERS = {
        **settings.PROVIDERS,
        "demo": {"model": "demo-9", "ttft_ms": 5, "tokens_per_s": 7, "max_tokens": 3},
        "local": {
            "kind": "openai",
            "base_url": "http://127.0.0.1:1/v1/",
            "model": "llama",
            "max_connections": 4,
        },
        "mystery": {"kind": "bard", "model": "x"},
    }
    settings.PROVIDER_TIMEOUTS = {"connect": 1, "first_byte": 2, "idle": 3, "total": 4}
    demo = build_provider("demo")
    assert isinstance(demo, DemoProvider)
    assert (demo.default_model, demo.ttft_ms, demo.tokens_per_s, demo.max_tokens) == ("demo-9", 5, 7, 3)
    local = build_provider("local")
    assert isinstance(local, OpenAIProvider) and local.name == "local"
    assert (local.base_url, local.default_model, local.timeouts) == (
        "http://127.0.0.1:1/v1",
        "llama",
        Timeouts(1, 2, 3, 4),
    )
    assert isinstance(build_provider("anthropic"), AnthropicProvider)
    assert available_providers() == ["demo", "openai", "anthropic", "gemini", "local"]
    with pytest.raises(UnknownProvider):
        build_provider("mystery")
