"""Why a WebSocket handshake is refused: in the server's log, and through GET /api/socket-check for the
page to tell the person (#22 item 3). The old code logged nothing but daphne's WSREJECT, and the page
could not tell a refusal from a server that is down."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from chatapp.origin import REFUSALS, origin_allowed, origin_refusal
from tests.chatapp.test_origin import _handshake, _session_cookie
from threads.models import Thread

PROD = ["app.example.com"]


@pytest.mark.parametrize(
    ("origin", "host", "allowed_hosts", "debug", "reason"),
    [
        ("https://app.example.com", "app.example.com", PROD, False, None),
        (None, "app.example.com", PROD, False, "origin_missing"),
        ("null", "app.example.com", PROD, False, "origin_invalid"),
        ("http://app.example.com", "app.example.com", PROD, False, "https_required"),
        ("http://192.168.1.5:8000", "192.168.1.5:8000", ["127.0.0.1"], True, "host_not_allowed"),
        ("http://192.168.1.5:8000", "192.168.1.5:8000", [], True, "host_not_allowed"),
        ("http://192.168.1.5:8000", "192.168.1.5:8000", ["192.168.1.5"], True, None),
        ("https://evil.tld", "app.example.com", PROD, False, "origin_mismatch"),
        ("https://app.example.com:8443", "app.example.com", PROD, False, "origin_mismatch"),
    ],
)
def test_origin_refusal_names_the_rule(
    origin: str | None, host: str, allowed_hosts: list[str], debug: bool, reason: str | None
) -> None:
    args: dict[str, Any] = {
        "host": host,
        "allowed_hosts": allowed_hosts,
        "trusted_origins": [],
        "debug": debug,
    }
    assert origin_refusal(origin, bearer=False, **args) == reason
    assert origin_allowed(origin, bearer=False, **args) is (reason is None)
    assert reason is None or REFUSALS[reason]


@pytest.fixture
async def thread(user: Any) -> Thread:
    return await Thread.objects.acreate(owner=user, provider="demo", model="demo-1")


@pytest.mark.django_db(transaction=True)
async def test_a_refused_handshake_is_logged_with_its_reason(
    thread: Thread, user: Any, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    settings.DEBUG = False
    settings.ALLOWED_HOSTS = PROD
    headers = [
        (b"cookie", await _session_cookie(user)),
        (b"origin", b"http://app.example.com"),
        (b"host", b"app.example.com"),
    ]
    caplog.set_level("WARNING", logger="chatapp.origin")
    assert (await _handshake(f"/ws/threads/{thread.pk}/", headers))[0] is False
    assert "WebSocket handshake refused (https_required)" in caplog.text
    assert "'http://app.example.com'" in caplog.text and "https only" in caplog.text


def _check(client: Client, **query: str) -> dict[str, Any]:
    resp = client.get("/api/socket-check", query)
    assert resp.status_code == 200 and resp["Cache-Control"] == "no-store"
    data: dict[str, Any] = resp.json()
    return data


@pytest.fixture
def page_thread(user: Any) -> Thread:
    return Thread.objects.create(owner=user, provider="demo", model="demo-1")


@pytest.mark.django_db(transaction=True)  # the view reads the thread on the async path's own thread
def test_socket_check_says_what_a_page_would_be_refused_for(
    client: Client, user: Any, other_user: Any, page_thread: Thread, settings: Any
) -> None:
    settings.DEBUG = True  # as `make run`: plain http on the page's own address
    origin = "http://testserver"
    assert _check(client, origin=origin, thread=str(page_thread.pk))["reason"]["code"] == "unauthenticated"
    client.force_login(user)
    assert _check(client, origin=origin, thread=str(page_thread.pk)) == {"ok": True, "reason": None}
    assert _check(client, origin="http://evil.tld", thread=str(page_thread.pk))["reason"]["code"] == (
        "origin_mismatch"
    )
    client.force_login(other_user)
    assert _check(client, origin=origin, thread=str(page_thread.pk))["reason"]["code"] == "not_found"
    settings.DEBUG = False
    reason = _check(client, origin=origin, thread=str(page_thread.pk))["reason"]
    assert reason == {"code": "https_required", "message": REFUSALS["https_required"]}


@pytest.mark.django_db
def test_socket_check_is_get_only(client: Client) -> None:
    resp = client.post("/api/socket-check")
    assert resp.status_code in (403, 405)  # a browser POST without a CSRF token never gets this far


@pytest.mark.django_db(transaction=True)
async def test_an_unauthenticated_handshake_is_logged(
    thread: Thread, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    settings.DEBUG = True
    caplog.set_level("WARNING", logger="threads.consumers")
    headers = [(b"origin", b"http://testserver"), (b"host", b"testserver")]
    assert (await _handshake(f"/ws/threads/{thread.pk}/", headers))[0] is False
    assert f"WebSocket handshake refused (unauthenticated): /ws/threads/{thread.pk}/" in caplog.text
