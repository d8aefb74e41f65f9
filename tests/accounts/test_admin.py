"""Django admin (accounts/admin.py): staff only; API tokens are created hashed and revoked through the
service (so the revocation reaches the token cache and open sockets)."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from accounts.auth import _token_users
from accounts.models import ApiToken
from accounts.tokens import api_token_create, token_hash, user_for_token

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("path", ["/admin/", "/admin/accounts/apitoken/", "/admin/accounts/apitoken/add/"])
@pytest.mark.parametrize("who", ["anonymous", "non-staff user"])
def test_admin_is_staff_only(client: Client, user: Any, who: str, path: str) -> None:
    if who == "non-staff user":
        client.force_login(user)
    resp = client.get(path)
    assert resp.status_code == 302
    assert resp["Location"].startswith("/admin/login/?next=")
    # Posting does not get through either (here: an attempt to mint a token for oneself).
    client.post("/admin/accounts/apitoken/add/", {"user": user.pk, "name": "mine"})
    assert not ApiToken.objects.exists()


def test_staff_get_in(admin_client: Client) -> None:
    assert admin_client.get("/admin/").status_code == 200
    assert admin_client.get("/admin/accounts/apitoken/").status_code == 200


def test_admin_revoke_action_drops_the_cached_lookup(admin_client: Client, user: Any) -> None:
    row, raw = api_token_create(user=user)
    _token_users._items[token_hash(raw)] = (float("inf"), user)  # as if just used on this process
    resp = admin_client.post(
        "/admin/accounts/apitoken/", {"action": "revoke", "_selected_action": [row.pk]}, follow=True
    )
    assert "Revoked 1 token(s)." in [str(m) for m in resp.context["messages"]]
    assert token_hash(raw) not in _token_users._items
    assert user_for_token(raw) is None
