"""Django admin (accounts/admin.py): staff only; API tokens are created hashed and revoked through the
service (so the revocation reaches the token cache and open sockets)."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from accounts.auth import _token_users
from accounts.models import ApiToken
from accounts.tokens import api_token_create, api_token_revoke, token_hash, user_for_token

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
    _token_users.put(token_hash(raw), user)  # as if just used on this process
    resp = admin_client.post(
        "/admin/accounts/apitoken/", {"action": "revoke", "_selected_action": [row.pk]}, follow=True
    )
    assert "Revoked 1 token(s)." in [str(m) for m in resp.context["messages"]]
    assert token_hash(raw) not in _token_users._items
    assert user_for_token(raw) is None


def _change(admin_client: Client, row: ApiToken, **fields: Any) -> Any:
    data = {"user": row.user_id, "name": row.name, **fields}
    return admin_client.post(f"/admin/accounts/apitoken/{row.pk}/change/", data)


def test_a_revoked_token_cannot_be_unrevoked_in_admin(
    admin_client: Client, user: Any, other_user: Any
) -> None:
    row, raw = api_token_create(user=user, name="ci")
    api_token_revoke(tokens=ApiToken.objects.filter(pk=row.pk))
    revoked_at = ApiToken.objects.get(pk=row.pk).revoked_at
    # The form has no revoked_at (nor user) field to clear: posting them changes nothing.
    resp = _change(admin_client, row, revoked_at_0="", revoked_at_1="", user=other_user.pk, name="renamed")
    assert resp.status_code == 302
    after = ApiToken.objects.get(pk=row.pk)
    assert after.revoked_at == revoked_at and after.user_id == user.pk and after.name == "renamed"
    assert user_for_token(raw) is None
    page = admin_client.get(f"/admin/accounts/apitoken/{row.pk}/change/").content.decode()
    assert 'name="revoked_at' not in page and 'name="user"' not in page


def test_a_new_token_is_shown_once_on_the_answer_itself(admin_client: Client, user: Any) -> None:
    """Not through the message framework: its default storage is a signed (readable) cookie."""
    resp = admin_client.post("/admin/accounts/apitoken/add/", {"user": user.pk, "name": "ci"})
    assert resp.status_code == 200
    assert "no-store" in resp["Cache-Control"]
    row = ApiToken.objects.get()
    raw = resp.context["raw_token"]
    assert raw.startswith("cht_") and token_hash(raw) == row.key_hash and raw[:12] == row.prefix
    assert raw in resp.content.decode()
    assert user_for_token(raw) == user
    assert not list(resp.context["messages"])
    stored = " ".join(c.value for c in resp.cookies.values()) + str(admin_client.session.items())
    assert raw not in stored
    # The next page shows nothing of it.
    assert raw not in admin_client.get("/admin/accounts/apitoken/").content.decode()
