"""The JSON API through the deployed ASGI application: its own lean, async-only middleware stack."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from asgiref.testing import ApplicationCommunicator
from channels.testing import HttpCommunicator
from django.conf import settings
from django.core import signals
from django.test import Client

from chatapp.asgi import application

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.both]


async def _call(
    method: str, path: str, body: Any = None, headers: list[tuple[bytes, bytes]] | None = None
) -> Any:
    raw = json.dumps(body).encode() if body is not None else b""
    hdrs = [(b"content-type", b"application/json"), (b"host", b"testserver"), *(headers or [])]
    comm = HttpCommunicator(application, method, path, body=raw, headers=hdrs)
    resp = await comm.get_response(timeout=15)
    # As a server would: tell the app the client went away, and let it finish (it closes the body).
    await comm.send_input({"type": "http.disconnect"})
    await comm.wait(timeout=5)
    resp["json"] = json.loads(resp["body"]) if resp["body"] else None
    resp["hdrs"] = {k.decode().lower(): v.decode() for k, v in resp["headers"]}
    return resp


async def test_token_send_through_the_lean_stack(token: str) -> None:
    auth = [(b"authorization", f"Bearer {token}".encode())]
    created = await _call("POST", "/api/threads", {"title": "lean"}, auth)
    assert created["status"] == 201
    assert created["hdrs"]["x-content-type-options"] == "nosniff"
    sent = await _call("POST", f"/api/threads/{created['json']['id']}/messages", {"content": "hi"}, auth)
    assert sent["status"] == 200 and sent["json"]["assistant_message"]["status"] == "complete"
    assert sent["hdrs"]["content-length"] == str(len(sent["body"]))  # whole, not chunked
    assert (await _call("GET", "/api/threads"))["status"] == 401


async def test_session_callers_are_authenticated_and_csrf_checked(user: Any) -> None:
    client = Client()
    await sync_to_async(client.force_login)(user)
    session = client.cookies[settings.SESSION_COOKIE_NAME].value
    cookie = [(b"cookie", f"{settings.SESSION_COOKIE_NAME}={session}".encode())]
    assert (await _call("GET", "/api/threads", headers=cookie))["status"] == 200
    refused = await _call("POST", "/api/threads", {}, cookie)
    assert refused["status"] == 403 and refused["json"]["error"]["code"] == "csrf_failed"
    token = "a" * 32
    with_csrf = [
        (
            b"cookie",
            f"{settings.SESSION_COOKIE_NAME}={session}; {settings.CSRF_COOKIE_NAME}={token}".encode(),
        ),
        (b"x-csrftoken", token.encode()),
        (b"origin", b"http://testserver"),
    ]
    assert (await _call("POST", "/api/threads", {}, with_csrf))["status"] == 201


async def test_requests_reuse_a_few_sync_threads_instead_of_starting_their_own(token: str) -> None:
    """Django's handler starts (and joins) a thread per request for its thread-sensitive calls; the
    API handler runs them on a few long-lived threads."""
    auth = [(b"authorization", f"Bearer {token}".encode())]
    await _call("GET", "/api/threads", headers=auth)  # the executors' threads exist from here on
    started: list[str] = []
    original = threading.Thread.start

    def spy(self: threading.Thread) -> None:
        started.append(self.name)
        original(self)

    threading.Thread.start = spy  # type: ignore[method-assign]
    try:
        for _ in range(20):
            assert (await _call("GET", "/api/threads", headers=auth))["status"] == 200
    finally:
        threading.Thread.start = original  # type: ignore[method-assign]
    assert len(started) < 10, started


async def test_request_signals_are_sent_inline_without_a_thread_hop(token: str) -> None:
    """Django's handler sends request_started / request_finished through sync_to_async (a thread hop
    each); the API handler sends them on the event loop's thread (their receivers do no I/O there),
    request_finished once the answers have left (core/later.py)."""
    import asyncio

    seen: list[tuple[str, str]] = []
    ended = asyncio.Event()

    def started(**kwargs: Any) -> None:
        seen.append(("started", threading.current_thread().name))

    def finished(**kwargs: Any) -> None:
        seen.append(("finished", threading.current_thread().name))
        ended.set()

    signals.request_started.connect(started)
    signals.request_finished.connect(finished)
    try:
        auth = [(b"authorization", f"Bearer {token}".encode())]
        assert (await _call("GET", "/api/threads", headers=auth))["status"] == 200
        await asyncio.wait_for(ended.wait(), 5)
    finally:
        signals.request_started.disconnect(started)
        signals.request_finished.disconnect(finished)
    here = threading.current_thread().name
    assert seen == [("started", here), ("finished", here)]


async def test_an_unknown_or_missing_session_is_401(user: Any) -> None:
    for cookie in ([(b"cookie", f"{settings.SESSION_COOKIE_NAME}=no-such-session".encode())], []):
        resp = await _call("GET", "/api/threads", headers=cookie)
        assert resp["status"] == 401 and resp["json"]["error"]["code"] == "unauthenticated"


async def test_a_request_is_freed_without_the_garbage_collector(user: Any) -> None:
    """`request.auser` holds its request weakly: no reference cycle per API request."""
    import gc
    import weakref

    from django.test import RequestFactory

    from chatapp.middleware import AsyncSessionAuthMiddleware

    async def view(request: Any) -> Any:
        return await request.auser()

    request = RequestFactory().get("/api/threads")
    user_seen: Any = await AsyncSessionAuthMiddleware(view)(request)
    assert user_seen.is_anonymous  # no session cookie
    ref = weakref.ref(request)
    gc.disable()
    try:
        del request
        assert ref() is None
    finally:
        gc.enable()


async def _raw(
    method: str, path: str, *, scheme: str = "http", host: bytes = b"testserver", token: str | None = None
) -> Any:
    """One request with the scope's scheme and Host chosen (HttpCommunicator sets neither)."""
    headers = [(b"host", host)]
    if token:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    if method == "POST":
        headers.append((b"content-type", b"application/json"))
    scope = {
        "type": "http",
        "http_version": "1.1",
        "method": method,
        "scheme": scheme,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
    }
    comm = ApplicationCommunicator(application, scope)
    await comm.send_input({"type": "http.request", "body": b"{}" if method == "POST" else b""})
    start = await comm.receive_output(timeout=15)
    body = await comm.receive_output(timeout=15)
    await comm.send_input({"type": "http.disconnect"})
    await comm.wait(timeout=5)
    hdrs = {k.decode().lower(): v.decode() for k, v in start["headers"]}
    is_json = hdrs.get("content-type", "").startswith("application/json") and body["body"]
    return {"status": start["status"], "hdrs": hdrs, "json": json.loads(body["body"]) if is_json else None}


