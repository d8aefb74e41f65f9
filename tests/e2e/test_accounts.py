"""Accounts in a real browser (#20): sign up, turn on an authenticator app, log out, log in with a code;
create and revoke an API token on the settings page."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.test_chat import PASSWORD, sign_up
from tests.totp import fresh_code

pytestmark = pytest.mark.browser


def _code(secret: str) -> str:
    return fresh_code(secret)


def test_sign_up_enable_totp_log_out_and_log_in_with_a_code(page: Page) -> None:
    username = sign_up(page)
    page.get_by_role("link", name="Settings").click()
    expect(page.locator("#mfa-status")).to_contain_text("off")
    page.get_by_role("link", name="Set up an authenticator app").click()
    # allauth asks for the password again before a second factor changes.
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Confirm").click()
    expect(page.get_by_role("img")).to_be_visible()  # the QR code (a data: URI, allowed by the CSP)
    secret = page.locator("#authenticator_secret").input_value()
    page.get_by_label("Authenticator code").fill(_code(secret))
    page.get_by_role("button", name="Activate").click()
    expect(page.locator(".messages")).to_contain_text("activated")

    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile(r"/accounts/login/$"))
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(re.compile(r"/accounts/2fa/authenticate/$"))
    page.get_by_label("Code").fill(_code(secret))
    page.get_by_role("button", name="Sign In").click()
    expect(page.get_by_role("heading", name="Your threads")).to_be_visible()
    page.goto("/accounts/settings/")
    expect(page.locator("#mfa-status")).to_contain_text("on")


def test_create_and_revoke_an_api_token_on_the_settings_page(page: Page) -> None:
    sign_up(page)
    page.goto("/accounts/settings/")
    tokens = page.locator("#tokens")
    expect(tokens).to_contain_text("No tokens.")
    tokens.get_by_label("Name").fill("laptop cli")
    tokens.get_by_label("Expires after (days)").fill("30")
    tokens.get_by_role("button", name="Create token").click()
    secret = page.locator("#new-token-value")
    expect(secret).to_have_value(re.compile(r"^cht_[A-Za-z0-9_-]{43}$"))
    row = page.locator("#token-list tbody tr")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("laptop cli")
    raw = secret.input_value()
    answer = page.request.get("/api/tokens", headers={"Authorization": f"Bearer {raw}"})
    assert answer.status == 200 and answer.json()["tokens"][0]["name"] == "laptop cli"

    page.goto("/accounts/settings/")  # shown once: gone after the answer that created it
    expect(page.locator("#new-token-value")).to_have_count(0)
    page.get_by_role("button", name="Revoke laptop cli").click()
    expect(page.locator(".messages")).to_contain_text("Token revoked")
    expect(page.locator("#tokens")).to_contain_text("No tokens.")
    answer = page.request.get("/api/tokens", headers={"Authorization": f"Bearer {raw}"})
    assert answer.status == 401


def test_security_key_with_a_virtual_authenticator(page: Page, base_url: str) -> None:
    """WebAuthn under our Content-Security-Policy: allauth's scripts run (files and JSON data blocks, no
    inline script), Chromium's virtual authenticator plays the key. On localhost: WebAuthn needs a
    secure context and a domain, not an address."""
    local = base_url.replace("127.0.0.1", "localhost")
    cdp = page.context.new_cdp_session(page)
    cdp.send("WebAuthn.enable")
    cdp.send(
        "WebAuthn.addVirtualAuthenticator",
        {
            "options": {
                "protocol": "ctap2",
                "transport": "usb",
                "hasResidentKey": True,
                "hasUserVerification": True,
                "isUserVerified": True,
                "automaticPresenceSimulation": True,
            }
        },
    )
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    username = sign_up(page, local)
    page.goto(f"{local}/accounts/2fa/webauthn/add/")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Confirm").click()
    page.get_by_label("Name").fill("my key")
    page.get_by_role("button", name="Add").click()
    expect(page.locator(".messages")).to_contain_text("added")
    page.goto(f"{local}/accounts/settings/")
    expect(page.locator("#mfa-status")).to_contain_text("security keys")

    page.get_by_role("button", name="Log out").click()
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("button", name="Use a security key").click()
    expect(page.get_by_role("heading", name="Your threads")).to_be_visible()
    assert not [e for e in errors if "Content Security Policy" in e], errors
