"""Per-user quotas (threads/quotas.py): the send budget and the open-socket count, on their own and
through the API and the WebSocket. In pass 2 both live in Redis (shared by every process)."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings

from chatapp.asgi import application
from tests.asgi_http import asgi_request
from threads import quotas
from threads.models import Message, Thread
from threads.quotas import RateLimited, SocketRegistry, send_admit

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.both]


@pytest.fixture
def user(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user(username="alice")  # no password: no hashing cost


@pytest.fixture
def slow_budget(settings: Any) -> None:
    """Two sends at once, then one every 10 s."""
    settings.SEND_RATE_PER_MIN = 6
    settings.SEND_RATE_BURST = 2


# --- the send budget on its own ---------------------------------------------------------------------


def _uid() -> str:
    """A user id no other test (nor an earlier run against the same Redis) uses."""
    return f"t-{uuid.uuid4().hex}"


async def test_budget_admits_the_burst_then_refuses_with_retry_after(slow_budget: None) -> None:
    uid = _uid()
    await send_admit(user_id=uid)
    await send_admit(user_id=uid)
    with pytest.raises(RateLimited) as err:
        await send_admit(user_id=uid)
    assert (err.value.code, err.value.status) == ("rate_limited", 429)
    assert err.value.retry_after is not None and 1 <= err.value.retry_after <= 10
    await send_admit(user_id=_uid())  # one bucket per user


async def test_unlimited_when_rate_is_zero(settings: Any) -> None:
    settings.SEND_RATE_PER_MIN = 0
    uid = _uid()
    for _ in range(50):
        await send_admit(user_id=uid)


async def test_budget_falls_back_to_this_process_when_redis_is_unreachable(
    settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    settings.SEND_RATE_PER_MIN, settings.SEND_RATE_BURST = 6, 1
    uid = _uid()
    await send_admit(user_id=uid)
    with pytest.raises(RateLimited):
        await send_admit(user_id=uid)
    assert "Redis unreachable" in caplog.text


# --- through the API and the socket -----------------------------------------------------------------


def _auth(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}", "content-type": "application/json"}


async def _post(thread: Thread, token: str, body: dict[str, Any]) -> Any:
    return await asgi_request(
        "POST", f"/api/threads/{thread.pk}/messages", body=json.dumps(body).encode(), headers=_auth(token)
    )


async def test_http_send_over_budget_is_429_with_retry_after(
    thread: Thread, token: str, slow_budget: None
) -> None:
    for i in range(2):
        assert (await _post(thread, token, {"content": f"message {i}"})).status == 200
    refused = await _post(thread, token, {"content": "one too many"})
    assert refused.status == 429 and refused.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(refused.headers["retry-after"]) <= 10
    # Nothing was written for the refused send.
    assert await sync_to_async(Message.objects.filter(thread=thread).count)() == 4


async def test_a_replay_costs_a_followers_share_not_a_send(thread: Thread, token: str, settings: Any) -> None:
    settings.SEND_RATE_PER_MIN, settings.SEND_RATE_BURST = 6, 1
    first = await _post(thread, token, {"content": "once", "request_id": "rid-1"})
    again = await _post(thread, token, {"content": "once", "request_id": "rid-1"})
    assert (first.status, again.status) == (200, 200)
    assert again.json()["assistant_message"]["id"] == first.json()["assistant_message"]["id"]
    # Replays and followers draw from a bucket of their own, twice the send budget: the second
    # replay spends it; the send budget was spent by the first send alone.
    assert (await _post(thread, token, {"content": "once", "request_id": "rid-1"})).status == 200
    assert (await _post(thread, token, {"content": "once", "request_id": "rid-1"})).status == 429
    assert (await _post(thread, token, {"content": "new words"})).status == 429


BURST = 100  # identical concurrent sends of one user


async def test_identical_burst_is_one_send_and_a_share_per_follower(
    thread: Thread, token: str, settings: Any
) -> None:
    """A follower costs the provider nothing but holds a wait and a 24 h request_id record: it costs
    half a send, from its own bucket (twice the send budget). Past that bucket, followers meet 429."""
    # One send a day: the buckets must not refill while 100 sends are served (a loaded machine took
    # over 30 s at one a minute, and two more followers got in).
    settings.SEND_RATE_PER_MIN, settings.SEND_RATE_BURST = 1 / 1440, 1
    answers = await asyncio.gather(
        *(
            _post(thread, token, {"content": "same words", "request_id": uuid.uuid4().hex})
            for _ in range(BURST)
        )
    )
    statuses = [a.status for a in answers]
    assert statuses.count(200) == 3 and statuses.count(429) == BURST - 3, statuses
    roles = sorted(a.json()["coalesced"] for a in answers if a.status == 200)
    assert roles == ["follower", "follower", "leader"]
    for refused in (a for a in answers if a.status == 429):
        assert refused.json()["error"]["code"] == "rate_limited" and int(refused.headers["retry-after"]) >= 1
    # The send budget is spent: a different message now waits its turn.
    refused = await _post(thread, token, {"content": "different words"})
    assert refused.status == 429 and int(refused.headers["retry-after"]) >= 1


@pytest.mark.parametrize(
    ("per_min", "burst", "interval", "follow_burst"),
    [(30, 10, 1.0, 20), (6, 1, 5.0, 2), (1, 1, 30.0, 2), (45, 3, 2 / 3, 6)],
)
def test_follower_bucket_is_twice_the_send_budget(
    per_min: float, burst: int, interval: float, follow_burst: int
) -> None:
    from threads.limits import follow_rate_limit

    limit = follow_rate_limit(per_min=per_min, burst=burst)
    assert limit is not None
    assert limit.interval == pytest.approx(interval) and limit.burst == follow_burst
    assert follow_rate_limit(per_min=0, burst=burst) is None  # unlimited stays unlimited


async def test_bypass_sends_count_each(thread: Thread, token: str, settings: Any) -> None:
    settings.SEND_RATE_PER_MIN, settings.SEND_RATE_BURST = 1, 1
    assert (await _post(thread, token, {"content": "same", "idempotent": False})).status == 200
    assert (await _post(thread, token, {"content": "same", "idempotent": False})).status == 429


async def test_streaming_send_over_budget_is_429_before_any_stream(
    thread: Thread, token: str, settings: Any
) -> None:
    settings.SEND_RATE_PER_MIN, settings.SEND_RATE_BURST = 1, 1
    assert (await _post(thread, token, {"content": "first"})).status == 200
    resp = await _post(thread, token, {"content": "second", "stream": True})
    assert resp.status == 429 and resp.headers["content-type"] == "application/json"
    assert resp.json()["error"]["code"] == "rate_limited" and int(resp.headers["retry-after"]) >= 1


async def _socket(thread: Thread, token: str) -> WebsocketCommunicator:
    comm = WebsocketCommunicator(
        application, f"/ws/threads/{thread.pk}/", headers=[(b"authorization", f"Bearer {token}".encode())]
    )
    ok, code = await comm.connect(timeout=10)
    assert ok, code
    assert (await comm.receive_json_from(timeout=10))["type"] == "snapshot"
    return comm


async def _until(comm: WebsocketCommunicator, kind: str) -> dict[str, Any]:
    while True:
        event = await comm.receive_json_from(timeout=10)
        if event["type"] == kind:
            return event


async def test_socket_send_over_budget_gets_rate_limited_and_stays_usable(
    thread: Thread, token: str, settings: Any
) -> None:
    settings.SEND_RATE_PER_MIN, settings.SEND_RATE_BURST = 1, 1
    comm = await _socket(thread, token)
    await comm.send_json_to({"type": "send", "content": "first"})
    await _until(comm, "message.done")
    await comm.send_json_to({"type": "send", "content": "second"})
    event = await comm.receive_json_from(timeout=10)
    assert event["type"] == "error" and event["error"]["code"] == "rate_limited", event
    assert isinstance(event["error"]["retry_after"], int) and event["error"]["retry_after"] >= 1
    # Still usable.
    await comm.send_json_to({"type": "cancel", "request_id": "never-sent"})
    assert (await comm.receive_json_from(timeout=10))["error"]["code"] == "not_found"
    await comm.disconnect()


# --- open sockets -----------------------------------------------------------------------------------


async def _connect(thread: Thread, token: str) -> tuple[WebsocketCommunicator, bool, int | None]:
    """(socket, whether it stays open, the close code if not). A socket over the quota is accepted and
    closed at once, so that the client sees 4429."""
    comm = WebsocketCommunicator(
        application, f"/ws/threads/{thread.pk}/", headers=[(b"authorization", f"Bearer {token}".encode())]
    )
    ok, code = await comm.connect(timeout=10)
    if not ok:
        return comm, False, code
    first = await comm.receive_output(timeout=10)
    if first["type"] == "websocket.close":
        return comm, False, first["code"]
    assert json.loads(first["text"])["type"] == "snapshot"
    return comm, True, None


async def test_sockets_per_user_limit_refuses_then_frees_on_close(
    thread: Thread, token: str, settings: Any
) -> None:
    settings.MAX_SOCKETS_PER_USER = 2
    a, ok_a, _ = await _connect(thread, token)
    b, ok_b, _ = await _connect(thread, token)
    refused, ok_c, code = await _connect(thread, token)
    assert (ok_a, ok_b, ok_c, code) == (True, True, False, 4429)
    await a.disconnect()
    d, ok_d, _ = await _connect(thread, token)
    assert ok_d
    for comm in (b, d):
        await comm.disconnect()


async def test_refused_handshakes_take_no_slot(thread: Thread, token: str, settings: Any) -> None:
    settings.MAX_SOCKETS_PER_USER = 1
    # A socket to a thread that does not exist is refused (4404) before it could take a slot.
    missing = WebsocketCommunicator(
        application, "/ws/threads/999999/", headers=[(b"authorization", f"Bearer {token}".encode())]
    )
    assert await missing.connect(timeout=10) == (False, 4404)
    comm, ok, _ = await _connect(thread, token)
    assert ok
    await comm.disconnect()


async def test_registry_in_process() -> None:
    reg = SocketRegistry()
    assert await reg.open(user_id=1, socket_id="a", limit=2)
    assert await reg.open(user_id=1, socket_id="b", limit=2)
    assert not await reg.open(user_id=1, socket_id="c", limit=2)
    assert await reg.open(user_id=2, socket_id="x", limit=2)
    await reg.close(user_id=1, socket_id="a")
    await reg.close(user_id=1, socket_id="a")  # twice: no effect
    assert await reg.open(user_id=1, socket_id="c", limit=2)
    assert sorted(reg.local["1"]) == ["b", "c"]
    await reg.beat()  # nothing to do without Redis
    await reg.aclose()


@pytest.mark.services
async def test_registry_in_redis_expires_a_dead_process_sockets() -> None:
    from core.redisconn import redis_for_loop

    client = redis_for_loop()
    reg = SocketRegistry(redis=client, prefix=django_settings.REDIS_KEY_PREFIX)
    uid = _uid()
    key = reg.key(uid)
    # Two sockets of a process that died long ago: their heartbeats stopped at t=1 (1970).
    await client.zadd(key, {"dead-1": 1.0, "dead-2": 1.0})
    assert await reg.open(user_id=uid, socket_id="live-1", limit=2)
    assert await client.zrange(key, 0, -1) == [b"live-1"]
    assert await reg.open(user_id=uid, socket_id="live-2", limit=2)
    assert not await reg.open(user_id=uid, socket_id="live-3", limit=2)
    # Another process's registry sees the same count.
    other = SocketRegistry(redis=client, prefix=django_settings.REDIS_KEY_PREFIX)
    assert not await other.open(user_id=uid, socket_id="elsewhere", limit=2)
    # The heartbeat re-stamps this process's sockets (and only those still registered).
    await client.zadd(key, {"live-1": 5.0})
    await reg.beat()
    assert (await client.zscore(key, "live-1") or 0) > 5.0
    await reg.close(user_id=uid, socket_id="live-1")
    assert await client.zscore(key, "live-1") is None
    assert await other.open(user_id=uid, socket_id="elsewhere", limit=2)
    await reg.aclose()
    await other.aclose()


@pytest.mark.services
async def test_send_budget_is_shared_through_redis(slow_budget: None) -> None:
    """Two processes' worth of callers (two loops' backends would be two clients): one bucket."""
    from core.gcra_store import RedisBackend

    uid = _uid()
    await send_admit(user_id=uid)
    await send_admit(user_id=uid)
    other = RedisBackend(django_settings.REDIS_URL, prefix=f"{django_settings.REDIS_KEY_PREFIX}:sendrate")
    try:
        limit = quotas._current_limit()
        assert limit is not None
        grant = await other.reserve(uid, limit, 0.0)
        assert not grant.admitted and grant.retry_after_s is not None
    finally:
        await other.aclose()


async def test_heartbeat_task_starts_with_redis_and_stops_on_close() -> None:
    class FakeRedis:
        def __init__(self) -> None:
            self.beats: list[list[Any]] = []
            self.beaten = asyncio.Event()

        def register_script(self, source: str) -> Any:
            async def run(*, keys: list[str], args: list[Any]) -> Any:
                if "XX" in source:
                    self.beats.append(args)
                    self.beaten.set()
                return [1, 1]

            return run

    fake = FakeRedis()
    reg = SocketRegistry(redis=fake, heartbeat_s=0.0)
    assert await reg.open(user_id=1, socket_id="s", limit=5)
    await asyncio.wait_for(fake.beaten.wait(), 10)  # the heartbeat runs on its own (every 0 s here)
    assert fake.beats[0] == [reg._ttl_s, "s"]
    await reg.aclose()
    await reg.aclose()  # twice: fine


async def test_registry_lets_sockets_in_while_redis_is_down(caplog: pytest.LogCaptureFixture) -> None:
    from redis.exceptions import ConnectionError as RedisConnectionError

    class DownRedis:
        def register_script(self, source: str) -> Any:
            async def run(*, keys: list[str], args: list[Any]) -> Any:
                raise RedisConnectionError("connection refused")

            return run

        async def zrem(self, key: str, member: str) -> int:
            raise RedisConnectionError("connection refused")

    heartbeat_failed = asyncio.Event()

    class Watch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "heartbeat failed" in record.getMessage():
                heartbeat_failed.set()

    watch = Watch()
    logging.getLogger("threads.quotas").addHandler(watch)
    try:
        reg = SocketRegistry(redis=DownRedis(), heartbeat_s=0.0)
        assert await reg.open(user_id=1, socket_id="s", limit=1)  # admitted: a quota never blocks the chat
        await asyncio.wait_for(heartbeat_failed.wait(), 10)  # the heartbeat keeps going, and says why
        await reg.close(user_id=1, socket_id="s")
        assert "admitting the socket" in caplog.text and "frees itself later" in caplog.text
        await reg.aclose()
    finally:
        logging.getLogger("threads.quotas").removeHandler(watch)