@pytest.mark.parametrize(
    "host", [b"evil.example", b"testserver:bad-port", b"a b", b"testserver.evil.example"]
)
@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_a_host_not_in_allowed_hosts_is_a_json_400(method: str, host: bytes, token: str) -> None:
    """As Django's stack does for pages (through CommonMiddleware), but JSON."""
    resp = await _raw(method, "/api/threads", host=host, token=token)
    assert resp["status"] == 400 and resp["json"]["error"]["code"] == "invalid_host", resp
    assert "evil" not in resp["json"]["error"]["message"]  # the answer does not echo the header
    assert resp["hdrs"]["x-content-type-options"] == "nosniff"


async def test_plain_http_under_secure_ssl_redirect(token: str, settings: Any) -> None:
    """SecurityMiddleware redirects pages; the API redirects reads the same way and refuses writes,
    whose body (and token) already crossed the network in clear and would be lost by a redirect."""
    settings.SECURE_SSL_REDIRECT = True
    read = await _raw("GET", "/api/threads", token=token)
    assert read["status"] == 301 and read["hdrs"]["location"] == "https://testserver/api/threads"
    write = await _raw("POST", "/api/threads", token=token)
    assert write["status"] == 400 and write["json"]["error"]["code"] == "https_required"
    assert (await _raw("GET", "/api/threads", scheme="https", token=token))["status"] == 200
    assert (await _raw("POST", "/api/threads", scheme="https", token=token))["status"] == 201
    settings.SECURE_SSL_REDIRECT = False
    assert (await _raw("POST", "/api/threads", token=token))["status"] == 201


