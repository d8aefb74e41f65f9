"""Every bad input gets a 4xx JSON error (docs/api.md), over every route of the JSON API and over the
WebSocket, through the deployed ASGI application (body cap, lean API handler, routing, consumer).

Unknown fields are refused (400 `unknown_field`) rather than ignored; a body that is not JSON is 415
when it says another Content-Type and 400 `invalid_json` when it says JSON (or nothing)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from chatapp.asgi import application
from core.writebuffer import SCOPE_KEY as WRITE_BUFFER
from tests.asgi_http import Response, asgi_request
from threads.models import Thread

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.both]

MAX_CHARS = 100
MAX_BODY = 16384
MAX_FRAME = 2048
HUGE_ID = "99999999999999999999999"


@pytest.fixture(autouse=True)
def _small_limits(settings: Any) -> None:
    settings.MAX_MESSAGE_CHARS = MAX_CHARS
    settings.MAX_BODY_BYTES = MAX_BODY
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = MAX_BODY
    settings.MAX_WS_FRAME_BYTES = MAX_FRAME
    settings.MAX_TITLE_CHARS = 50


@pytest.fixture
def user(django_user_model: Any) -> Any:
    # No password: hashing one costs a fifth of a second per test, and API tokens need none.
    return django_user_model.objects.create_user(username="alice")


@pytest.fixture
def other_user(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user(username="bob")


@pytest.fixture
async def ids(user: Any, other_user: Any) -> dict[str, int]:
    mine = await sync_to_async(Thread.objects.create)(owner=user, provider="demo", model="demo-1")
    theirs = await sync_to_async(Thread.objects.create)(owner=other_user, provider="demo", model="demo-1")
    return {"tid": mine.pk, "other": theirs.pk}


def assert_json_error(resp: Response, status: int, code: str) -> None:
    assert resp.headers["content-type"].startswith("application/json"), (resp.headers, resp.body[:200])
    body = resp.json()
    assert set(body) == {"error"} and isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert (resp.status, body["error"]["code"]) == (status, code), body


J = "application/json"

# (method, path, body, content type, status, code). {tid}: the caller's thread, {other}: someone else's.
CASES: list[tuple[str, str, bytes, str | None, int, str]] = [
    # --- POST /api/threads
    ("POST", "/api/threads", b"[]", J, 400, "invalid_json"),
    ("POST", "/api/threads", b'"x"', J, 400, "invalid_json"),
    ("POST", "/api/threads", b"null", J, 400, "invalid_json"),
    ("POST", "/api/threads", b"nope", J, 400, "invalid_json"),
    ("POST", "/api/threads", b"{", J, 400, "invalid_json"),
    ("POST", "/api/threads", b"\xff\xfe{}", J, 400, "invalid_json"),
    ("POST", "/api/threads", b'{"title": "\xff"}', J, 400, "invalid_json"),  # invalid UTF-8 inside
    ("POST", "/api/threads", b"[" * 3000 + b"]" * 3000, J, 400, "invalid_json"),
    ("POST", "/api/threads", b'{"title": ' + b"9" * 4400 + b"}", J, 400, "invalid_json"),
    ("POST", "/api/threads", b'{"title": 5}', J, 400, "invalid_field"),
    ("POST", "/api/threads", b'{"title": 1e999}', J, 400, "invalid_field"),
    ("POST", "/api/threads", b'{"title": NaN}', J, 400, "invalid_field"),
    ("POST", "/api/threads", b'{"title": ["a"]}', J, 400, "invalid_field"),
    ("POST", "/api/threads", b'{"title": "' + b"t" * 51 + b'"}', J, 400, "title_too_long"),
    ("POST", "/api/threads", b'{"title": "a\\u0000b"}', J, 400, "invalid_text"),
    ("POST", "/api/threads", b'{"title": "\\ud800"}', J, 400, "invalid_text"),
    ("POST", "/api/threads", b'{"titel": "typo"}', J, 400, "unknown_field"),
    ("POST", "/api/threads", b'{"provider": 1}', J, 400, "invalid_field"),
    ("POST", "/api/threads", b'{"provider": "nope"}', J, 400, "unknown_provider"),
    ("POST", "/api/threads", b'{"model": true}', J, 400, "invalid_field"),
    ("POST", "/api/threads", b'{"model": "gpt-4o"}', J, 400, "model_not_allowed"),
    ("POST", "/api/threads", b"title=x", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
    ("POST", "/api/threads", b"{}", "text/plain", 415, "unsupported_media_type"),
    ("POST", "/api/threads", b"x" * (MAX_BODY + 1), J, 413, "body_too_large"),
    ("PUT", "/api/threads", b"{}", J, 405, "method_not_allowed"),
    ("PATCH", "/api/threads", b"{}", J, 405, "method_not_allowed"),
    # --- GET /api/threads, /api/threads/{id}, DELETE
    ("GET", "/api/threads?before=x", b"", None, 400, "invalid_cursor"),
    ("GET", "/api/threads?before=0", b"", None, 400, "invalid_cursor"),
    ("GET", "/api/threads?before=-1", b"", None, 400, "invalid_cursor"),
    ("GET", f"/api/threads?before={HUGE_ID}", b"", None, 400, "invalid_cursor"),
    ("GET", "/api/threads?before=%C2%B2", b"", None, 400, "invalid_cursor"),  # "²": isdigit() but not int
    ("GET", "/api/threads?before=", b"", None, 400, "invalid_cursor"),
    ("GET", "/api/threads/{tid}?before=x", b"", None, 400, "invalid_cursor"),
    ("GET", "/api/threads/{tid}?before=0", b"", None, 400, "invalid_cursor"),
    ("GET", f"/api/threads/{{tid}}?before={HUGE_ID}", b"", None, 400, "invalid_cursor"),
    ("GET", "/api/threads/{tid}?before=", b"", None, 400, "invalid_cursor"),
    ("GET", "/api/threads/{tid}?limit=0", b"", None, 400, "invalid_limit"),
    ("GET", "/api/threads/{tid}?limit=201", b"", None, 400, "invalid_limit"),
    ("GET", "/api/threads/{tid}?limit=x", b"", None, 400, "invalid_limit"),
    ("GET", "/api/threads/{tid}?limit=-1", b"", None, 400, "invalid_limit"),
    ("GET", f"/api/threads/{HUGE_ID}", b"", None, 404, "not_found"),
    ("GET", f"/api/threads/{2**63}", b"", None, 404, "not_found"),
    ("GET", "/api/threads/0", b"", None, 404, "not_found"),
    ("GET", "/api/threads/-1", b"", None, 404, "not_found"),
    ("GET", "/api/threads/abc", b"", None, 404, "not_found"),
    ("GET", "/api/threads/{other}", b"", None, 404, "not_found"),
    ("DELETE", f"/api/threads/{HUGE_ID}", b"", None, 404, "not_found"),
    ("DELETE", "/api/threads/{other}", b"", None, 404, "not_found"),
    ("POST", "/api/threads/{tid}", b"{}", J, 405, "method_not_allowed"),
    ("GET", "/api/nowhere", b"", None, 404, "not_found"),
    # --- POST /api/threads/{id}/messages
    ("POST", "/api/threads/{tid}/messages", b"", J, 400, "invalid_content"),
    ("POST", "/api/threads/{tid}/messages", b"{}", J, 400, "invalid_content"),
    ("POST", "/api/threads/{tid}/messages", b"[1]", J, 400, "invalid_json"),
    ("POST", "/api/threads/{tid}/messages", b'{"content": 5}', J, 400, "invalid_content"),
    ("POST", "/api/threads/{tid}/messages", b'{"content": null}', J, 400, "invalid_content"),
    ("POST", "/api/threads/{tid}/messages", b'{"content": " "}', J, 400, "invalid_content"),
    ("POST", "/api/threads/{tid}/messages", b'{"content": "a\\u0000"}', J, 400, "invalid_text"),
    ("POST", "/api/threads/{tid}/messages", b'{"content": "\\udc00"}', J, 400, "invalid_text"),
    (
        "POST",
        "/api/threads/{tid}/messages",
        b'{"content": "x", "parent_id": 1' + b"0" * 40 + b"}",
        J,
        400,
        "invalid_parent_id",
    ),
    (
        "POST",
        "/api/threads/{tid}/messages",
        b'{"content": "x", "parent_id": 9223372036854775808}',
        J,
        400,
        "invalid_parent_id",
    ),
    (
        "POST",
        "/api/threads/{tid}/messages",
        b'{"content": "x", "parent_id": 9223372036854775807}',
        J,
        400,
        "invalid_parent_id",
    ),
    (
        "POST",
        "/api/threads/{tid}/messages",
        b'{"content": "x", "parent_id": 1.5}',
        J,
        400,
        "invalid_parent_id",
    ),
    (
        "POST",
        "/api/threads/{tid}/messages",
        b'{"content": "x", "parent_id": -1}',
        J,
        400,
        "invalid_parent_id",
    ),
    (
        "POST",
        "/api/threads/{tid}/messages",
        b'{"content": "x", "parent_id": true}',
        J,
        400,
        "invalid_parent_id",
    ),
    (
        "POST",
        "/api/threads/{tid}/messages",
        b'{"content": "x", "parent_id": "3"}',
        J,
        400,
        "invalid_parent_id",
    ),
    ("POST", "/api/threads/{tid}/messages", b'{"content": "x", "stream": "yes"}', J, 400, "invalid_field"),
    ("POST", "/api/threads/{tid}/messages", b'{"content": "x", "idempotent": 0}', J, 400, "invalid_field"),
    (
        "POST",
        "/api/threads/{tid}/messages",
        b'{"content": "x", "request_id": "a b"}',
        J,
        400,
        "invalid_request_id",
    ),
    (
        "POST",
        "/api/threads/{tid}/messages",
        b'{"content": "x", "request_id": 7}',
        J,
        400,
        "invalid_request_id",
    ),
    (
        "POST",
        "/api/threads/{tid}/messages",
        b'{"content": "x", "request_id": "' + b"r" * 65 + b'"}',
        J,
        400,
        "invalid_request_id",
    ),
    ("POST", "/api/threads/{tid}/messages", b'{"content": "x", "extra": 1}', J, 400, "unknown_field"),
    (
        "POST",
        "/api/threads/{tid}/messages",
        b'{"content": "' + b"x" * (MAX_CHARS + 1) + b'"}',
        J,
        413,
        "content_too_large",
    ),
    ("POST", "/api/threads/{tid}/messages", b"<xml/>", "application/xml", 415, "unsupported_media_type"),
    ("POST", "/api/threads/{tid}/messages", b"x" * (MAX_BODY + 1), J, 413, "body_too_large"),
    ("POST", f"/api/threads/{HUGE_ID}/messages", b'{"content": "x"}', J, 404, "not_found"),
    ("POST", "/api/threads/{other}/messages", b'{"content": "x"}', J, 404, "not_found"),
    ("GET", "/api/threads/{tid}/messages", b"", None, 405, "method_not_allowed"),
    # --- POST /api/threads/cancel/{request_id}
    ("POST", "/api/threads/cancel/a%20b", b"", None, 400, "invalid_request_id"),
    ("POST", "/api/threads/cancel/" + "r" * 65, b"", None, 400, "invalid_request_id"),
    ("POST", "/api/threads/cancel/-starts-with-dash", b"", None, 400, "invalid_request_id"),
    ("POST", "/api/threads/cancel/never-sent", b"", None, 404, "not_found"),
    ("GET", "/api/threads/cancel/never-sent", b"", None, 405, "method_not_allowed"),
]


def _split(path: str, ids: dict[str, int]) -> tuple[str, bytes]:
    path = path.format(**ids)
    from urllib.parse import unquote

    raw_path, _, query = path.partition("?")
    return unquote(raw_path), query.encode()


@pytest.mark.parametrize(("method", "path", "body", "ctype", "status", "code"), CASES)
async def test_bad_http_input_is_a_json_4xx(
    method: str,
    path: str,
    body: bytes,
    ctype: str | None,
    status: int,
    code: str,
    token: str,
    ids: dict[str, int],
) -> None:
    headers = {"authorization": f"Bearer {token}"}
    if ctype:
        headers["content-type"] = ctype
    url, query = _split(path, ids)
    resp = await asgi_request(method, url, body=body, headers=headers, query=query)
    assert_json_error(resp, status, code)


# --- per-user limits that refuse only once something is spent (#16 items 1 and 2) ---------------------


async def _post_send(token: str, thread_id: int, body: dict[str, Any]) -> Response:
    headers = {"authorization": f"Bearer {token}", "content-type": J}
    path = f"/api/threads/{thread_id}/messages"
    return await asgi_request("POST", path, body=json.dumps(body).encode(), headers=headers)


async def test_a_stream_past_the_socket_cap_is_a_json_429(
    token: str, ids: dict[str, int], settings: Any
) -> None:
    settings.MAX_SOCKETS_PER_USER = 1
    comm = await _socket(ids["tid"], token)
    resp = await _post_send(token, ids["tid"], {"content": "x", "stream": True})
    assert_json_error(resp, 429, "too_many_streams")
    assert int(resp.headers["retry-after"]) >= 1
    await comm.disconnect()


async def test_replays_past_the_follower_budget_are_a_json_429(
    token: str, ids: dict[str, int], settings: Any
) -> None:
    settings.SEND_RATE_PER_MIN, settings.SEND_RATE_BURST = 6, 1  # followers and replays: 2 at once
    body = {"content": "x", "request_id": "bad-input-replay"}
    statuses = [(await _post_send(token, ids["tid"], body)).status for _ in range(3)]
    assert statuses == [200, 200, 200]
    resp = await _post_send(token, ids["tid"], body)
    assert_json_error(resp, 429, "rate_limited")
    assert int(resp.headers["retry-after"]) >= 1


async def test_followers_past_the_follower_budget_are_a_json_429(
    token: str, ids: dict[str, int], settings: Any
) -> None:
    """Identical sends with fresh request_ids follow the first (its result is reused for
    COALESCE_RESULT_TTL_S): each takes a follower's share, and past that bucket they are refused."""
    settings.SEND_RATE_PER_MIN, settings.SEND_RATE_BURST = 6, 1  # followers and replays: 2 at once
    sent = [await _post_send(token, ids["tid"], {"content": "x", "request_id": f"f-{n}"}) for n in range(3)]
    assert [r.status for r in sent] == [200, 200, 200]
    assert {r.json()["assistant_message"]["id"] for r in sent} == {sent[0].json()["assistant_message"]["id"]}
    resp = await _post_send(token, ids["tid"], {"content": "x", "request_id": "f-3"})
    assert_json_error(resp, 429, "rate_limited")
    assert int(resp.headers["retry-after"]) >= 1


