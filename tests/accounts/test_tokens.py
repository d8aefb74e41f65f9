"""API tokens (accounts/tokens.py): hashed at rest, found by hash and compared in constant time,
revocable."""

from __future__ import annotations

import hmac
import threading
from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.db import OperationalError
from django.test import AsyncClient
from django.utils import timezone

from accounts import auth, tokens
from accounts.models import ApiToken
from accounts.tokens import (
    api_token_create,
    api_token_revoke,
    api_token_touch,
    last_used_due,
    token_hash,
    user_for_token,
)

pytestmark = pytest.mark.django_db


def test_only_the_hash_is_stored(user: Any) -> None:
    row, raw = api_token_create(user=user, name="ci")
    stored = ApiToken.objects.values().get(pk=row.pk)
    assert stored["key_hash"] == token_hash(raw) and len(stored["key_hash"]) == 64
    assert raw not in {str(v) for v in stored.values()}
    # The prefix shown in admin leaves 35 characters (210 bits) of the secret unstored.
    assert stored["prefix"] == raw[:12] and len(raw) - len(stored["prefix"]) >= 35


def test_lookup_is_by_hash_and_compared_in_constant_time(
    user: Any, monkeypatch: pytest.MonkeyPatch, django_assert_num_queries: Any
) -> None:
    _, raw = api_token_create(user=user)
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(tokens.hmac, "compare_digest", spy)
    with django_assert_num_queries(1) as ctx:  # one indexed lookup by key_hash, the user joined
        assert user_for_token(raw) == user
    assert token_hash(raw) in ctx.captured_queries[0]["sql"]
    assert compared == [(token_hash(raw).encode(), token_hash(raw).encode())]


@pytest.mark.parametrize(
    "presented",
    ["", "cht_", "cht_wrong", "not-a-token", "cht_" + "x" * 300],
)
def test_wrong_tokens_find_nobody(user: Any, presented: str) -> None:
    api_token_create(user=user)
    assert user_for_token(presented) is None


def test_inactive_users_tokens_do_not_authenticate(user: Any) -> None:
    _, raw = api_token_create(user=user)
    user.is_active = False
    user.save()
    assert user_for_token(raw) is None


def test_revoke_marks_each_token_once(user: Any, other_user: Any) -> None:
    (a, raw_a), (_, raw_b) = api_token_create(user=user), api_token_create(user=other_user)
    assert api_token_revoke(tokens=ApiToken.objects.filter(pk=a.pk)) == 1
    a.refresh_from_db()
    first = a.revoked_at
    assert first is not None and user_for_token(raw_a) is None and user_for_token(raw_b) == other_user
    assert api_token_revoke(tokens=ApiToken.objects.all()) == 1  # only b was still active
    a.refresh_from_db()
    assert a.revoked_at == first  # not moved by revoking again


# --- last_used_at: at most once a minute per token, off the request's path ------------------------------


@pytest.mark.parametrize(
    ("previous", "now", "expected"),
    [
        (None, 0.0, True),  # never written by this process
        (100.0, 100.0, False),
        (100.0, 159.9, False),
        (100.0, 160.0, True),
        (100.0, 1000.0, True),
    ],
)
def test_last_used_due(previous: float | None, now: float, expected: bool) -> None:
    assert last_used_due(previous=previous, now=now, interval_s=60.0) is expected


def test_touch_skips_a_row_another_process_stamped_within_the_interval(user: Any) -> None:
    row, _ = api_token_create(user=user)
    now = timezone.now()
    assert api_token_touch(key_hash=row.key_hash, used_at=now) == 1
    assert api_token_touch(key_hash=row.key_hash, used_at=now + timedelta(seconds=59)) == 0
    assert api_token_touch(key_hash=row.key_hash, used_at=now + timedelta(seconds=61)) == 1
    row.refresh_from_db()
    assert row.last_used_at == now + timedelta(seconds=61)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def stamps(monkeypatch: pytest.MonkeyPatch) -> tuple[auth.LastUsedStamps, Clock, list[str]]:
    """A fresh recorder on a clock the test moves, and the token hashes it wrote, in order."""
    clock, written = Clock(), []
    real = tokens.api_token_touch

    def touch(*, key_hash: str, used_at: Any) -> int:
        written.append(key_hash)
        return real(key_hash=key_hash, used_at=used_at)

    monkeypatch.setattr(auth, "api_token_touch", touch)
    recorder = auth.LastUsedStamps(clock=clock)
    monkeypatch.setattr(auth, "last_used", recorder)
    return recorder, clock, written


@pytest.mark.django_db(transaction=True)
@pytest.mark.both
async def test_last_used_at_is_written_at_most_once_a_minute(
    user: Any, stamps: tuple[auth.LastUsedStamps, Clock, list[str]]
) -> None:
    recorder, clock, written = stamps
    row, raw = await sync_to_async(api_token_create)(user=user)
    for _ in range(5):  # a burst: one write
        assert await auth.token_user(raw) == user
    await recorder.drain()
    assert written == [row.key_hash]
    await sync_to_async(row.refresh_from_db)()
    first = row.last_used_at
    assert first is not None and (timezone.now() - first).total_seconds() < 60
    clock.now += 59.0
    await auth.token_user(raw)
    await recorder.drain()
    assert written == [row.key_hash]
    clock.now += 1.0
    await auth.token_user(raw)
    await recorder.drain()
    assert written == [
        row.key_hash,
        row.key_hash,
    ]  # the row itself skips it: 60 s of wall time have not passed
    assert await auth.token_user("cht_not-a-token") is None
    await recorder.drain()
    assert len(written) == 2  # a failed lookup stamps nothing


@pytest.mark.django_db(transaction=True)
@pytest.mark.both
async def test_the_request_does_not_wait_for_the_stamp(
    user: Any, stamps: tuple[auth.LastUsedStamps, Clock, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder, _, _ = stamps
    release = threading.Event()

    def slow_touch(*, key_hash: str, used_at: Any) -> int:
        release.wait(10)  # the database is slow
        return tokens.api_token_touch(key_hash=key_hash, used_at=used_at)

    monkeypatch.setattr(auth, "api_token_touch", slow_touch)
    row, raw = await sync_to_async(api_token_create)(user=user)
    resp = await AsyncClient(AUTHORIZATION=f"Bearer {raw}").get("/api/threads")
    assert resp.status_code == 200  # answered while the write still waits
    release.set()
    await recorder.drain()
    await sync_to_async(row.refresh_from_db)()
    assert row.last_used_at is not None


@pytest.mark.django_db(transaction=True)
async def test_a_failed_stamp_is_logged_not_raised(
    user: Any,
    stamps: tuple[auth.LastUsedStamps, Clock, list[str]],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    recorder, _, _ = stamps

    def down(*, key_hash: str, used_at: Any) -> int:
        raise OperationalError("connection refused")

    monkeypatch.setattr(auth, "api_token_touch", down)
    _, raw = await sync_to_async(api_token_create)(user=user)
    assert await auth.token_user(raw) == user
    await recorder.drain()
    assert "Could not record the use of API token" in caplog.text
