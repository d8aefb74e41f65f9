from __future__ import annotations

from typing import Any

import pytest

from threads.validation import InvalidInput, parse_json_object, parse_send, parse_thread_create


@pytest.mark.parametrize(
    ("raw", "code"),
    [(b"{", "invalid_json"), (b"[1]", "invalid_json"), (b"\xff", "invalid_json"), (b'"x"', "invalid_json")],
)
def test_parse_json_object_rejects(raw: bytes, code: str) -> None:
    with pytest.raises(InvalidInput) as err:
        parse_json_object(raw)
    assert err.value.code == code and err.value.status == 400


def test_parse_json_object_empty_is_empty_dict() -> None:
    assert parse_json_object(b"") == {}


@pytest.mark.parametrize(
    ("data", "code", "status"),
    [
        ({}, "invalid_content", 400),
        ({"content": "   "}, "invalid_content", 400),
        ({"content": 3}, "invalid_content", 400),
        ({"content": "x" * 11}, "content_too_large", 413),
        ({"content": "hi", "request_id": ""}, "invalid_request_id", 400),
        ({"content": "hi", "request_id": "a b"}, "invalid_request_id", 400),
        ({"content": "hi", "request_id": "x" * 65}, "invalid_request_id", 400),
        ({"content": "hi", "request_id": 5}, "invalid_request_id", 400),
        ({"content": "hi", "parent_id": "3"}, "invalid_parent_id", 400),
        ({"content": "hi", "parent_id": True}, "invalid_parent_id", 400),
        ({"content": "hi", "parent_id": 0}, "invalid_parent_id", 400),
        ({"content": "hi", "stream": "yes"}, "invalid_field", 400),
        ({"content": "hi", "idempotent": 1}, "invalid_field", 400),
    ],
)
def test_parse_send_rejects(data: dict[str, Any], code: str, status: int) -> None:
    with pytest.raises(InvalidInput) as err:
        parse_send(data, max_chars=10)
    assert (err.value.code, err.value.status) == (code, status)


def test_parse_send_defaults_and_generated_request_id() -> None:
    a = parse_send({"content": "hi"}, max_chars=10)
    b = parse_send({"content": "hi"}, max_chars=10)
    assert (a.stream, a.idempotent, a.parent_id, a.request_id_given) == (False, True, None, False)
    assert a.request_id != b.request_id and len(a.request_id) == 32


def test_parse_send_keeps_given_fields() -> None:
    r = parse_send(
        {
            "content": "hi",
            "request_id": "abc-1",
            "parent_id": 4,
            "stream": True,
            "idempotent": False,
            "tools": [{}],
        },
        max_chars=10,
    )
    assert (r.request_id, r.parent_id, r.stream, r.idempotent, r.tools) == ("abc-1", 4, True, False, True)


@pytest.mark.parametrize("data", [{"title": 3}, {"provider": []}, {"title": "x" * 201}])
def test_parse_thread_create_rejects(data: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput):
        parse_thread_create(data)
