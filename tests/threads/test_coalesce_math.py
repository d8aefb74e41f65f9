from __future__ import annotations

import pytest

from threads.coalesce_math import (
    LastExchange,
    body_fingerprint,
    burst_anchor,
    coalesce_key,
    coalesce_mode,
    normalize_content,
    retention_s,
)


@pytest.mark.parametrize(
    ("raw", "norm"), [("hi", "hi"), ("  hi \n", "hi"), ("a  b\tc", "a b c"), ("Hi", "Hi")]
)
def test_normalize_content(raw: str, norm: str) -> None:
    assert normalize_content(raw) == norm


def _key(**kw: object) -> str:
    base: dict[str, object] = {
        "thread_id": 1,
        "anchor_id": 5,
        "content": "hi",
        "provider": "demo",
        "model": "m",
    }
    return coalesce_key(**{**base, **kw})  # type: ignore[arg-type]


def test_key_is_stable_and_ignores_whitespace() -> None:
    assert _key() == _key() == _key(content=" hi\n")


@pytest.mark.parametrize(
    "change",
    [
        {"thread_id": 2},
        {"anchor_id": 6},
        {"anchor_id": None},
        {"content": "ho"},
        {"provider": "x"},
        {"model": "n"},
    ],
)
def test_key_differs_when_anything_that_matters_differs(change: dict[str, object]) -> None:
    assert _key(**change) != _key()


@pytest.mark.parametrize(
    ("parent", "last", "expected"),
    [
        # an explicit parent always wins
        (3, LastExchange(head_id=9, user_content="hi", user_parent_id=4, finished_ago_s=None), 3),
        # empty thread
        (None, LastExchange(head_id=None), None),
        # the newest exchange is this question, still streaming: same burst -> its anchor
        (None, LastExchange(head_id=9, user_content="hi", user_parent_id=4, finished_ago_s=None), 4),
        # ... finished within the TTL: still reused
        (None, LastExchange(head_id=9, user_content=" hi", user_parent_id=4, finished_ago_s=10.0), 4),
        # ... finished long ago: a legitimate repeat answers the head
        (None, LastExchange(head_id=9, user_content="hi", user_parent_id=4, finished_ago_s=31.0), 9),
        # a different question: the head
        (None, LastExchange(head_id=9, user_content="other", user_parent_id=4, finished_ago_s=None), 9),
    ],
)
def test_burst_anchor(parent: int | None, last: LastExchange, expected: int | None) -> None:
    assert burst_anchor(parent_id=parent, content="hi", last=last, result_ttl_s=30.0) == expected


def test_anchor_stays_the_same_after_the_leader_wrote_its_rows() -> None:
    before = LastExchange(head_id=4)
    after = LastExchange(head_id=11, user_content="hi", user_parent_id=4, finished_ago_s=None)
    assert burst_anchor(parent_id=None, content="hi", last=before, result_ttl_s=30) == burst_anchor(
        parent_id=None, content="hi", last=after, result_ttl_s=30
    )


@pytest.mark.parametrize(
    ("enabled", "idempotent", "tools", "mode"),
    [
        (True, True, False, "coalesce"),
        (False, True, False, "off"),
        (True, False, False, "bypass"),
        (True, True, True, "bypass"),
        (False, False, True, "bypass"),
    ],
)
def test_coalesce_mode(enabled: bool, idempotent: bool, tools: bool, mode: str) -> None:
    assert coalesce_mode(enabled=enabled, idempotent=idempotent, tools=tools) == mode


def test_fingerprint_and_retention() -> None:
    a = body_fingerprint(thread_id=1, content="hi", parent_id=None, idempotent=True, tools=False)
    assert a == body_fingerprint(thread_id=1, content="hi", parent_id=None, idempotent=True, tools=False)
    assert a != body_fingerprint(thread_id=1, content="hi!", parent_id=None, idempotent=True, tools=False)
    assert retention_s(ok=True, result_ttl_s=30, error_ttl_s=2) == 30
    assert retention_s(ok=False, result_ttl_s=30, error_ttl_s=2) == 2


def test_prekey_ignores_whitespace_and_separates_parents() -> None:
    from threads.coalesce_math import burst_prekey

    base = {"thread_id": 1, "parent_id": None, "content": "hi", "provider": "demo", "model": "m"}
    assert burst_prekey(**base) == burst_prekey(**{**base, "content": " hi "})  # type: ignore[arg-type]
    assert burst_prekey(**base) != burst_prekey(**{**base, "parent_id": 3})  # type: ignore[arg-type]
