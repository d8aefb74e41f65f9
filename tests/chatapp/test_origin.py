"""WebSocket Origin checks (chatapp/origin.py): the pure decision as a table, then the validator in front
of the real ASGI application with production-like settings.

SameOriginValidator reads ALLOWED_HOSTS, CSRF_TRUSTED_ORIGINS and DEBUG on every handshake, not at
import, so overriding them with pytest-django's `settings` fixture is what a deployment with those
values would do (test_validator_reads_settings_on_every_handshake proves it).
"""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client

from chatapp.asgi import application
from chatapp.origin import origin_allowed
from threads.models import Thread

PROD = ["app.example.com"]
DEV = ["127.0.0.1", "localhost", "[::1]", "testserver"]


@pytest.mark.parametrize(
    ("origin", "bearer", "allowed_hosts", "trusted", "debug", "expected"),
    [
        # production: ALLOWED_HOSTS = ["app.example.com"], served over https on 443
        ("https://app.example.com", False, PROD, [], False, True),
        ("https://APP.Example.com", False, PROD, [], False, True),
        ("https://app.example.com:443", False, PROD, [], False, True),
        ("https://app.example.com/", False, PROD, [], False, False),  # not a serialized origin
        ("https://evil.tld", False, PROD, [], False, False),
        ("https://evil.tld", True, PROD, [], False, False),  # a Bearer header does not excuse a bad Origin
        (None, False, PROD, [], False, False),  # no Origin, cookie only: refused
        (None, True, PROD, [], False, True),  # no Origin, Bearer token: not a browser
        ("null", False, PROD, [], False, False),
        ("null", True, PROD, [], False, False),
        ("", False, PROD, [], False, False),
        ("https://app.example.com.evil.tld", False, PROD, [], False, False),
        ("https://evilapp.example.com", False, PROD, [], False, False),
        ("https://app.example.com:8443", False, PROD, [], False, False),  # wrong port
        ("https://app.example.com:", False, PROD, [], False, False),
        ("https://app.example.com:99999", False, PROD, [], False, False),
        ("https://app.example.com:x", False, PROD, [], False, False),
        ("http://app.example.com", False, PROD, [], False, False),  # wrong scheme
        ("ws://app.example.com", False, PROD, [], False, False),
        ("file://app.example.com", False, PROD, [], False, False),
        ("https://user@app.example.com", False, PROD, [], False, False),
        ("https://app.example.com?x=1", False, PROD, [], False, False),
        ("https://app.example.com#x", False, PROD, [], False, False),
        ("https://", False, PROD, [], False, False),
        # a non-default port: named by an ALLOWED_HOSTS entry, or the whole origin trusted
        ("https://app.example.com:8443", False, ["app.example.com:8443"], [], False, True),
        ("https://app.example.com", False, ["app.example.com:8443"], [], False, False),
        ("https://app.example.com:8443", False, PROD, ["https://app.example.com:8443"], False, True),
        ("https://app.example.com:8443", False, PROD, ["https://app.example.com:8443/"], False, True),
        ("https://app.example.com:9443", False, PROD, ["https://app.example.com:8443"], False, False),
        ("http://intranet:8080", False, PROD, ["http://intranet:8080"], False, True),
        # Django's patterns: subdomains, and "*"
        ("https://chat.example.com", False, [".example.com"], [], False, True),
        ("https://example.com", False, [".example.com"], [], False, True),
        ("https://badexample.com", False, [".example.com"], [], False, False),
        ("https://anything.tld", False, ["*"], [], False, True),
        ("https://anything.tld:8443", False, ["*"], [], False, False),
        # no ALLOWED_HOSTS: nothing outside DEBUG, loopback with DEBUG (as Django does)
        ("https://app.example.com", False, [], [], False, False),
        ("http://localhost:8000", False, [], [], True, True),
        # development (`make run`, tests/e2e): http, and any port on loopback hosts only
        ("http://127.0.0.1:8000", False, DEV, [], True, True),
        ("http://127.0.0.1:54321", False, DEV, [], True, True),
        ("http://localhost:8000", False, DEV, [], True, True),
        ("http://[::1]:8000", False, DEV, [], True, True),
        ("http://127.0.0.1:8000", False, DEV, [], False, False),  # the same without DEBUG
        ("http://evil.tld:8000", False, DEV, [], True, False),
        ("http://app.example.com:8000", False, PROD, [], True, False),  # any port: loopback only
        ("http://app.example.com", False, PROD, [], True, True),
        ("http://127.0.0.1:8000", False, PROD, [], True, False),  # loopback must still be allowed
    ],
)
def test_origin_allowed(
    origin: str | None,
    bearer: bool,
    allowed_hosts: list[str],
    trusted: list[str],
    debug: bool,
    expected: bool,
) -> None:
    got = origin_allowed(
        origin, bearer=bearer, allowed_hosts=allowed_hosts, trusted_origins=trusted, debug=debug
    )
    assert got is expected


# --- the validator in front of the application --------------------------------------------------------

transactional_db = pytest.mark.django_db(transaction=True)


@pytest.fixture
def production_hosts(settings: Any) -> None:
    settings.DEBUG = False
    settings.ALLOWED_HOSTS = ["app.example.com"]
    settings.CSRF_TRUSTED_ORIGINS = []


@pytest.fixture
async def thread(user: Any) -> Thread:
    return await sync_to_async(Thread.objects.create)(owner=user, provider="demo", model="demo-1")


async def _session_cookie(user: Any) -> bytes:
    from django.conf import settings

    client = Client()
    await sync_to_async(client.force_login)(user)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}".encode()


