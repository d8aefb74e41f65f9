"""Real dependency faults against real daphne processes: a Redis of the test's own that is down at start,
killed mid-stream and restarted; a database that is not there; a server process killed mid-stream.
Every failure is a clear 503 (JSON) or an `error` frame and a clean close, never a 500; nothing stays
`streaming`; the service recovers without a restart."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from providers.fake.server import ThreadedFakeServer
from tests.needs import program
from tests.servers import DaphneServer, daphne_servers, free_port, wait_until
from threads.models import Message

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

TIMEOUT = 20.0
TERMINAL = {"message.done", "message.cancelled", "message.error"}


class RedisProcess:
    """A redis-server of this test only, on a free port, with no persistence (a restart starts empty,
    like a crashed cache). Never the shared 6379."""

    def __init__(self) -> None:
        self.binary = program("redis-server", "apt-get install redis-server")
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def _answers(self) -> bool:
        try:
            return bool(redis.Redis(port=self.port, socket_timeout=1).ping())
        except redis.RedisError:
            return False

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(self._answers, timeout=10, interval=0.05)

    def kill(self) -> None:
        """SIGKILL: connections are reset, as when Redis crashes or its host goes away."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None


@pytest.fixture
def own_redis() -> Iterator[RedisProcess]:
    server = RedisProcess()
    try:
        yield server
    finally:
        server.kill()


def _ws(server: DaphneServer, thread_id: int, auth: dict[str, str]) -> ClientConnection:
    url = server.base_url.replace("http://", "ws://") + f"/ws/threads/{thread_id}/"
    return connect(url, additional_headers=auth, open_timeout=TIMEOUT)


def _frames_until_end(
    ws: ClientConnection, *, timeout: float = TIMEOUT
) -> tuple[list[dict[str, Any]], int | None]:
    """Frames until a terminal event, an `error` frame or the close; (frames, close code or None)."""
    frames: list[dict[str, Any]] = []
    try:
        while True:
            frame = json.loads(ws.recv(timeout=timeout))
            frames.append(frame)
            if frame["type"] in TERMINAL or frame["type"] == "error":
                return frames, None
    except ConnectionClosed as exc:
        return frames, exc.rcvd.code if exc.rcvd else None


def _no_500(server: DaphneServer) -> None:
    log = server.log_path.read_text(errors="replace")
    assert '" 500 ' not in log and "Exception inside application" not in log, server.log_tail(60)


def _assert_unavailable(resp: httpx.Response, code: str) -> None:
    assert resp.status_code == 503, resp.text
    assert resp.json()["error"]["code"] == code and resp.json()["error"]["message"]
    assert int(resp.headers["Retry-After"]) >= 1


def test_redis_down_at_start_is_503_then_recovers_when_it_comes_back(
    token: str, own_redis: RedisProcess
) -> None:
    auth = {"Authorization": f"Bearer {token}"}
    env = {"REDIS_URL": own_redis.url(), "DEMO_TTFT_MS": "0", "DEMO_TOKENS_PER_S": "500"}
    with daphne_servers(1, env=env, healthy=False) as (a,):
        health = httpx.get(a.url("/healthz"), timeout=TIMEOUT)
        assert health.status_code == 503
        assert health.json()["checks"]["database"] == "ok"
        assert health.json()["checks"]["channel_layer"] != "ok"
        assert health.json()["error"]["code"] == "dependency_unavailable"
        thread = httpx.post(a.url("/api/threads"), json={}, headers=auth, timeout=TIMEOUT)
        assert thread.status_code == 201, thread.text  # the database alone is enough for this
        tid = thread.json()["id"]
        send_url = a.url(f"/api/threads/{tid}/messages")
        _assert_unavailable(
            httpx.post(send_url, json={"content": "hello?"}, headers=auth, timeout=TIMEOUT),
            "dependency_unavailable",
        )
        _assert_unavailable(
            httpx.post(send_url, json={"content": "hello?", "stream": True}, headers=auth, timeout=TIMEOUT),
            "dependency_unavailable",
        )
        with _ws(a, tid, auth) as ws:
            frames, code = _frames_until_end(ws)
            assert frames and frames[-1]["type"] == "error", frames
            assert frames[-1]["error"]["code"] == "dependency_unavailable"
            _, code = _frames_until_end(ws)
            assert code == 4503  # dependency down: the page reconnects with backoff
        assert Message.objects.filter(thread_id=tid).count() == 0, "a refused send leaves no rows"

        own_redis.start()  # the same daphne, no restart
        wait_until(lambda: httpx.get(a.url("/healthz"), timeout=TIMEOUT).status_code == 200, timeout=TIMEOUT)
        resp = httpx.post(send_url, json={"content": "and now?"}, headers=auth, timeout=TIMEOUT)
        assert resp.status_code == 200, resp.text
        assert resp.json()["assistant_message"]["status"] == "complete"
        with _ws(a, tid, auth) as ws:
            snapshot = json.loads(ws.recv(timeout=TIMEOUT))
            assert snapshot["type"] == "snapshot" and len(snapshot["messages"]) == 2
        _no_500(a)