@pytest.mark.parametrize("path", ["/api/metrics", "/api/no-such-endpoint"])
async def test_a_bad_host_elsewhere_under_api_is_json_too(path: str) -> None:
    """Routes under /api/ outside the lean handler go through Django's stack: its 400 answers JSON."""
    resp = await _raw("GET", path, host=b"evil.example")
    assert resp["status"] == 400 and resp["json"]["error"]["code"] == "invalid_host", resp


async def test_a_bad_host_on_a_page_is_djangos_400() -> None:
    resp = await _raw("GET", "/accounts/login/", host=b"evil.example")
    assert resp["status"] == 400 and resp["json"] is None


class _HeldView:
    """A handler whose view waits until released, noting the task it ran in and whether it was
    cancelled (the disconnect rules of Django's handler, kept with the view in the handler's task)."""

    def __init__(self) -> None:
        import asyncio

        from django.http import JsonResponse

        from chatapp.asgi import ApiASGIHandler

        self.release = asyncio.Event()
        self.started = asyncio.Event()
        self.task: Any = None
        self.cancelled = False
        held = self

        class Handler(ApiASGIHandler):
            async def run_get_response(self, request: Any) -> Any:
                held.task = asyncio.current_task()
                held.started.set()
                try:
                    await held.release.wait()
                except asyncio.CancelledError:
                    held.cancelled = True
                    raise
                return JsonResponse({"ok": True})

        self.app = Handler()

    def communicator(self, method: str = "GET", path: str = "/api/threads") -> ApplicationCommunicator:
        scope = {
            "type": "http",
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "headers": [(b"host", b"testserver")],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 80),
        }
        return ApplicationCommunicator(self.app, scope)


async def _started(
    held: _HeldView, method: str = "GET", path: str = "/api/threads"
) -> ApplicationCommunicator:
    import asyncio

    comm = held.communicator(method, path)
    await comm.send_input({"type": "http.request", "body": b""})
    await asyncio.wait_for(held.started.wait(), 5)
    return comm


async def test_the_view_runs_in_the_handlers_own_task() -> None:
    """No second task per request: on a burst every task and wait was one more turn of a crowded loop
    on the leader's way to the provider (benchmarks/coalesce_bench.py). Fails on the old handler."""
    held = _HeldView()
    comm = await _started(held)
    assert held.task is comm.future
    held.release.set()
    assert (await comm.receive_output(timeout=5))["status"] == 200
    await comm.send_input({"type": "http.disconnect"})
    await comm.wait(timeout=5)


async def test_a_disconnect_while_the_view_runs_cancels_it_and_the_request_ends_quietly() -> None:
    finished: list[bool] = []

    def on_finished(**kwargs: Any) -> None:
        finished.append(True)

    held = _HeldView()
    signals.request_finished.connect(on_finished)
    try:
        comm = await _started(held)
        await comm.send_input({"type": "http.disconnect"})
        await comm.wait(timeout=5)  # raises if the handler did
    finally:
        signals.request_finished.disconnect(on_finished)
    assert held.cancelled and finished == [True]
    assert await comm.receive_nothing()  # nothing was answered to a client that left


async def test_the_servers_own_cancel_is_not_taken_for_a_disconnect() -> None:
    import asyncio

    held = _HeldView()
    comm = await _started(held)
    comm.future.cancel()
    with pytest.raises(asyncio.CancelledError):
        await comm.future
    assert held.cancelled


async def test_a_message_no_client_may_send_after_the_body_is_an_error() -> None:
    held = _HeldView()
    comm = await _started(held)
    await comm.send_input({"type": "http.request", "body": b"more"})
    with pytest.raises(AssertionError, match="Invalid ASGI message"):
        await comm.wait(timeout=5)
    assert held.cancelled


