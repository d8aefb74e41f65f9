"""The request-body cap (chatapp/bodylimit.py) through the deployed ASGI application: checked before
Django reads or parses the body, also when Content-Length is missing (chunked) or lies."""

from __future__ import annotations

import json
from typing import Any

import pytest
from asgiref.testing import ApplicationCommunicator

from chatapp.asgi import application
from chatapp.bodylimit import BodyLimitMiddleware
from tests.asgi_http import asgi_request

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.both]

LIMIT = 1000


@pytest.fixture(autouse=True)
def _limit(settings: Any) -> None:
    settings.MAX_BODY_BYTES = LIMIT
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = LIMIT


@pytest.fixture
def user(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user(username="alice")  # no password: no hashing cost


def _title_body(size: int) -> bytes:
    """A thread-create body of exactly `size` bytes."""
    head = b'{"title": "'
    return head + b"t" * (size - len(head) - 2) + b'"}'


def _too_large(resp: Any) -> None:
    assert resp.status == 413 and resp.headers["content-type"] == "application/json"
    assert resp.json()["error"]["code"] == "body_too_large"
    assert resp.headers["connection"] == "close"


async def test_a_body_at_the_limit_passes_one_over_it_is_413(token: str, settings: Any) -> None:
    settings.MAX_TITLE_CHARS = 200
    headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
    padded = b'{"title": "ok"}' + b" " * (LIMIT - 15)  # JSON allows trailing whitespace
    assert len(padded) == LIMIT
    assert (await asgi_request("POST", "/api/threads", body=padded, headers=headers)).status == 201
    _too_large(await asgi_request("POST", "/api/threads", body=padded + b" ", headers=headers))


async def test_announced_too_large_is_refused_before_reading(token: str) -> None:
    """The header alone decides: nothing of the body is sent, the answer comes at once."""
    scope_headers = [
        (b"host", b"testserver"),
        (b"authorization", f"Bearer {token}".encode()),
        (b"content-length", str(10 * LIMIT).encode()),
    ]
    comm = ApplicationCommunicator(
        application,
        {
            "type": "http",
            "method": "POST",
            "path": "/api/threads",
            "query_string": b"",
            "headers": scope_headers,
        },
    )
    start = await comm.receive_output(5)  # no http.request sent at all
    assert start["status"] == 413
    body = await comm.receive_output(5)
    assert json.loads(body["body"])["error"]["code"] == "body_too_large"
    await comm.wait(5)


async def test_chunked_body_without_content_length_is_counted(token: str) -> None:
    headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
    _too_large(
        await asgi_request(
            "POST", "/api/threads", chunks=[b"{" + b" " * 600, b" " * 600 + b"}"], headers=headers
        )
    )
    ok = await asgi_request("POST", "/api/threads", chunks=[b'{"title":', b' "chunks"}'], headers=headers)
    assert ok.status == 201 and ok.json()["title"] == "chunks"


async def test_content_length_that_lies_low_is_still_capped(token: str) -> None:
    headers = {"authorization": f"Bearer {token}", "content-type": "application/json", "content-length": "10"}
    _too_large(
        await asgi_request("POST", "/api/threads", body=b"{" + b" " * (2 * LIMIT) + b"}", headers=headers)
    )


async def test_pages_get_plain_text_not_json() -> None:
    resp = await asgi_request("POST", "/accounts/login/", body=b"x" * (LIMIT + 1))
    assert resp.status == 413 and resp.headers["content-type"].startswith("text/plain")
    resp = await asgi_request("POST", "/accounts/login/", body=b"x", headers={"content-length": "nope"})
    assert resp.status == 400 and b"Content-Length" in resp.body


async def test_other_scopes_pass_through() -> None:
    seen: list[str] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    async def unused_receive() -> Any:
        raise AssertionError("a lifespan scope is not read here")

    async def unused_send(message: Any) -> None:
        raise AssertionError("nor answered")

    await BodyLimitMiddleware(inner)({"type": "lifespan"}, unused_receive, unused_send)
    assert seen == ["lifespan"]


async def test_query_string_that_is_not_utf8_is_a_json_400(token: str) -> None:
    resp = await asgi_request(
        "GET", "/api/threads", query=b"before=\x80", headers={"authorization": f"Bearer {token}"}
    )
    assert resp.status == 400 and resp.json()["error"]["code"] == "invalid_query_string"
