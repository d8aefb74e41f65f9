"""The API stack's own security decisions (chatapp/middleware.py), as tables; the stack itself is tested
through the ASGI application in test_api_handler.py."""

from __future__ import annotations

import pytest

from chatapp.middleware import host_allowed, https_verdict


@pytest.mark.parametrize(
    ("secure", "ssl_redirect", "method", "expected"),
    [
        (True, True, "POST", "ok"),
        (False, False, "POST", "ok"),
        (False, True, "GET", "redirect"),
        (False, True, "HEAD", "redirect"),
        (False, True, "POST", "refuse"),
        (False, True, "DELETE", "refuse"),
        (False, True, "OPTIONS", "refuse"),
    ],
)
def test_https_verdict(secure: bool, ssl_redirect: bool, method: str, expected: str) -> None:
    assert https_verdict(secure=secure, ssl_redirect=ssl_redirect, method=method) == expected


@pytest.mark.parametrize(
    ("host", "allowed", "debug", "expected"),
    [
        ("chat.example.com", ("chat.example.com",), False, True),
        ("chat.example.com:8443", ("chat.example.com",), False, True),  # Django ignores the port
        ("CHAT.example.com", ("chat.example.com",), False, True),
        ("evil.example", ("chat.example.com",), False, False),
        ("chat.example.com.evil.tld", ("chat.example.com",), False, False),
        ("a.example.com", (".example.com",), False, True),
        ("example.com", (".example.com",), False, True),
        ("anything.tld", ("*",), False, True),
        ("a b", ("*",), False, False),  # not a host name at all
        ("chat.example.com:bad", ("*",), False, False),
        ("", ("*",), False, False),
        ("localhost:8000", (), True, True),  # DEBUG with no ALLOWED_HOSTS: Django's loopback names
        ("localhost:8000", (), False, False),
    ],
)
def test_host_allowed_follows_djangos_rule(
    host: str, allowed: tuple[str, ...], debug: bool, expected: bool
) -> None:
    assert host_allowed(host, allowed, debug) is expected