async def test_a_send_waits_while_the_first_send_to_its_thread_is_on_its_way() -> None:
    """Leader first (threads/sendgate.py): the view here never lets go of the turn, so the second send
    to thread 5 starts when the first request ends; a send to thread 6 does not wait."""
    import asyncio

    first, second, elsewhere = _HeldView(), _HeldView(), _HeldView()
    comm1 = await _started(first, "POST", "/api/threads/5/messages")
    comm2 = second.communicator("POST", "/api/threads/5/messages")
    await comm2.send_input({"type": "http.request", "body": b""})
    await _started(elsewhere, "POST", "/api/threads/6/messages")
    for _ in range(20):
        await asyncio.sleep(0)
    assert second.task is None
    first.release.set()
    assert (await comm1.receive_output(timeout=5))["status"] == 200
    await asyncio.wait_for(second.started.wait(), 5)
    second.release.set()
    elsewhere.release.set()
    assert (await comm2.receive_output(timeout=5))["status"] == 200


async def test_answers_ready_together_all_leave_before_any_requests_bookkeeping(monkeypatch: Any) -> None:
    """When a burst's generation ends, the processes answer their followers at once. Each answer leaves
    before any bookkeeping (the Prometheus middleware's counters, request_finished), which waits for its
    batch (core/later.py), even once the requests have ended: on the same cores, it would take CPU from
    the answers still leaving. Fails on the handler that ran it in the next turn of the loop."""
    import asyncio

    from django.http import JsonResponse

    from chatapp.asgi import ApiASGIHandler
    from core import later
    from ops import prometheus

    monkeypatch.setattr(later, "DELAY_S", 0.05)

    log: list[str] = []
    release, all_waiting = asyncio.Event(), asyncio.Event()
    waiting = []

    class Handler(ApiASGIHandler):
        async def _get_response_async(self, request: Any) -> Any:  # the view, inside the middleware
            waiting.append(request)
            if len(waiting) == 3:
                all_waiting.set()
            await release.wait()
            return JsonResponse({"ok": True})

    for cls in (prometheus.PrometheusBeforeMiddleware, prometheus.PrometheusAfterMiddleware):
        counted = cls.process_response

        def counting(self: Any, request: Any, response: Any, counted: Any = counted) -> Any:
            log.append("counted")
            return counted(self, request, response)

        monkeypatch.setattr(cls, "process_response", counting)

    kept = asyncio.Event()

    def finished(**kwargs: Any) -> None:
        log.append("finished")
        if log.count("finished") == 3:
            kept.set()

    handler = Handler()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        async def noting(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.body":
                log.append("answered")
            await send(message)

        await handler(scope, receive, noting)

    comms = []
    for _ in range(3):
        comm = ApplicationCommunicator(app, _HeldView().communicator().scope)
        await comm.send_input({"type": "http.request", "body": b""})
        comms.append(comm)
    await asyncio.wait_for(all_waiting.wait(), 5)
    signals.request_finished.connect(finished)
    try:
        release.set()
        for comm in comms:
            assert (await comm.receive_output(timeout=5))["status"] == 200
            await comm.receive_output(timeout=5)
            await comm.send_input({"type": "http.disconnect"})
            await comm.wait(timeout=5)
        assert log == ["answered"] * 3  # the requests have ended; their bookkeeping waits
        assert later.pending() == 9
        await asyncio.wait_for(kept.wait(), 5)
    finally:
        signals.request_finished.disconnect(finished)
    assert sorted(log[3:]) == ["counted"] * 6 + ["finished"] * 3


async def test_a_deferred_record_observes_the_latency_at_the_answer(monkeypatch: Any) -> None:
    """record_after_the_answer runs the record later, but the latency it sees is the one at the answer:
    the time it waited behind the turn's other answers is not counted."""
    import asyncio

    from django.test import RequestFactory

    from ops import prometheus

    now = [100.0]
    monkeypatch.setattr(prometheus, "default_timer", lambda: now[0])
    request = RequestFactory().get("/api/threads")
    request.started = 99.0  # type: ignore[attr-defined]
    seen: list[float] = []
    recorded = asyncio.Event()

    def record(req: Any, resp: Any) -> None:
        seen.append(now[0] - req.started)
        recorded.set()

    prometheus.record_after_the_answer(record, request, None, "started")  # type: ignore[arg-type]
    now[0] += 0.2  # the turn's other answers, before the record runs
    await asyncio.wait_for(recorded.wait(), 5)
    assert seen == [1.0]