async def _handshake(path: str, headers: list[tuple[bytes, bytes]]) -> tuple[bool, Any]:
    comm = WebsocketCommunicator(application, path, headers=headers)
    ok, code = await comm.connect(timeout=10)
    if ok:
        assert (await comm.receive_json_from(timeout=10))["type"] == "snapshot"
        await comm.disconnect()
    return ok, code


@transactional_db
@pytest.mark.both
@pytest.mark.usefixtures("production_hosts")
@pytest.mark.parametrize(
    ("origin", "auth", "accepted"),
    [
        ("https://app.example.com", "session", True),
        ("https://app.example.com", "token", True),
        (None, "token", True),
        (None, "session", False),
        ("https://evil.tld", "session", False),
        ("https://evil.tld", "token", False),
        ("null", "session", False),
        ("https://app.example.com.evil.tld", "session", False),
        ("https://app.example.com:8443", "session", False),
        ("http://app.example.com", "session", False),
    ],
)
async def test_handshake_origin(
    thread: Thread, user: Any, token: str, origin: str | None, auth: str, accepted: bool
) -> None:
    headers = [(b"cookie", await _session_cookie(user))] if auth == "session" else []
    if auth == "token":
        headers.append((b"authorization", f"Bearer {token}".encode()))
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    ok, code = await _handshake(f"/ws/threads/{thread.pk}/", headers)
    assert ok is accepted, code
    if not accepted:
        assert code == 1000  # refused by the validator before any consumer (a 403 to a real client)


@transactional_db
@pytest.mark.usefixtures("production_hosts")
async def test_validator_reads_settings_on_every_handshake(thread: Thread, token: str, settings: Any) -> None:
    headers = [(b"authorization", f"Bearer {token}".encode()), (b"origin", b"https://app.example.com:8443")]
    assert (await _handshake(f"/ws/threads/{thread.pk}/", headers))[0] is False
    settings.CSRF_TRUSTED_ORIGINS = ["https://app.example.com:8443"]
    assert (await _handshake(f"/ws/threads/{thread.pk}/", headers))[0] is True


# --- the handshake's own Host -------------------------------------------------------------------------
# A browser always sends Host: the Origin must name it (as Django's CSRF check compares Origin with
# the request's host), whatever patterns ALLOWED_HOSTS holds; other origins only through
# CSRF_TRUSTED_ORIGINS (exact, or Django's `https://*.example.com`).


@pytest.mark.parametrize(
    ("origin", "host", "allowed_hosts", "trusted", "debug", "expected"),
    [
        ("https://app.example.com", "app.example.com", ["*"], [], False, True),
        ("https://evil.tld", "app.example.com", ["*"], [], False, False),
        ("https://evil.tld", "evil.tld", PROD, [], False, False),  # a Host we do not serve (rebinding)
        ("https://app.example.com", "evil.tld", PROD, [], False, False),
        ("https://chat.example.com", "chat.example.com", [".example.com"], [], False, True),
        ("https://other.example.com", "chat.example.com", [".example.com"], [], False, False),
        ("https://APP.example.com", "app.EXAMPLE.com", PROD, [], False, True),
        ("https://app.example.com", "app.example.com:443", PROD, [], False, True),
        ("https://app.example.com:8443", "app.example.com:8443", PROD, [], False, True),
        ("https://app.example.com:8443", "app.example.com", PROD, [], False, False),
        ("https://app.example.com", "app.example.com:8443", PROD, [], False, False),
        ("http://app.example.com", "app.example.com", PROD, [], False, False),  # http outside DEBUG
        ("null", "app.example.com", PROD, [], False, False),
        ("https://app.example.com/", "app.example.com", PROD, [], False, False),
        ("https://app.example.com", "", PROD, [], False, False),
        ("https://app.example.com", "app.example.com:bad", PROD, [], False, False),
        ("https://admin.example.com", "app.example.com", PROD, ["https://admin.example.com"], False, True),
        ("https://a.example.com", "app.example.com", PROD, ["https://*.example.com"], False, True),
        ("https://example.com.evil.tld", "app.example.com", PROD, ["https://*.example.com"], False, False),
        ("http://a.example.com", "app.example.com", PROD, ["https://*.example.com"], False, False),
        # development: http, the page's own port (tests/e2e: random ports)
        ("http://127.0.0.1:54321", "127.0.0.1:54321", DEV, [], True, True),
        ("http://localhost:8000", "localhost:8000", [], [], True, True),
        ("http://localhost:8000", "localhost:9000", DEV, [], True, False),
        ("http://evil.tld:8000", "127.0.0.1:8000", DEV, [], True, False),
    ],
)
def test_origin_must_name_the_handshakes_host(
    origin: str, host: str, allowed_hosts: list[str], trusted: list[str], debug: bool, expected: bool
) -> None:
    got = origin_allowed(
        origin, bearer=False, host=host, allowed_hosts=allowed_hosts, trusted_origins=trusted, debug=debug
    )
    assert got is expected


@transactional_db
@pytest.mark.both
@pytest.mark.parametrize(
    ("allowed_hosts", "origin", "accepted"),
    [
        (["*"], "https://evil.tld", False),
        ([".example.com"], "https://attacker.example.com", False),
        (["*"], "https://app.example.com", True),
        ([".example.com"], "https://app.example.com", True),
    ],
)
async def test_wide_allowed_hosts_admit_only_the_handshakes_own_origin(
    thread: Thread, user: Any, settings: Any, allowed_hosts: list[str], origin: str, accepted: bool
) -> None:
    settings.DEBUG = False
    settings.ALLOWED_HOSTS = allowed_hosts
    settings.CSRF_TRUSTED_ORIGINS = []
    headers = [
        (b"host", b"app.example.com"),
        (b"cookie", await _session_cookie(user)),
        (b"origin", origin.encode()),
    ]
    assert (await _handshake(f"/ws/threads/{thread.pk}/", headers))[0] is accepted