def test_redis_killed_mid_stream_ends_the_message_and_the_service_recovers(
    token: str, own_redis: RedisProcess
) -> None:
    auth = {"Authorization": f"Bearer {token}"}
    own_redis.start()
    with ThreadedFakeServer(ttft_ms=20, tps=25, tokens=100) as fake:  # a 4 s reply
        env = {
            "REDIS_URL": own_redis.url(),
            "OPENAI_BASE_URL": fake.openai_base_url,
            "OPENAI_API_KEY": "sk-test",
            "OPENAI_MODEL": "fake-model",
        }
        with daphne_servers(1, env=env) as (a,):
            tid = httpx.post(a.url("/api/threads"), json={"provider": "openai"}, headers=auth).json()["id"]
            stack = contextlib.ExitStack()
            viewers = [stack.enter_context(_ws(a, tid, auth)) for _ in range(2)]
            for ws in viewers:
                assert json.loads(ws.recv(timeout=TIMEOUT))["type"] == "snapshot"
            result: dict[str, Any] = {}

            def send() -> None:
                url = a.url(f"/api/threads/{tid}/messages")
                result["resp"] = httpx.post(
                    url, json={"content": "long one", "request_id": "rk-1"}, headers=auth, timeout=60
                )

            sse_kinds: list[str] = []
            sse_streaming = threading.Event()

            def send_streaming() -> None:  # a second sender, on Server-Sent Events
                url = a.url(f"/api/threads/{tid}/messages")
                body = {"content": "streamed one", "request_id": "rk-2", "stream": True}
                with httpx.stream("POST", url, json=body, headers=auth, timeout=60) as resp:
                    for line in resp.iter_lines():
                        if line.startswith("event: "):
                            sse_kinds.append(line.removeprefix("event: "))
                            if sse_kinds[-1] == "message.delta":
                                sse_streaming.set()

            sender = threading.Thread(target=send)
            sender.start()
            sse_sender = threading.Thread(target=send_streaming)
            sse_sender.start()
            for ws in viewers:  # streaming has begun for everyone
                while json.loads(ws.recv(timeout=TIMEOUT))["type"] != "message.delta":
                    pass
            assert sse_streaming.wait(TIMEOUT)
            own_redis.kill()
            for ws in viewers:
                frames, code = _frames_until_end(ws)
                told = [f for f in frames if f["type"] in ("error", "message.error")]
                assert told or code is not None, f"viewer neither told nor closed: {frames}"
                if code is not None:
                    assert code == 4503, code
            stack.close()
            sender.join(TIMEOUT * 2)
            assert not sender.is_alive(), "the sender hangs"
            sse_sender.join(TIMEOUT * 2)
            assert not sse_sender.is_alive(), "the streaming sender hangs"
            assert sse_kinds[-1] in ("error", "message.done", "message.error"), sse_kinds  # then the end
            assert Message.objects.filter(request_id="rk-2").count() == 2
            resp = result["resp"]
            assert resp.status_code in (200, 502, 503, 504), resp.text  # never a 500
            rows = Message.objects.filter(request_id="rk-1")
            assert rows.count() == 2, "no duplicate rows"
            assistant = rows.get(role="assistant")
            assert assistant.status in ("complete", "error"), assistant.status
            assert resp.json()["assistant_message"]["status"] == assistant.status

            own_redis.start()  # empty: every group, lease and stream entry is gone
            wait_until(
                lambda: httpx.get(a.url("/healthz"), timeout=TIMEOUT).status_code == 200, timeout=TIMEOUT
            )
            fake.configure(tps=0)
            again = httpx.post(
                a.url(f"/api/threads/{tid}/messages"),
                json={"content": "after the outage"},
                headers=auth,
                timeout=TIMEOUT,
            )
            assert again.status_code == 200, again.text
            assert again.json()["assistant_message"]["status"] == "complete"
            with _ws(a, tid, auth) as ws:
                snapshot = json.loads(ws.recv(timeout=TIMEOUT))
                shown = {m["status"] for m in snapshot["messages"] if m["role"] == "assistant"}
                assert "streaming" not in shown
                # The two sends answered the same message: sibling branches, and the snapshot holds the
                # branch shown only (#18), so every reply's status is read from the database.
                statuses = dict(
                    Message.objects.filter(thread_id=tid, role="assistant").values_list(
                        "request_id", "status"
                    )
                )
                assert statuses["rk-1"] == assistant.status and "streaming" not in statuses.values()
                assert statuses["rk-2"] in ("complete", "error")
            _no_500(a)


