"""Accounts through django-allauth (#20): log-in throttling, the 12-character rule, sign-up modes, staff
second factor, TOTP, the audit log, sessions."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import pytest
from allauth.core.internal import ratelimit as allauth_ratelimit
from allauth.mfa.models import Authenticator
from allauth.mfa.totp.internal import auth as totp_auth
from django.contrib.auth.models import User
from django.test import Client

from accounts.adapter import signup_allowed, starts_active
from accounts.invitations import invitation_create
from accounts.middleware import needs_mfa_setup
from accounts.models import AuditEvent, Invitation

pytestmark = pytest.mark.django_db

GOOD = "correct-horse-battery-9"


@pytest.fixture(autouse=True)
def _fresh_cache(settings: Any) -> None:
    """The log-in counters live in the cache: each test gets a cache of its own (a new key prefix; a new
    store for the in-process cache), never a flush of a Redis other tests share."""
    unique = f"t{uuid.uuid4().hex[:12]}"
    settings.CACHES = {
        **settings.CACHES,
        "default": {
            **settings.CACHES["default"],
            "KEY_PREFIX": unique,
            "LOCATION": unique
            if "LocMem" in settings.CACHES["default"]["BACKEND"]
            else settings.CACHES["default"].get("LOCATION", ""),
        },
    }


class FakeClock:
    """Stands in for the `time` module in allauth's rate limiter: tests move time instead of sleeping."""

    def __init__(self) -> None:
        self.now = time.time()
        self.monotonic, self.sleep = time.monotonic, time.sleep

    def time(self) -> float:
        return self.now


def _login(client: Client, username: str, password: str) -> Any:
    return client.post("/accounts/login/", {"login": username, "password": password})


@pytest.mark.both
def test_throttling_refuses_the_right_password_then_lets_it_in_after_the_window(
    client: Client, user: Any, settings: Any, monkeypatch: Any
) -> None:
    settings.ACCOUNT_RATE_LIMITS = {"login_failed": "3/5m/key"}
    clock = FakeClock()
    monkeypatch.setattr(allauth_ratelimit, "time", clock)
    for _ in range(3):
        assert _login(client, "alice", "wrong-password-1").status_code == 200
    refused = _login(client, "alice", "pw-alice-123!")
    assert refused.status_code in (200, 429) and b"Too many failed login attempts" in refused.content
    assert "_auth_user_id" not in client.session
    assert AuditEvent.objects.filter(kind=AuditEvent.LOGIN_THROTTLED, username="alice").exists()
    clock.now += 5 * 60 + 1
    assert _login(client, "alice", "pw-alice-123!").status_code == 302
    assert client.session["_auth_user_id"] == str(user.pk)


@pytest.mark.both
def test_throttling_per_address_covers_every_account(client: Client, user: Any, settings: Any) -> None:
    settings.ACCOUNT_RATE_LIMITS = {"login_failed": "2/5m/ip"}
    _login(client, "nobody-1", "x" * 12)
    _login(client, "nobody-2", "x" * 12)
    assert b"Too many failed login attempts" in _login(client, "alice", "pw-alice-123!").content


@pytest.mark.parametrize(("password", "ok"), [("a1b2c3d4e5f", False), ("a1b2c3d4e5f6", True)])
def test_signup_needs_twelve_characters(client: Client, password: str, ok: bool) -> None:
    resp = client.post(
        "/accounts/signup/", {"username": "carol", "password1": password, "password2": password}
    )
    assert User.objects.filter(username="carol").exists() is ok
    if not ok:
        assert b"at least 12 characters" in resp.content


def test_common_and_similar_passwords_are_refused(client: Client) -> None:
    for pw in ["password1234", "carolcarol12"]:
        client.post("/accounts/signup/", {"username": "carolcarol", "password1": pw, "password2": pw})
    assert not User.objects.filter(username="carolcarol").exists()


@pytest.mark.parametrize(
    ("mode", "invited", "allowed", "active"),
    [
        ("open", False, True, True),
        ("approval", False, True, False),
        ("closed", False, False, True),
        ("closed", True, True, True),
    ],
)
def test_signup_mode_rules(mode: str, invited: bool, allowed: bool, active: bool) -> None:
    assert signup_allowed(mode=mode, invited=invited) is allowed
    assert starts_active(mode=mode) is active


def test_open_signup_logs_in(client: Client) -> None:
    resp = client.post("/accounts/signup/", {"username": "carol", "password1": GOOD, "password2": GOOD})
    assert resp.status_code == 302 and resp["Location"] == "/"
    assert client.get("/").status_code == 200
    assert AuditEvent.objects.filter(kind=AuditEvent.SIGNED_UP, username="carol").exists()


