"""Provider failures through the public HTTP and WebSocket API tell users a code and a plain sentence,
never the deployment's internals: not the provider's base URL (#16 item 9: "Connection to openai at
http://10.0.3.7:8000/v1 failed"), not the upstream's own words (which can name the operator's
organisation). Each fault is served by the fake provider over real sockets; its texts carry markers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import AsyncClient, Client

from chatapp.asgi import application
from providers import ProviderError
from providers.fake.server import FakeProviderServer
from tests.deadlines import deadlines
from threads.models import Message, Thread

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.both]

TIMEOUT = 10.0
# Every text the fake upstream writes into an error says "(fake" (and the quota and rate-limit ones
# name an organisation, as OpenAI's do); its malformed event starts a string with "unterminated".
UPSTREAM_MARKERS = ("(fake", "org-fake", "unterminated", "Overloaded", "insufficient_quota")

# fault, code users get
FAULTS = [
    pytest.param("http:503", "provider_overloaded", id="5xx-with-body"),
    pytest.param("http:400", "provider_bad_request", id="4xx-with-body"),
    pytest.param("http:401", "provider_auth_failed", id="auth"),
    pytest.param("rate_limit:0", "provider_rate_limited", id="rate-limit"),
    pytest.param("quota", "provider_quota_exceeded", id="quota"),
    pytest.param("error_event", "provider_stream_error", id="in-band-error"),
    pytest.param("error_after:2", "provider_stream_error", id="in-band-error-mid-stream"),
    pytest.param("malformed", "provider_malformed_stream", id="malformed"),
    pytest.param("drop", "provider_connection_error", id="dropped"),
    pytest.param("disconnect_after:2", "provider_connection_error", id="reset-mid-stream"),
    pytest.param("hang", "provider_timeout", id="timeout"),
]


@pytest.fixture
async def fake() -> AsyncIterator[FakeProviderServer]:
    async with FakeProviderServer(ttft_ms=0, tps=0, tokens=6) as server:
        yield server


def _configure(settings: Any, kind: str, base_url: str) -> None:
    settings.PROVIDERS = {
        **settings.PROVIDERS,
        kind: {"base_url": base_url, "api_key": "sk-secret-test-key", "model": "fake-model"},
    }
    settings.PROVIDER_MAX_RETRIES = 0  # one call per send: the fault is what users see
    settings.PROVIDER_TIMEOUTS = deadlines(expects_timeout=False)


def _base_url(kind: str, server: FakeProviderServer) -> str:
    return server.openai_base_url if kind == "openai" else server.base_url


async def _thread(user: Any, kind: str) -> Thread:
    return await sync_to_async(Thread.objects.create)(owner=user, provider=kind, model="fake-model")


def _assert_nothing_internal(seen: str, base_url: str) -> None:
    host = urlsplit(base_url).netloc
    assert host not in seen and base_url not in seen, seen
    assert "sk-secret" not in seen and "BASE_URL" not in seen and "API_KEY" not in seen, seen
    for marker in UPSTREAM_MARKERS:
        assert marker not in seen, (marker, seen)


async def _send_and_read_everything(
    thread: Thread, token: str, request_id: str
) -> tuple[dict[str, Any], str]:
    """(the send's JSON answer, everything a user could read about it: HTTP answers and socket events)."""
    comm = WebsocketCommunicator(
        application, f"/ws/threads/{thread.pk}/", headers=[(b"authorization", f"Bearer {token}".encode())]
    )
    assert (await comm.connect(timeout=TIMEOUT))[0]
    frames = [await comm.receive_json_from(timeout=TIMEOUT)]
    api = AsyncClient(AUTHORIZATION=f"Bearer {token}")
    resp = await asyncio.wait_for(
        api.post(
            f"/api/threads/{thread.pk}/messages",
            {"content": "tell me something", "request_id": request_id},
            content_type="application/json",
        ),
        TIMEOUT,
    )
    while frames[-1].get("type") != "message.error":
        frames.append(await comm.receive_json_from(timeout=TIMEOUT))
    await comm.disconnect()
    read = await api.get(f"/api/threads/{thread.pk}")
    assert read.status_code == 200
    seen = resp.content.decode() + read.content.decode() + json.dumps(frames)
    return resp.json(), seen


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
@pytest.mark.parametrize(("fault", "code"), FAULTS)
async def test_provider_fault_shows_users_a_code_and_a_plain_sentence(
    fake: FakeProviderServer, user: Any, token: str, settings: Any, kind: str, fault: str, code: str
) -> None:
    base_url = _base_url(kind, fake)
    _configure(settings, kind, base_url)
    settings.PROVIDER_TIMEOUTS = deadlines(expects_timeout=code == "provider_timeout")
    fake.queue_faults(fault)
    body, seen = await _send_and_read_everything(await _thread(user, kind), token, f"leak-{kind}-{fault}")
    assert body["error"]["code"] == code and body["error"]["message"], body
    _assert_nothing_internal(seen, base_url)
    saved = await sync_to_async(Message.objects.get)(request_id=f"leak-{kind}-{fault}", role="assistant")
    assert saved.error_code == code
    _assert_nothing_internal(saved.error_message, base_url)
    assert fake.stats.calls == 1


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
async def test_an_unreachable_provider_does_not_name_its_address(
    user: Any, token: str, settings: Any, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    server = FakeProviderServer()
    await server.start()
    await server.stop()  # a port nobody listens on any more: connection refused
    base_url = _base_url(kind, server)
    _configure(settings, kind, base_url)
    body, seen = await _send_and_read_everything(await _thread(user, kind), token, f"refused-{kind}")
    assert body["error"]["code"] == "provider_connection_error", body
    _assert_nothing_internal(seen, base_url)
    # The operator still learns where it failed: the detail is in the log, and on the row for staff.
    assert any(urlsplit(base_url).netloc in r.getMessage() for r in caplog.records)
    saved = await sync_to_async(Message.objects.get)(request_id=f"refused-{kind}", role="assistant")
    assert urlsplit(base_url).netloc in saved.error_detail


async def test_staff_read_the_detail_in_admin(
    fake: FakeProviderServer, user: Any, token: str, settings: Any, admin_client: Client
) -> None:
    """#16 item 9: "the detail goes to the log and to staff". Admin's failed replies show it."""
    _configure(settings, "openai", fake.openai_base_url)
    fake.queue_faults("quota")  # the upstream's text names the organisation
    body, seen = await _send_and_read_everything(await _thread(user, "openai"), token, "leak-admin")
    assert body["error"]["code"] == "provider_quota_exceeded" and "org-fake" not in seen
    saved = await sync_to_async(Message.objects.get)(request_id="leak-admin", role="assistant")
    assert "org-fake" in saved.error_detail
    listed = await sync_to_async(admin_client.get)("/admin/threads/failedreply/")
    assert (
        listed.status_code == 200
        and f"/admin/threads/failedreply/{saved.pk}/change/" in listed.content.decode()
    )
    shown = await sync_to_async(admin_client.get)(f"/admin/threads/failedreply/{saved.pk}/change/")
    assert shown.status_code == 200 and "org-fake" in shown.content.decode()


async def test_the_detail_stays_available_to_logs(fake: FakeProviderServer, settings: Any) -> None:
    from providers import ChatMessage, GenerationParams, get_provider, stream_with_retries

    _configure(settings, "openai", fake.openai_base_url)
    fake.queue_faults("rate_limit:0")
    provider = get_provider("openai")
    with pytest.raises(ProviderError) as caught:
        async for _ in stream_with_retries(
            provider, [ChatMessage("user", "hi")], GenerationParams("fake-model")
        ):
            pass
    assert "org-fake" in caught.value.detail and "org-fake" not in caught.value.message