def test_database_down_is_503_on_healthz_and_the_api(token: str) -> None:
    auth = {"Authorization": f"Bearer {token}"}
    dead = f"postgres://postgres@127.0.0.1:{free_port()}/nothing_listens_here"
    env = {"DATABASE_URL": dead, "DB_POOL_TIMEOUT_S": "1"}
    with daphne_servers(1, env=env, healthy=False) as (a,):
        health = httpx.get(a.url("/healthz"), timeout=TIMEOUT)
        assert health.status_code == 503
        assert health.json()["checks"]["database"] != "ok"
        assert health.json()["error"]["code"] == "database_unavailable"
        _assert_unavailable(
            httpx.get(a.url("/api/threads"), headers=auth, timeout=TIMEOUT), "database_unavailable"
        )
        _assert_unavailable(
            httpx.post(
                a.url("/api/threads/1/messages"), json={"content": "x"}, headers=auth, timeout=TIMEOUT
            ),
            "database_unavailable",
        )
        with _ws(a, 1, auth) as ws:  # the handshake's token lookup itself needs the database
            frames, _ = _frames_until_end(ws)
            assert frames[-1]["type"] == "error" and frames[-1]["error"]["code"] == "database_unavailable"
            _, code = _frames_until_end(ws)
            assert code == 4503
        _no_500(a)


def test_killed_server_process_leaves_no_message_streaming(token: str) -> None:
    """A is SIGKILLed mid-stream: B's viewer is told (`interrupted`, the text so far kept), and a viewer
    of a freshly started process C gets a snapshot in which nothing is `streaming`."""
    auth = {"Authorization": f"Bearer {token}"}
    with ThreadedFakeServer(ttft_ms=20, tps=20, tokens=400) as fake:  # a 20 s reply
        env = {
            "OPENAI_BASE_URL": fake.openai_base_url,
            "OPENAI_API_KEY": "sk-test",
            "OPENAI_MODEL": "fake-model",
        }
        with daphne_servers(2, env=env) as (a, b):
            tid = httpx.post(a.url("/api/threads"), json={"provider": "openai"}, headers=auth).json()["id"]
            with _ws(b, tid, auth) as viewer:
                assert json.loads(viewer.recv(timeout=TIMEOUT))["type"] == "snapshot"

                def send() -> None:
                    url = a.url(f"/api/threads/{tid}/messages")
                    try:
                        httpx.post(
                            url,
                            json={"content": "crash me", "request_id": "kill-1"},
                            headers=auth,
                            timeout=60,
                        )
                    except httpx.HTTPError:
                        pass  # its server dies: expected

                threading.Thread(target=send, daemon=True).start()
                seen = ""
                while len(seen.split()) < 5:  # a few words in
                    frame = json.loads(viewer.recv(timeout=TIMEOUT))
                    if frame["type"] == "message.delta":
                        seen += frame["text"]
                os.kill(a.pid, signal.SIGKILL)
                frames, code = _frames_until_end(viewer, timeout=TIMEOUT)
                assert code is None and frames[-1]["type"] == "message.error", frames
                assert frames[-1]["error"]["code"] == "interrupted"
                kept = frames[-1]["message"]["content"]
                assert kept.startswith(seen) and kept, "the text streamed before the crash is kept"
            assistant = Message.objects.get(request_id="kill-1", role="assistant")
            assert assistant.status == "error" and assistant.error_code == "interrupted"
            assert assistant.content == kept
        with daphne_servers(1, env=env) as (c,), _ws(c, tid, auth) as ws:
            snapshot = json.loads(ws.recv(timeout=TIMEOUT))
            assert snapshot["type"] == "snapshot" and not snapshot["in_flight"]
            assert {m["status"] for m in snapshot["messages"]} == {"complete", "error"}