def test_approval_signup_waits_until_staff_approve(client: Client, settings: Any) -> None:
    settings.SIGNUP_MODE = "approval"
    resp = client.post(
        "/accounts/signup/", {"username": "carol", "password1": GOOD, "password2": GOOD}, follow=True
    )
    assert b"waits for approval" in resp.content
    carol = User.objects.get(username="carol")
    assert not carol.is_active and client.get("/").status_code == 302
    assert (
        b"waits for approval" in _login(client, "carol", GOOD).content
        or "_auth_user_id" not in client.session
    )

    staff = User.objects.create_user("boss", password="boss-password-123", is_staff=True, is_superuser=True)
    Authenticator.objects.create(user=staff, type=Authenticator.Type.TOTP, data={"secret": "x"})
    admin = Client()
    admin.force_login(staff)
    resp = admin.post("/admin/auth/user/", {"action": "approve", "_selected_action": [carol.pk]})
    assert resp.status_code == 302
    carol.refresh_from_db()
    assert carol.is_active
    row = AuditEvent.objects.get(kind=AuditEvent.APPROVED)
    assert row.user == carol and row.actor == staff
    assert _login(Client(), "carol", GOOD).status_code == 302


def test_closed_signup_needs_an_invitation(client: Client, settings: Any) -> None:
    settings.SIGNUP_MODE = "closed"
    resp = client.get("/accounts/signup/")
    assert b"by invitation" in resp.content
    client.post("/accounts/signup/", {"username": "carol", "password1": GOOD, "password2": GOOD})
    assert not User.objects.filter(username="carol").exists()

    invitation, key = invitation_create(created_by=None, note="carol")
    assert client.get(f"/accounts/invite/{key}/")["Location"] == "/accounts/signup/"
    resp = client.post("/accounts/signup/", {"username": "carol", "password1": GOOD, "password2": GOOD})
    assert resp.status_code == 302
    invitation.refresh_from_db()
    assert invitation.used_by == User.objects.get(username="carol")
    # Used once: the link no longer opens sign-up.
    assert Client().get(f"/accounts/invite/{key}/").status_code == 404
    assert Invitation.objects.count() == 1


@pytest.mark.parametrize(
    ("path", "staff", "has_mfa", "sent"),
    [
        ("/admin/", True, False, True),
        ("/admin/auth/user/", True, False, True),
        ("/admin/", True, True, False),
        ("/admin/", False, False, False),
        ("/", True, False, False),
    ],
)
def test_needs_mfa_setup(path: str, staff: bool, has_mfa: bool, sent: bool) -> None:
    assert needs_mfa_setup(path=path, is_staff=staff, has_mfa=has_mfa) is sent


def test_staff_without_mfa_cannot_reach_admin(client: Client) -> None:
    staff = User.objects.create_user("boss", password="boss-password-123", is_staff=True, is_superuser=True)
    client.force_login(staff)
    resp = client.get("/admin/")
    assert resp.status_code == 302 and resp["Location"].startswith("/accounts/2fa/totp/activate/")
    assert client.get("/admin/auth/user/").status_code == 302
    Authenticator.objects.create(user=staff, type=Authenticator.Type.TOTP, data={"secret": "x"})
    assert client.get("/admin/").status_code == 200


def test_admin_login_is_allauths(client: Client) -> None:
    resp = client.get("/admin/login/?next=/admin/")
    assert resp.status_code == 302 and resp["Location"].startswith("/accounts/login/")