@pytest.mark.parametrize(
    ("content_length", "code"),
    [
        (b"abc", "invalid_content_length"),
        (b"-5", "invalid_content_length"),
        (b"1.5", "invalid_content_length"),
    ],
)
async def test_bad_content_length_is_400(content_length: bytes, code: str, token: str) -> None:
    headers: dict[str, str | bytes] = {"authorization": f"Bearer {token}", "content-type": J}
    headers["content-length"] = content_length
    resp = await asgi_request("POST", "/api/threads", body=b"{}", headers=headers)
    assert_json_error(resp, 400, code)


async def test_boundary_values_are_accepted(token: str, ids: dict[str, int]) -> None:
    headers = {"authorization": f"Bearer {token}", "content-type": J}
    title = json.dumps({"title": "t" * 50}).encode()
    assert (await asgi_request("POST", "/api/threads", body=title, headers=headers)).status == 201
    content = json.dumps({"content": "x" * MAX_CHARS}).encode()
    sent = await asgi_request("POST", f"/api/threads/{ids['tid']}/messages", body=content, headers=headers)
    assert sent.status == 200 and sent.json()["user_message"]["content"] == "x" * MAX_CHARS


# --- WebSocket frames ---------------------------------------------------------------------------------


async def _socket(thread_id: int, token: str) -> WebsocketCommunicator:
    comm = WebsocketCommunicator(
        application, f"/ws/threads/{thread_id}/", headers=[(b"authorization", f"Bearer {token}".encode())]
    )
    ok, _ = await comm.connect(timeout=10)
    assert ok
    assert (await comm.receive_json_from(timeout=10))["type"] == "snapshot"
    return comm


