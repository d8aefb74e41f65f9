"""The demo provider: deterministic, shaped like a chat answer, on the configured schedule."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from providers import ChatMessage, Completion, DemoProvider, GenerationParams, StreamEvent, TextDelta
from providers import _demo as demo_module
from providers._demo_text import split_tokens

PARAMS = GenerationParams(model="demo-1")


def fast(**options: Any) -> DemoProvider:
    return DemoProvider(ttft_ms=0, tokens_per_s=0, **options)


async def reply(
    provider: DemoProvider, prompt: str, params: GenerationParams = PARAMS
) -> tuple[str, Completion]:
    events = [e async for e in provider.stream([ChatMessage("user", prompt)], params)]
    *deltas, completion = events
    assert isinstance(completion, Completion) and all(isinstance(d, TextDelta) for d in deltas)
    return "".join(d.text for d in deltas if isinstance(d, TextDelta)), completion


async def test_identical_requests_give_identical_text_and_different_ones_differ() -> None:
    provider = fast()
    first, _ = await reply(provider, "What is the capital of France?")
    assert (await reply(provider, "What is the capital of France?"))[0] == first
    assert (await reply(provider, "Why is the sky blue?"))[0] != first


async def test_tokens_are_wordish_with_leading_spaces() -> None:
    events = [e async for e in fast().stream([ChatMessage("user", "Tell me about rivers")], PARAMS)]
    texts = [e.text for e in events if isinstance(e, TextDelta)]
    assert len(texts) > 10 and any(t.startswith(" ") for t in texts)
    assert all(t.strip() and len(t.strip()) < 30 for t in texts)


async def test_code_requests_get_a_code_block() -> None:
    text, completion = await reply(fast(max_tokens=500), "Write a Python function that reverses a string")
    assert "```python\n" in text and text.count("```") == 2 and completion.finish_reason == "stop"


async def test_max_tokens_cuts_with_length() -> None:
    text, completion = await reply(
        fast(), "Give me some tips for sleeping better", GenerationParams("demo-1", 5)
    )
    assert completion == Completion("length", input_tokens=7, output_tokens=5)
    _, capped = await reply(fast(max_tokens=3), "Give me some tips for sleeping better")
    assert capped.output_tokens == 3 and capped.finish_reason == "length"


async def test_schedule_follows_ttft_and_tokens_per_second(monkeypatch: pytest.MonkeyPatch) -> None:
    waits: list[float] = []
    real_sleep = asyncio.sleep

    async def recording_sleep(seconds: float) -> None:
        waits.append(seconds)
        await real_sleep(0)

    monkeypatch.setattr(demo_module.asyncio, "sleep", recording_sleep)
    provider = DemoProvider(ttft_ms=250, tokens_per_s=10, max_tokens=4)
    await reply(provider, "hello")
    # The loop clock barely moves, so each wait is the absolute schedule: ttft + i / tps.
    assert waits == pytest.approx([0.25, 0.35, 0.45, 0.55], abs=0.02)


async def test_cancelling_the_consumer_stops_the_demo() -> None:
    provider = DemoProvider(ttft_ms=0, tokens_per_s=5)
    seen: list[StreamEvent] = []
    first = asyncio.Event()

    async def consume() -> None:
        async for event in provider.stream([ChatMessage("user", "hi")], PARAMS):
            seen.append(event)
            first.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first.wait(), 1)  # the first token comes at once; the next 200 ms later
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(seen) == 1


def test_from_settings_reads_the_entry_and_overrides_win() -> None:
    config = {"model": "demo-x", "ttft_ms": 10, "tokens_per_s": 99, "max_tokens": 7}
    provider = DemoProvider.from_settings("demo", config, ttft_ms=0)
    assert (
        provider.name,
        provider.default_model,
        provider.ttft_ms,
        provider.tokens_per_s,
        provider.max_tokens,
    ) == (
        "demo",
        "demo-x",
        0,
        99.0,
        7,
    )


async def test_the_configured_demo_says_what_it_is_and_lasts_long_enough_to_stop() -> None:
    """#22 item 10: the demo answered in about 2 s with generic text (120 tokens at most, no word about
    being a demo); with the settings' defaults a reply is 400+ tokens (10 s at 40 tokens/s) and opens
    by saying it is the demo and how to connect a real model."""
    from django.conf import settings

    provider = DemoProvider.from_settings("demo", settings.PROVIDERS["demo"], ttft_ms=0, tokens_per_s=0)
    text, completion = await reply(provider, "What is the capital of France?")
    assert text.startswith("*This is chatapp's built-in **demo model**")
    assert "DEFAULT_PROVIDER=openai" in text and "apital of France" in text
    tokens = completion.output_tokens or 0
    assert tokens >= 400 and completion.finish_reason == "stop"
    assert settings.PROVIDERS["demo"]["tokens_per_s"] * 15 >= tokens  # about 10 s, not minutes


def test_demo_reply_length_and_note_are_configurable() -> None:
    from providers._demo_text import DEMO_NOTE, compose_reply, demo_reply

    messages = [ChatMessage("user", "Tell me about rivers")]
    assert demo_reply(messages) == compose_reply(messages)
    long = demo_reply(messages, min_tokens=800, note=True)
    assert long.startswith(DEMO_NOTE) and len(split_tokens(long)) >= 800
    assert demo_reply(messages, min_tokens=800, note=True) == long  # deterministic
