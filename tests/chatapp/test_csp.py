"""Content-Security-Policy (chatapp/csp.py): every HTML page sends it, it allows no inline script, and
no page relies on inline script, event-handler attributes or style attributes (which it would block)."""

from __future__ import annotations

import re
from collections.abc import Awaitable
from typing import Any, cast

import pytest
from asgiref.sync import sync_to_async
from csp.utils import build_policy
from django.test import AsyncClient, Client

from chatapp.csp import socket_sources
from threads.models import Message, Thread

pytestmark = pytest.mark.django_db(transaction=True)

SCRIPT = re.compile(r"<script\b([^>]*)>(.*?)</script\s*>", re.I | re.S)
TAG = re.compile(r"<[a-z][^>]*>", re.I | re.S)
HANDLER_ATTR = re.compile(r"\son[a-z]+\s*=", re.I)
STYLE_ATTR = re.compile(r"\sstyle\s*=", re.I)


def _directives(header: str) -> dict[str, list[str]]:
    parts = [p.split() for p in header.split(";") if p.strip()]
    return {p[0]: p[1:] for p in parts}


def assert_strict_page(resp: Any) -> None:
    assert resp["Content-Type"].startswith("text/html")
    policy = _directives(resp["Content-Security-Policy"])
    assert policy["script-src"] == ["'self'"] and policy["style-src"] == ["'self'"]
    assert policy["object-src"] == ["'none'"] and policy["frame-ancestors"] == ["'none'"]
    assert "'unsafe-inline'" not in resp["Content-Security-Policy"]
    assert "'unsafe-eval'" not in resp["Content-Security-Policy"]
    html = resp.content.decode()
    for attrs, body in SCRIPT.findall(html):
        # External scripts, or JSON data blocks (json_script), which browsers never execute.
        assert "src=" in attrs or 'type="application/json"' in attrs, attrs
        assert "src=" not in attrs or not body.strip()
    for tag in TAG.findall(html):
        assert not HANDLER_ATTR.search(tag), tag
        assert not STYLE_ATTR.search(tag), tag


@pytest.fixture
def thread(user: Any) -> Thread:
    t = Thread.objects.create(owner=user, provider="demo", model="demo-1", title="CSP")
    Message.objects.create(thread=t, role="user", content="Say <b>hi</b>", status="complete", request_id="r1")
    Message.objects.create(
        thread=t,
        role="assistant",
        content="**hi** `code`\n\n```py\nprint(1)\n```",
        status="complete",
        request_id="r1",
    )
    return t


@pytest.mark.parametrize(
    ("who", "path", "status"),
    [
        ("anonymous", "/accounts/login/", 200),
        ("anonymous", "/accounts/signup/", 200),
        ("anonymous", "/accounts/password/reset/", 200),
        ("user", "/accounts/settings/", 200),
        ("user", "/accounts/2fa/", 200),
        ("anonymous", "/no-such-page/", 404),
        ("user", "/", 200),
        ("user", "/threads/{thread}/", 200),
        ("user", "/threads/999999/", 404),
        ("staff", "/staff/dashboard/", 200),
        ("staff", "/admin/", 200),
        ("staff", "/admin/accounts/apitoken/", 200),
        ("staff", "/admin/ops/featureflag/", 200),
    ],
)
def test_pages_send_a_strict_policy_and_have_no_inline_script(
    client: Client, user: Any, admin_user: Any, thread: Thread, who: str, path: str, status: int
) -> None:
    if who != "anonymous":
        client.force_login(user if who == "user" else admin_user)
    resp = client.get(path.format(thread=thread.pk))
    assert resp.status_code == status
    assert_strict_page(resp)


async def test_async_stack_sends_it_too(user: Any) -> None:
    client = AsyncClient()
    await sync_to_async(client.force_login)(user)
    assert_strict_page(await client.get("/"))


def test_json_answers_get_no_policy(client: Client) -> None:
    resp = client.get("/healthz")
    assert resp["Content-Type"].startswith("application/json")
    assert "Content-Security-Policy" not in resp


def test_websocket_url_of_the_host_is_allowed(client: Client, user: Any) -> None:
    client.force_login(user)
    plain = _directives(client.get("/", headers={"host": "127.0.0.1:8000"})["Content-Security-Policy"])
    assert plain["connect-src"] == ["'self'", "ws://127.0.0.1:8000"]
    secure = _directives(client.get("/", secure=True)["Content-Security-Policy"])
    assert secure["connect-src"] == ["'self'", "wss://testserver"]


@pytest.mark.parametrize(
    ("host", "secure", "connect"),
    [
        ("app.example.com", True, ["'self'", "wss://app.example.com"]),
        ("127.0.0.1:8000", False, ["'self'", "ws://127.0.0.1:8000"]),
        (None, True, ["'self'"]),
    ],
)
def test_csp_header(host: str | None, secure: bool, connect: list[str]) -> None:
    # django-csp does not keep the directives' order (it is not meaningful): compare them by name.
    policy = _directives(build_policy(update=socket_sources(host=host, secure=secure)))
    assert policy["default-src"] == policy["script-src"] == policy["style-src"] == ["'self'"]
    assert policy["connect-src"] == connect


def test_disallowed_host_still_gets_a_policy(client: Client, settings: Any) -> None:
    settings.ALLOWED_HOSTS = ["app.example.com"]
    resp = client.get("/accounts/login/", headers={"host": "evil.tld"})
    assert resp.status_code == 400
    assert _directives(resp["Content-Security-Policy"])["connect-src"] == ["'self'"]


async def test_the_async_path_takes_no_thread_hop(monkeypatch: pytest.MonkeyPatch) -> None:
    import django.utils.deprecation
    from django.http import HttpResponse
    from django.test import RequestFactory

    from chatapp.csp import ContentSecurityPolicyMiddleware

    def no_hop(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("CSP hooks ran through sync_to_async")

    async def page(request: Any) -> HttpResponse:
        return HttpResponse("<p>hi</p>", content_type="text/html")

    monkeypatch.setattr(django.utils.deprecation, "sync_to_async", no_hop)
    response = await cast(Awaitable[Any], ContentSecurityPolicyMiddleware(page)(RequestFactory().get("/")))
    assert _directives(response["Content-Security-Policy"])["connect-src"] == ["'self'", "ws://testserver"]
