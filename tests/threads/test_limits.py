"""The pure decisions behind the limits (threads/limits.py)."""

from __future__ import annotations

import math

import pytest

from core.gcra import Limit
from core.retryafter import retry_after_header
from threads.limits import (
    MAX_ID,
    SocketAdmission,
    body_verdict,
    declared_length,
    frame_size,
    id_in_range,
    parse_id,
    send_rate_limit,
    socket_admit,
)


@pytest.mark.parametrize(
    ("value", "ok"),
    [(0, False), (-1, False), (1, True), (MAX_ID, True), (MAX_ID + 1, False), (10**40, False)],
)
def test_id_in_range(value: int, ok: bool) -> None:
    assert id_in_range(value) is ok


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1", 1),
        ("0042", 42),
        (str(MAX_ID), MAX_ID),
        (str(MAX_ID + 1), None),
        ("9" * 19, None),
        ("9" * 40, None),
        ("0", None),
        ("", None),
        ("-1", None),
        ("+1", None),
        (" 1", None),
        ("1.0", None),
        ("²", None),  # isdigit() is True, int() refuses it
        ("١٢", None),  # Arabic-Indic digits: int() accepts them, ids are ASCII
        ("x", None),
    ],
)
def test_parse_id(raw: str, expected: int | None) -> None:
    assert parse_id(raw) == expected


@pytest.mark.parametrize(
    ("seconds", "header"),
    [(0.0, 1), (-3.0, 1), (0.001, 1), (1.0, 1), (1.01, 2), (59.5, 60), (math.inf, 1), (math.nan, 1)],
)
def test_retry_after_header_is_whole_seconds_at_least_one(seconds: float, header: int) -> None:
    assert retry_after_header(seconds) == header


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(None, None), (b"0", 0), (b"123", 123), (b" 12 ", 12), (b"", -1), (b"-1", -1), (b"1e3", -1), (b"x", -1)],
)
def test_declared_length(raw: bytes | None, expected: int | None) -> None:
    assert declared_length(raw) == expected


def test_declared_length_refuses_absurdly_long_numbers() -> None:
    assert declared_length(b"9" * 21) == -1


@pytest.mark.parametrize(
    ("declared", "received", "verdict"),
    [
        (None, 0, "ok"),
        (None, 10, "ok"),
        (None, 11, "too_large"),  # chunked, no header: counted as it arrives
        (10, 0, "ok"),
        (11, 0, "too_large"),  # announced too large: refused before reading
        (2, 11, "too_large"),  # the header lied
        (-1, 0, "bad_length"),
    ],
)
def test_body_verdict(declared: int | None, received: int, verdict: str) -> None:
    assert body_verdict(declared=declared, received=received, limit=10) == verdict


@pytest.mark.parametrize(
    ("text", "data", "size"),
    [
        (None, None, 0),
        ("abc", None, 3),
        ("é", None, 2),
        ("😀", None, 4),
        ("\ud800", None, 3),  # an unpaired surrogate still has a size
        (None, b"\x00\x01", 2),
    ],
)
def test_frame_size_counts_utf8_bytes(text: str | None, data: bytes | None, size: int) -> None:
    assert frame_size(text, data) == size


@pytest.mark.parametrize(
    ("per_min", "burst", "expected"),
    [(0, 10, None), (60, 5, Limit(1.0, 5)), (30, 0, Limit(2.0, 1)), (120, 1, Limit(0.5, 1))],
)
def test_send_rate_limit(per_min: float, burst: int, expected: Limit | None) -> None:
    assert send_rate_limit(per_min=per_min, burst=burst) == expected


@pytest.mark.parametrize(
    ("sockets", "socket_id", "limit", "expected"),
    [
        ({}, "a", 2, SocketAdmission(True, (), 1)),
        ({"a": 100.0}, "b", 2, SocketAdmission(True, (), 2)),
        ({"a": 100.0, "b": 100.0}, "c", 2, SocketAdmission(False, (), 2)),
        # The sockets of a dead process stop counting once their heartbeat is older than the TTL.
        ({"a": 100.0, "b": 50.0}, "c", 2, SocketAdmission(True, ("b",), 2)),
        ({"a": 10.0, "b": 20.0}, "c", 1, SocketAdmission(True, ("a", "b"), 1)),
        # A socket registering again (a retried handshake) is not counted twice.
        ({"a": 100.0, "b": 100.0}, "b", 2, SocketAdmission(True, (), 2)),
        # A heartbeat exactly TTL old is still alive.
        ({"a": 70.0}, "b", 1, SocketAdmission(False, (), 1)),
        ({"a": 100.0, "b": 100.0, "c": 100.0}, "d", 0, SocketAdmission(True, (), 4)),  # 0: unlimited
    ],
)
def test_socket_admit(
    sockets: dict[str, float], socket_id: str, limit: int, expected: SocketAdmission
) -> None:
    assert socket_admit(sockets, socket_id=socket_id, now=100.0, ttl=30.0, limit=limit) == expected
