"""Single sign-on: a full OpenID Connect log-in against a real OIDC server process (oidc-provider-mock,
started here), through allauth's openid_connect provider configured as OIDC_PROVIDERS would."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from django.contrib.auth.models import User
from django.test import Client

from accounts.models import AuditEvent
from tests.servers import free_port, wait_until

pytestmark = [pytest.mark.django_db, pytest.mark.slow]


@pytest.fixture(scope="module")
def issuer() -> Iterator[str]:
    port = free_port()
    claims = {"sub": "oidc-carol", "email": "carol@example.com", "preferred_username": "carol"}
    exe = Path(sys.executable).with_name("oidc-provider-mock")
    proc = subprocess.Popen(
        [str(exe), "--port", str(port), "--user-claims", json.dumps(claims)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        # Until it answers its discovery document, or stops.
        wait_until(lambda: proc.poll() is not None or _discovers(url), timeout=30, interval=0.1)
        assert proc.poll() is None, "oidc-provider-mock did not start"
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def _discovers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/.well-known/openid-configuration", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


@pytest.fixture
def oidc_settings(settings: Any, issuer: str) -> None:
    settings.SOCIALACCOUNT_PROVIDERS = {
        "openid_connect": {
            "OAUTH_PKCE_ENABLED": True,
            "APPS": [
                {
                    "provider_id": "mock",
                    "name": "Mock SSO",
                    "client_id": "chatapp-test",
                    "secret": "chatapp-test-secret",
                    "settings": {"server_url": issuer},
                }
            ],
        }
    }


def _round_trip(client: Client, issuer: str, sub: str) -> Any:
    start = client.post("/accounts/oidc/mock/login/", {"process": "login"})
    assert start.status_code == 302 and start["Location"].startswith(f"{issuer}/oauth2/authorize")
    with httpx.Client() as browser:  # the user at the provider: picks the subject, is sent back
        form = browser.get(start["Location"])
        assert form.status_code == 200
        back = browser.post(start["Location"], data={"sub": sub})
    assert back.status_code in (302, 303)
    callback = urlsplit(back.headers["location"])
    assert callback.path == "/accounts/oidc/mock/login/callback/"
    return client.get(callback.path, {k: v[0] for k, v in parse_qs(callback.query).items()})


def test_login_page_offers_the_provider(client: Client, oidc_settings: None) -> None:
    assert b"Mock SSO" in client.get("/accounts/login/").content


def test_oidc_round_trip_signs_up_and_logs_in(client: Client, oidc_settings: None, issuer: str) -> None:
    done = _round_trip(client, issuer, "oidc-carol")
    assert done.status_code == 302, done.content[:2000]
    user = User.objects.get(socialaccount__uid="oidc-carol")
    assert client.session["_auth_user_id"] == str(user.pk)
    assert client.get("/").status_code == 200
    assert AuditEvent.objects.filter(kind=AuditEvent.LOGIN, user=user).exists()
    # Again, from another browser: the same account, no second one.
    again = Client()
    assert _round_trip(again, issuer, "oidc-carol").status_code == 302
    assert again.session["_auth_user_id"] == str(user.pk)
    assert User.objects.count() == 1


def test_oidc_sign_up_follows_closed_mode(
    client: Client, oidc_settings: None, issuer: str, settings: Any
) -> None:
    settings.SIGNUP_MODE = "closed"
    done = _round_trip(client, issuer, "oidc-dave")
    assert (
        b"by invitation" in done.content or done.status_code == 302 and "_auth_user_id" not in client.session
    )
    assert not User.objects.exists()
