from __future__ import annotations

from typing import Any

import pytest

from threads.validation import (
    SEND_FRAME_EXTRA,
    InvalidInput,
    parse_frame,
    parse_json_object,
    parse_request_id,
    parse_send,
    parse_thread_create,
    text_problem,
)


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


@pytest.mark.parametrize(
    ("data", "code", "status"),
    [
        ({"content": "hi", "strem": True}, "unknown_field", 400),
        ({"content": "hi", "type": "send"}, "unknown_field", 400),  # only frames carry a type
        ({"content": "a\x00b"}, "invalid_text", 400),
        ({"content": "a\ud800b"}, "invalid_text", 400),
        ({"content": "hi", "parent_id": 10**40}, "invalid_parent_id", 400),
        ({"content": "hi", "parent_id": 2**63}, "invalid_parent_id", 400),
        ({"content": "hi", "parent_id": -5}, "invalid_parent_id", 400),
        ({"content": "hi", "parent_id": 1.5}, "invalid_parent_id", 400),
        ({"content": "hi", "parent_id": 2.0}, "invalid_parent_id", 400),
        ({"content": "hi", "request_id": "abc\n"}, "invalid_request_id", 400),
        ({"content": "hi", "request_id": "é"}, "invalid_request_id", 400),
    ],
)
def test_parse_send_rejects_more(data: dict[str, Any], code: str, status: int) -> None:
    with pytest.raises(InvalidInput) as err:
        parse_send(data, max_chars=10)
    assert (err.value.code, err.value.status) == (code, status)


def test_parse_send_allows_the_callers_extra_fields_and_the_largest_id() -> None:
    req = parse_send(
        {"type": "send", "content": "hi", "parent_id": 2**63 - 1}, max_chars=10, extra_fields=SEND_FRAME_EXTRA
    )
    assert req.parent_id == 2**63 - 1


@pytest.mark.parametrize("length", [9, 10])
def test_parse_send_accepts_content_up_to_the_limit(length: int) -> None:
    assert parse_send({"content": "x" * length}, max_chars=10).content == "x" * length


@pytest.mark.parametrize(
    ("data", "code"),
    [
        ({"title": "x" * 11}, "title_too_long"),
        ({"title": "a\x00"}, "invalid_text"),
        ({"model": "\udfff"}, "invalid_text"),
        ({"provider": "x" * 33}, "invalid_field"),
        ({"titel": "typo"}, "unknown_field"),
    ],
)
def test_parse_thread_create_codes(data: dict[str, Any], code: str) -> None:
    with pytest.raises(InvalidInput) as err:
        parse_thread_create(data, max_title_chars=10)
    assert (err.value.code, err.value.status) == (code, 400)


@pytest.mark.parametrize("length", [9, 10])
def test_parse_thread_create_accepts_title_up_to_the_limit(length: int) -> None:
    assert parse_thread_create({"title": "t" * length}, max_title_chars=10).title == "t" * length


def test_parse_json_object_refuses_deep_nesting_as_bad_input() -> None:
    with pytest.raises(InvalidInput) as err:
        parse_json_object(b"[" * 200_000 + b"]" * 200_000)
    assert err.value.code == "invalid_json"


@pytest.mark.parametrize(
    ("text", "data", "code"),
    [
        ("x" * 41, None, "too_large"),
        ("é" * 21, None, "too_large"),  # 42 bytes in 21 characters
        (None, b"{}", "binary_frame"),
        (None, b"x" * 41, "too_large"),
        ("", None, "invalid_json"),
        ("nope", None, "invalid_json"),
        ("[" * 10, None, "invalid_json"),
        ("[1]", None, "invalid_json"),
        ('"send"', None, "invalid_json"),
        ("{}", None, "unknown_type"),
        ('{"type": 1}', None, "unknown_type"),
        ('{"type": ["send"]}', None, "unknown_type"),
        ('{"type": "sendx"}', None, "unknown_type"),
        ('{"type": "cancel", "x": 1}', None, "unknown_field"),
        ('{"type": "ack", "count": 1, "y": 2}', None, "unknown_field"),
    ],
)
def test_parse_frame_rejects(text: str | None, data: bytes | None, code: str) -> None:
    with pytest.raises(InvalidInput) as err:
        parse_frame(text, data, max_bytes=40)
    assert err.value.code == code


def test_parse_frame_deep_nesting_is_invalid_json() -> None:
    with pytest.raises(InvalidInput) as err:
        parse_frame("[" * 200_000, None, max_bytes=10**6)
    assert err.value.code == "invalid_json"


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ('{"type":"send","content":"x"}', "send"),
        ('{"type":"send","zzz":1}', "send"),  # a send's fields are parse_send's to check
        ('{"type":"cancel"}', "cancel"),
        ('{"type":"ack","count":3}', "ack"),
    ],
)
def test_parse_frame_accepts(text: str, kind: str) -> None:
    assert parse_frame(text, None, max_bytes=len(text))[0] == kind


@pytest.mark.parametrize("value", [None, 5, "", "a b", "x" * 65, "ok\n"])
def test_parse_request_id_rejects(value: object) -> None:
    with pytest.raises(InvalidInput) as err:
        parse_request_id(value)
    assert err.value.code == "invalid_request_id"


def test_text_problem_accepts_ordinary_unicode() -> None:
    assert text_problem("héllo 😀 \t\n") is None