async def send_frame(comm: WebsocketCommunicator, frame: str | bytes) -> None:
    """Any frame, the empty one included (WebsocketCommunicator.send_to refuses to send "")."""
    key = "bytes" if isinstance(frame, bytes) else "text"
    await comm.send_input({"type": "websocket.receive", key: frame})


async def _still_usable(comm: WebsocketCommunicator) -> None:
    """A valid frame still gets its answer: a cancel of an unknown request is `not_found`."""
    await comm.send_json_to({"type": "cancel", "request_id": "never-sent"})
    answer = await comm.receive_json_from(timeout=10)
    assert answer == {"type": "error", "error": {"code": "not_found", "message": "No such request."}}


FRAME_CASES: list[tuple[str | bytes, str]] = [
    ("", "invalid_json"),
    ("not json", "invalid_json"),
    ("[1, 2]", "invalid_json"),
    ("42", "invalid_json"),
    ("null", "invalid_json"),
    ("[" * 1500, "invalid_json"),
    (b'{"type": "send", "content": "x"}', "binary_frame"),
    ("{}", "unknown_type"),
    ('{"type": "dance"}', "unknown_type"),
    ('{"type": 5}', "unknown_type"),
    ('{"type": {"a": 1}}', "unknown_type"),
    ('{"type": "send"}', "invalid_content"),
    ('{"type": "send", "content": 5}', "invalid_content"),
    ('{"type": "send", "content": "x", "parent_id": 1e40}', "invalid_parent_id"),
    ('{"type": "send", "content": "x", "parent_id": 100000000000000000000000000}', "invalid_parent_id"),
    ('{"type": "send", "content": "x", "parent_id": false}', "invalid_parent_id"),
    ('{"type": "send", "content": "x", "idempotent": "no"}', "invalid_field"),
    ('{"type": "send", "content": "x", "request_id": "bad id"}', "invalid_request_id"),
    ('{"type": "send", "content": "x", "oops": 1}', "unknown_field"),
    ('{"type": "send", "content": "\\u0000"}', "invalid_text"),
    ('{"type": "send", "content": "\\ud83d"}', "invalid_text"),
    ('{"type": "send", "content": "' + "x" * (MAX_CHARS + 1) + '"}', "content_too_large"),
    ('{"type": "cancel"}', "invalid_request_id"),
    ('{"type": "cancel", "request_id": 5}', "invalid_request_id"),
    ('{"type": "cancel", "request_id": "a b"}', "invalid_request_id"),
    ('{"type": "cancel", "request_id": "x", "more": 1}', "unknown_field"),
    ('{"type": "history"}', "invalid_cursor"),
    ('{"type": "history", "before": "5"}', "invalid_cursor"),
    ('{"type": "history", "before": 0}', "invalid_cursor"),
    ('{"type": "history", "before": true}', "invalid_cursor"),
    ('{"type": "history", "before": 1.5}', "invalid_cursor"),
    ('{"type": "history", "before": 5, "limit": 3}', "unknown_field"),
    ('{"type": "ack"}', "invalid_ack"),
    ('{"type": "ack", "count": -1}', "invalid_ack"),
    ('{"type": "ack", "count": 1000000}', "invalid_ack"),  # more than it was sent
    ('{"type": "ack", "count": true}', "invalid_ack"),
    ("x" * (MAX_FRAME + 1), "too_large"),
    (b"\x00" * (MAX_FRAME + 1), "too_large"),
    ('{"type": "send", "content": "' + "é" * (MAX_FRAME // 2) + '"}', "too_large"),  # bytes, not characters
]


@pytest.mark.parametrize(("frame", "code"), FRAME_CASES)
async def test_bad_frame_gets_an_error_event_and_the_socket_stays_usable(
    frame: str | bytes, code: str, token: str, ids: dict[str, int]
) -> None:
    comm = await _socket(ids["tid"], token)
    await send_frame(comm, frame)
    event = await comm.receive_json_from(timeout=10)
    assert event["type"] == "error" and set(event["error"]) == {"code", "message"}, event
    assert event["error"]["code"] == code
    await _still_usable(comm)
    await comm.disconnect()


async def test_frame_at_the_size_limit_is_handled(token: str, ids: dict[str, int]) -> None:
    comm = await _socket(ids["tid"], token)
    head = '{"type": "cancel", "request_id": "never-sent"}'
    frame = head[:-1] + " " * (MAX_FRAME - len(head)) + "}"
    assert len(frame.encode()) == MAX_FRAME
    await comm.send_to(text_data=frame)
    assert (await comm.receive_json_from(timeout=10))["error"]["code"] == "not_found"
    await comm.disconnect()


async def test_every_bad_frame_in_a_row_on_one_socket(token: str, ids: dict[str, int]) -> None:
    """One socket takes the whole table, answering each bad frame in order, then still works."""
    comm = await _socket(ids["tid"], token)
    for frame, code in FRAME_CASES:
        await send_frame(comm, frame)
        assert (await comm.receive_json_from(timeout=10))["error"]["code"] == code, frame[:80]
    await _still_usable(comm)
    await comm.disconnect()


@pytest.mark.parametrize(("unsent", "closed"), [(4096, False), (4097, True)])
async def test_a_socket_with_too_much_unsent_is_closed_with_4008(
    unsent: int, closed: bool, token: str, ids: dict[str, int], settings: Any
) -> None:
    """Bytes waiting to be written bound every socket, acknowledging or not (WS_MAX_BUFFER_BYTES). Under
    daphne core/writebuffer.py measures them (tests/threads/test_write_buffer.py); here the probe is given."""
    settings.WS_MAX_BUFFER_BYTES = 4096
    waiting = {"bytes": 0}

    async def measured(scope: dict[str, Any], receive: Any, send: Any) -> Any:
        return await application({**scope, WRITE_BUFFER: lambda: waiting["bytes"]}, receive, send)

    comm = WebsocketCommunicator(
        measured, f"/ws/threads/{ids['tid']}/", headers=[(b"authorization", f"Bearer {token}".encode())]
    )
    assert (await comm.connect(timeout=10))[0]
    assert (await comm.receive_json_from(timeout=10))["type"] == "snapshot"
    waiting["bytes"] = unsent
    await comm.send_json_to({"type": "cancel", "request_id": "never-sent"})
    answer = await comm.receive_output(timeout=10)
    if closed:
        assert answer == {"type": "websocket.close", "code": 4008}
    else:
        assert json.loads(answer["text"])["error"]["code"] == "not_found"
        await comm.disconnect()


@pytest.mark.parametrize("path", [f"/ws/threads/{HUGE_ID}/", "/ws/threads/0/"])
async def test_socket_to_an_impossible_thread_id_is_refused_not_crashed(path: str, token: str) -> None:
    comm = WebsocketCommunicator(application, path, headers=[(b"authorization", f"Bearer {token}".encode())])
    ok, code = await comm.connect(timeout=10)
    assert (ok, code) == (False, 4404)


async def test_socket_message_at_the_character_limit_is_sent(token: str, ids: dict[str, int]) -> None:
    comm = await _socket(ids["tid"], token)
    await comm.send_json_to({"type": "send", "content": "y" * (MAX_CHARS + 1)})
    assert (await comm.receive_json_from(timeout=10))["error"]["code"] == "content_too_large"
    await comm.send_json_to({"type": "send", "content": "y" * MAX_CHARS})
    while (event := await comm.receive_json_from(timeout=10))["type"] != "message.done":
        assert event["type"] in {"message.start", "message.delta"}, event
    assert event["message"]["status"] == "complete"
    await comm.disconnect()
