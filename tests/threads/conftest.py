"""Fixtures shared by the one-process tests of threads/: a channel layer that records broadcasts, a demo
thread of `user`, a clock the test moves and an in-process coalescer on it, the fake provider server as
the `openai` connection. A test module that needs
another layer or thread defines its own fixture of the same name, which wins."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async

from providers.fake.server import FakeProviderServer
from tests.threads.recording import LAYER_SETTING, FakeClock, RecordingChannelLayer, in_process_coalescer
from threads.coalesce_store import InProcessCoalescer
from threads.models import Thread


@pytest.fixture
def layer(settings: Any) -> RecordingChannelLayer:
    settings.CHANNEL_LAYERS = LAYER_SETTING
    from channels.layers import get_channel_layer

    found = get_channel_layer()
    assert isinstance(found, RecordingChannelLayer)
    return found


@pytest.fixture
async def thread(user: Any) -> Thread:
    found: Thread = await sync_to_async(Thread.objects.create)(owner=user, provider="demo", model="demo-1")
    return found


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def co(clock: FakeClock) -> InProcessCoalescer:
    return in_process_coalescer(clock)


@pytest.fixture
def no_background_sweeps(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test runs each sweep itself; the service's own sweeper would race it."""
    from threads import sweep

    async def idle(svc: Any) -> None:
        await asyncio.Event().wait()

    monkeypatch.setattr(sweep, "sweep_forever", idle)


@pytest.fixture
async def fake(settings: Any) -> AsyncIterator[FakeProviderServer]:
    async with FakeProviderServer(ttft_ms=0, tps=200, tokens=20) as server:
        settings.PROVIDERS = {
            **settings.PROVIDERS,
            "openai": {"base_url": server.openai_base_url, "api_key": "sk-test", "model": "fake-model"},
        }
        yield server
