"""API token self-service: GET/POST /api/tokens, DELETE /api/tokens/{id} (threads/token_api.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client

from accounts.models import ApiToken, AuditEvent
from accounts.tokens import user_for_token
from threads.token_api import parse_token_create
from threads.validation import InvalidInput

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.both]


def _post(client: Client, body: Any, **headers: str) -> Any:
    return client.post("/api/tokens", json.dumps(body), content_type="application/json", headers=headers)


def test_create_list_revoke_over_the_api(client: Client, user: Any) -> None:
    client.force_login(user)
    resp = _post(client, {"name": "ci", "expires_in_days": 7})
    assert resp.status_code == 201
    body = resp.json()
    raw = body["token"]
    assert (
        raw.startswith("cht_")
        and body["name"] == "ci"
        and body["expires_at"]
        and body["last_used_at"] is None
    )
    assert user_for_token(raw) == user
    listed = client.get("/api/tokens").json()["tokens"]
    assert [t["id"] for t in listed] == [body["id"]]
    assert "token" not in listed[0] and raw not in json.dumps(listed)
    # A token-authenticated caller lists and revokes, but cannot mint new tokens.
    bearer = Client()
    assert bearer.get("/api/tokens", headers={"Authorization": f"Bearer {raw}"}).status_code == 200
    refused = _post(bearer, {"name": "more"}, Authorization=f"Bearer {raw}")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "session_required"
    assert client.delete(f"/api/tokens/{body['id']}").status_code == 204
    assert user_for_token(raw) is None
    assert client.get("/api/tokens").json()["tokens"] == []
    assert client.delete(f"/api/tokens/{body['id']}").status_code == 404
    kinds = set(AuditEvent.objects.values_list("kind", flat=True))
    assert {AuditEvent.TOKEN_CREATED, AuditEvent.TOKEN_REVOKED} <= kinds


def test_another_users_token_is_not_found(client: Client, user: Any, other_user: Any) -> None:
    from accounts.tokens import api_token_create

    theirs, raw = api_token_create(user=other_user, name="bob's")
    client.force_login(user)
    resp = client.delete(f"/api/tokens/{theirs.pk}")
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "not_found"
    assert client.delete("/api/tokens/abc").status_code == 404
    assert user_for_token(raw) == other_user


def test_anonymous_is_401(client: Client) -> None:
    assert client.get("/api/tokens").status_code == 401


def test_expired_token_does_not_authenticate(user: Any) -> None:
    from datetime import timedelta

    from django.utils import timezone

    from accounts.tokens import api_token_create

    _, raw = api_token_create(user=user, expires_at=timezone.now() - timedelta(seconds=1))
    assert user_for_token(raw) is None
    ApiToken.objects.update(expires_at=timezone.now() + timedelta(days=1))
    assert user_for_token(raw) == user


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({}, "invalid_name"),
        ({"name": ""}, "invalid_name"),
        ({"name": "x" * 101}, "invalid_name"),
        ({"name": "x", "expires_in_days": 0}, "invalid_expiry"),
        ({"name": "x", "expires_in_days": True}, "invalid_expiry"),
        ({"name": "x", "expires_in_days": "3"}, "invalid_expiry"),
        ({"name": "x", "expires_in_days": 3651}, "invalid_expiry"),
        ({"name": "x", "scope": "all"}, "unknown_field"),
    ],
)
def test_bad_create_bodies(body: dict[str, Any], code: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        parse_token_create(body)
    assert exc.value.code == code


def test_good_create_body() -> None:
    assert parse_token_create({"name": " ci ", "expires_in_days": None}) == ("ci", None)
    assert parse_token_create({"name": "ci", "expires_in_days": 30}) == ("ci", 30)


def test_bad_body_is_400_json(client: Client, user: Any) -> None:
    client.force_login(user)
    resp = _post(client, {"name": "x", "expires_in_days": -1})
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid_expiry"
