"""API tokens (accounts/tokens.py): hashed at rest, found by hash and compared in constant time,
revocable."""

from __future__ import annotations

import hmac
from typing import Any

import pytest

from accounts import tokens
from accounts.models import ApiToken
from accounts.tokens import api_token_create, api_token_revoke, token_hash, user_for_token

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
