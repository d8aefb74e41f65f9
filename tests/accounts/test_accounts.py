from __future__ import annotations

import io
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.test import Client

from accounts.models import ApiToken
from accounts.tokens import bearer_from_header, token_hash, user_for_token

pytestmark = pytest.mark.django_db


def test_signup_logs_in_and_redirects(client: Client) -> None:
    assert client.get("/accounts/signup/").status_code == 200
    resp = client.post(
        "/accounts/signup/",
        {"username": "carol", "password1": "a-Long-pass-42!", "password2": "a-Long-pass-42!"},
    )
    assert resp.status_code == 302 and resp["Location"] == "/"
    assert client.get("/").status_code == 200
    assert User.objects.filter(username="carol").exists()


def test_signup_errors_are_shown(client: Client) -> None:
    resp = client.post("/accounts/signup/", {"username": "dave", "password1": "x", "password2": "y"})
    assert resp.status_code == 400
    assert not User.objects.filter(username="dave").exists()


def test_login_and_logout(client: Client, user: Any) -> None:
    assert client.get("/").status_code == 302  # pages need a login
    resp = client.post("/accounts/login/", {"username": "alice", "password": "pw-alice-123!"})
    assert resp.status_code == 302
    assert client.get("/").status_code == 200
    assert client.post("/accounts/logout/").status_code == 302
    assert client.get("/").status_code == 302


def test_wrong_password_is_refused(client: Client, user: Any) -> None:
    resp = client.post("/accounts/login/", {"username": "alice", "password": "nope"})
    assert resp.status_code == 200 and b"didn" in resp.content


def test_create_api_token_command_creates_user_and_prints_token_last() -> None:
    out, err = io.StringIO(), io.StringIO()
    call_command("create_api_token", "erin", stdout=out, stderr=err)
    raw = out.getvalue().strip().splitlines()[-1]
    assert raw.startswith("cht_")
    token = ApiToken.objects.get()
    assert token.key_hash == token_hash(raw) and raw not in (token.key_hash, token.prefix)
    assert user_for_token(raw) == User.objects.get(username="erin")


def test_create_api_token_says_the_new_user_cannot_log_in_in_a_browser() -> None:
    """#22 item 11: the old command said nothing, and the user it made could never log in."""
    out, err = io.StringIO(), io.StringIO()
    call_command("create_api_token", "frank", stdout=out, stderr=err)
    assert "cannot log in in a browser" in err.getvalue()
    assert "changepassword frank" in err.getvalue() and "--password" in err.getvalue()


def test_create_api_token_with_password_lets_the_user_log_in(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """#22 item 11: `--password` (read from a pipe here) sets a password the login page accepts."""
    monkeypatch.setattr("sys.stdin", io.StringIO("a-Long-pass-phrase-42\n"))
    out, err = io.StringIO(), io.StringIO()
    call_command("create_api_token", "gina", "--password", stdout=out, stderr=err)
    assert out.getvalue().strip().splitlines()[-1].startswith("cht_")
    assert "cannot log in" not in err.getvalue()
    resp = client.post("/accounts/login/", {"username": "gina", "password": "a-Long-pass-phrase-42"})
    assert resp.status_code == 302


def test_create_api_token_refuses_a_weak_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("123\n"))
    with pytest.raises(CommandError):
        call_command("create_api_token", "hal", "--password", stdout=io.StringIO(), stderr=io.StringIO())
    assert not ApiToken.objects.exists()


def test_revoked_token_no_longer_authenticates(token: str) -> None:
    assert user_for_token(token) is not None
    ApiToken.objects.update(revoked_at="2026-01-01T00:00:00Z")
    assert user_for_token(token) is None


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Bearer abc", "abc"),
        ("bearer  abc ", "abc"),
        ("Basic abc", None),
        ("Bearer", None),
        ("", None),
        (None, None),
    ],
)
def test_bearer_from_header(header: str | None, expected: str | None) -> None:
    assert bearer_from_header(header) == expected


def test_token_admin_creates_hashed_token_and_revokes(admin_client: Client, user: Any) -> None:
    resp = admin_client.post("/admin/accounts/apitoken/add/", {"user": user.pk, "name": "ci"})
    assert resp.status_code == 200  # the secret is on this page (tests/accounts/test_admin.py)
    raw = resp.context["raw_token"]
    assert user_for_token(raw) == user
    token = ApiToken.objects.get()
    admin_client.post(
        "/admin/accounts/apitoken/", {"action": "revoke", "_selected_action": [token.pk]}, follow=True
    )
    assert user_for_token(raw) is None