def _code(secret: str) -> str:
    return totp_auth.format_hotp_value(totp_auth.hotp_value(secret, int(time.time()) // 30))


def test_totp_enrolment_then_login_with_a_code(
    client: Client, user: Any, django_capture_on_commit_callbacks: Any, monkeypatch: Any
) -> None:
    assert _login(client, "alice", "pw-alice-123!").status_code == 302
    # Setting up a second factor asks for the password again (allauth's reauthentication).
    resp = client.get("/accounts/2fa/totp/activate/")
    assert resp["Location"].startswith("/accounts/reauthenticate/")
    assert client.post(resp["Location"], {"password": "pw-alice-123!"}).status_code == 302
    page = client.get("/accounts/2fa/totp/activate/")
    assert page.status_code == 200
    secret = client.session[totp_auth.SECRET_SESSION_KEY]
    with django_capture_on_commit_callbacks(execute=True):  # allauth announces it after commit
        assert client.post("/accounts/2fa/totp/activate/", {"code": _code(secret)}).status_code == 302
    assert Authenticator.objects.filter(user=user, type=Authenticator.Type.TOTP).exists()
    assert AuditEvent.objects.filter(kind=AuditEvent.MFA_ADDED, user=user).exists()
    client.post("/accounts/logout/")

    other = Client()
    resp = _login(other, "alice", "pw-alice-123!")
    assert resp["Location"] == "/accounts/2fa/authenticate/"
    assert "_auth_user_id" not in other.session  # not logged in before the code
    assert (
        other.post(
            "/accounts/2fa/authenticate/", {"code": "000000" if _code(secret) != "000000" else "111111"}
        ).status_code
        == 200
    )
    assert "_auth_user_id" not in other.session  # a wrong code: still not logged in
    # The same code cannot be used twice: the next log-in takes the next period's (time moved on).
    clock = FakeClock()
    monkeypatch.setattr(totp_auth, "time", clock)
    resp = other.post("/accounts/2fa/authenticate/", {"code": _code(secret)})
    assert resp.status_code == 302
    assert other.session["_auth_user_id"] == str(user.pk)
    again = Client()
    _login(again, "alice", "pw-alice-123!")
    assert again.post("/accounts/2fa/authenticate/", {"code": _code(secret)}).status_code == 200
    clock.now += 30
    next_code = totp_auth.format_hotp_value(totp_auth.hotp_value(secret, int(clock.now) // 30))
    resp = again.post("/accounts/2fa/authenticate/", {"code": next_code})
    assert resp.status_code == 302
    assert again.session["_auth_user_id"] == str(user.pk)


def test_removing_a_second_factor_is_audited(
    client: Client, user: Any, django_capture_on_commit_callbacks: Any
) -> None:
    assert _login(client, "alice", "pw-alice-123!").status_code == 302
    totp_auth.TOTP.activate(user, totp_auth.generate_totp_secret())
    # Removing one asks for the password again, as adding one does.
    asked = client.get("/accounts/2fa/totp/deactivate/")["Location"]
    assert asked.startswith("/accounts/reauthenticate/")
    assert client.post(asked, {"password": "pw-alice-123!"}).status_code == 302
    with django_capture_on_commit_callbacks(execute=True):  # allauth announces it after commit
        assert client.post("/accounts/2fa/totp/deactivate/").status_code == 302
    assert not Authenticator.objects.filter(user=user, type=Authenticator.Type.TOTP).exists()
    row = AuditEvent.objects.get(kind=AuditEvent.MFA_REMOVED, user=user)
    assert row.detail == {"type": Authenticator.Type.TOTP}


def test_audit_rows_for_login_failure_logout(client: Client, user: Any) -> None:
    _login(client, "alice", "nope-nope-nope")
    _login(client, "alice", "pw-alice-123!")
    client.post("/accounts/logout/")
    kinds = list(AuditEvent.objects.order_by("at", "pk").values_list("kind", "username", "address"))
    assert kinds == [
        (AuditEvent.LOGIN_FAILED, "alice", "127.0.0.1"),
        (AuditEvent.LOGIN, "alice", "127.0.0.1"),
        (AuditEvent.LOGOUT, "alice", "127.0.0.1"),
    ]


def test_password_change_is_audited(client: Client, user: Any) -> None:
    _login(client, "alice", "pw-alice-123!")
    resp = client.post(
        "/accounts/password/change/",
        {"oldpassword": "pw-alice-123!", "password1": GOOD, "password2": GOOD},
    )
    assert resp.status_code == 302
    assert AuditEvent.objects.filter(kind=AuditEvent.PASSWORD_CHANGED, user=user).exists()


def test_audit_prune_keeps_retention_days(user: Any) -> None:
    from datetime import timedelta

    from django.utils import timezone

    from accounts.audit import audit_prune, audit_record

    now = timezone.now()
    audit_record(kind=AuditEvent.LOGIN, user=user, at=now - timedelta(days=31))
    audit_record(kind=AuditEvent.LOGIN, user=user, at=now - timedelta(days=29))
    assert audit_prune(now=now, days=30) == 1
    assert AuditEvent.objects.count() == 1


def test_log_out_everywhere_else(user: Any) -> None:
    here, there = Client(), Client()
    _login(here, "alice", "pw-alice-123!")
    _login(there, "alice", "pw-alice-123!")
    assert there.get("/").status_code == 200
    page = here.get("/accounts/settings/")
    assert b"Log out everywhere else (1)" in page.content
    assert here.post("/accounts/sessions/").status_code == 302
    assert there.get("/").status_code == 302
    assert here.get("/").status_code == 200
    assert AuditEvent.objects.filter(kind=AuditEvent.SESSIONS_ENDED, user=user).exists()


def test_settings_page_creates_and_revokes_a_token(client: Client, user: Any) -> None:
    from accounts.models import ApiToken
    from accounts.tokens import user_for_token

    client.force_login(user)
    resp = client.post(
        "/accounts/settings/", {"action": "create_token", "name": "laptop", "expires_in_days": "30"}
    )
    assert resp.status_code == 200 and resp["Cache-Control"] == "no-store"
    raw = resp.context["new_secret"]
    assert raw.startswith("cht_") and user_for_token(raw) == user
    token = ApiToken.objects.get()
    assert token.expires_at is not None
    assert raw.encode() not in client.get("/accounts/settings/").content  # shown once
    resp = client.post("/accounts/settings/", {"action": "revoke_token", "token_id": str(token.pk)})
    assert resp.status_code == 302
    assert user_for_token(raw) is None
    assert set(AuditEvent.objects.values_list("kind", flat=True)) >= {
        AuditEvent.TOKEN_CREATED,
        AuditEvent.TOKEN_REVOKED,
    }


def test_settings_page_needs_a_login(client: Client) -> None:
    assert client.get("/accounts/settings/")["Location"].startswith("/accounts/login/")


def test_existing_session_keeps_working(client: Client, user: Any) -> None:
    """A session made before allauth (Django's ModelBackend in the session) still authenticates."""
    client.force_login(user, backend="django.contrib.auth.backends.ModelBackend")
    assert client.get("/").status_code == 200


def test_failed_logins_count_per_account_whatever_the_host(client: Client, user: Any, settings: Any) -> None:
    """Fails on allauth's own key (site domain = the Host header without django.contrib.sites)."""
    settings.ACCOUNT_RATE_LIMITS = {"login_failed": "2/5m/key"}
    for host in ("localhost", "127.0.0.1"):
        client.post(
            "/accounts/login/", {"login": "alice", "password": "wrong-guess-1"}, headers={"host": host}
        )
    refused = client.post(
        "/accounts/login/", {"login": "Alice", "password": "pw-alice-123!"}, headers={"host": "testserver"}
    )
    assert b"Too many failed login attempts" in refused.content


@pytest.mark.parametrize(
    ("ua", "label"),
    [
        (
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36",
            "Chrome on Linux",
        ),
        ("Mozilla/5.0 (Android 14; Mobile; rv:133.0) Gecko/133.0 Firefox/133.0", "Firefox on Android"),
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
            "Version/18.1 Mobile/15E148 Safari/604.1",
            "Safari on iPhone",
        ),
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 "
            "Safari/537.36 Edg/131.0",
            "Edge on Windows",
        ),
        ("python-httpx/0.28.1", "python-httpx/0.28.1"),
        ("", "Unknown device"),
    ],
)
def test_device_label(ua: str, label: str) -> None:
    from accounts.devices import device_label

    assert device_label(ua) == label


def test_password_reset_by_email_ends_every_session(client: Client, user: Any, mailoutbox: Any) -> None:
    user.email = "alice@example.com"
    user.save()
    from allauth.account.models import EmailAddress

    EmailAddress.objects.create(user=user, email="alice@example.com", primary=True, verified=True)
    elsewhere = Client()
    _login(elsewhere, "alice", "pw-alice-123!")
    assert client.post("/accounts/password/reset/", {"email": "alice@example.com"}).status_code == 302
    assert len(mailoutbox) == 1
    link = re.search(r"http://testserver(/accounts/password/reset/key/\S+)", mailoutbox[0].body)
    assert link is not None
    form = client.get(link.group(1), follow=True)
    assert form.status_code == 200
    resp = client.post(form.redirect_chain[-1][0], {"password1": GOOD, "password2": GOOD})
    assert resp.status_code == 302
    assert _login(Client(), "alice", GOOD).status_code == 302
    assert elsewhere.get("/").status_code == 302
    assert AuditEvent.objects.filter(kind=AuditEvent.PASSWORD_RESET, user=user).exists()


def test_staff_create_an_invitation_in_admin(admin_client: Client, admin_user: Any) -> None:
    resp = admin_client.post("/admin/accounts/invitation/add/", {"note": "for carol"})
    assert resp.status_code == 200 and "no-store" in resp["Cache-Control"]
    invitation = Invitation.objects.get()
    assert invitation.created_by == admin_user and invitation.used_at is None
    link = re.search(r"http://testserver(/accounts/invite/[^/]+/)", resp.content.decode())
    assert link is not None and Client().get(link.group(1))["Location"] == "/accounts/signup/"
    assert link.group(1).encode() not in admin_client.get("/admin/accounts/invitation/").content
    assert admin_client.get("/admin/accounts/auditevent/").status_code == 200
    assert admin_client.get("/admin/accounts/auditevent/add/").status_code == 403
