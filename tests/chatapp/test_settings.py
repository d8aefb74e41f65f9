"""Production settings: DEBUG off by default, refuse to start without SECRET_KEY, pass `check --deploy`
without a single warning, and answer with the hardened headers and cookies."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parents[2]


def _manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {
        k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "DEBUG", "DATABASE_URL", "REDIS_URL"}
    }
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_production_refuses_to_start_without_secret_key() -> None:
    proc = _manage("check", DEBUG="false")
    assert proc.returncode != 0
    assert "SECRET_KEY is not set" in proc.stderr


def _production(**env: str) -> dict[str, str]:
    return {
        "DEBUG": "false",
        "SECRET_KEY": secrets.token_urlsafe(50),  # 67 random characters
        "FIELD_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        "ALLOWED_HOSTS": "chat.example.com,testserver",
        **env,
    }


def test_production_settings_pass_check_deploy() -> None:
    proc = _manage("check", "--deploy", **_production())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # Nothing but the all-clear: no warning, not even a silenced one.
    assert proc.stdout == "System check identified no issues (0 silenced).\n"
    assert proc.stderr == ""


def test_production_refuses_to_start_without_a_field_encryption_key() -> None:
    """#17: connection API keys are encrypted under it; without it (or with a key that is not a Fernet
    key) production stops at once, saying how to make one."""
    missing = _manage("check", **_production(FIELD_ENCRYPTION_KEY=""))
    assert missing.returncode != 0
    assert "FIELD_ENCRYPTION_KEY is not set" in missing.stderr and "Fernet.generate_key()" in missing.stderr
    malformed = _manage("check", **_production(FIELD_ENCRYPTION_KEY=f"{Fernet.generate_key().decode()},oops"))
    assert malformed.returncode != 0
    assert "FIELD_ENCRYPTION_KEY: key 2 is not a Fernet key" in malformed.stderr


def test_debug_is_off_by_default() -> None:
    proc = _manage("check")  # neither DEBUG nor SECRET_KEY
    assert proc.returncode != 0
    assert "SECRET_KEY is not set" in proc.stderr and "DEBUG=true" in proc.stderr
    shown = _manage(
        "shell",
        "-c",
        "from django.conf import settings; print(settings.DEBUG)",
        SECRET_KEY="k" * 50,
        FIELD_ENCRYPTION_KEY=Fernet.generate_key().decode(),
    )
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip().splitlines()[-1] == "False"


def test_development_needs_only_debug_true() -> None:
    """What `make run` passes (Makefile: DEBUG ?= true): no other variable needed."""
    proc = _manage("check", DEBUG="true")
    assert proc.returncode == 0, proc.stderr


# Hashed static names need `collectstatic` (STORAGES under DEBUG=false); the probe renders pages with plain
# names instead, which changes nothing it checks.
_PROBE = """
import json
from django.test import Client, override_settings
from django.conf import settings
plain_static = {**settings.STORAGES, "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}
override_settings(STORAGES=plain_static).enable()
c = Client()
page = c.get("/accounts/login/", secure=True)
plain = c.get("/accounts/login/")
health = c.get("/healthz")
scrape = c.get("/metrics", headers={"Authorization": "Bearer scrape-token"})
cookie = page.cookies["csrftoken"]
print(json.dumps({
    "status": page.status_code,
    "hsts": page.get("Strict-Transport-Security"),
    "xfo": page.get("X-Frame-Options"),
    "nosniff": page.get("X-Content-Type-Options"),
    "referrer": page.get("Referrer-Policy"),
    "csp": page.get("Content-Security-Policy"),
    "csrf_cookie_secure": bool(cookie["secure"]),
    "plain": [plain.status_code, plain.get("Location")],
    "health": health.status_code,
    "scrape": scrape.status_code,
}))
print(json.dumps([settings.SESSION_COOKIE_SECURE, settings.SESSION_COOKIE_HTTPONLY, settings.CSRF_COOKIE_SECURE]))
"""


def test_production_responses_are_hardened(tmp_path: Path) -> None:
    """Under DEBUG=false, a real request through the full middleware stack (in a subprocess: settings are
    read once per process)."""
    db = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    assert _manage("migrate", "--noinput", "-v0", **_production(DATABASE_URL=db)).returncode == 0
    proc = _manage("shell", "-c", _PROBE, **_production(DATABASE_URL=db, METRICS_TOKEN="scrape-token"))
    assert proc.returncode == 0, proc.stderr
    *_, page_line, cookie_line = proc.stdout.strip().splitlines()
    page = json.loads(page_line)
    assert page["status"] == 200
    assert page["hsts"] == "max-age=31536000; includeSubDomains; preload"
    assert page["xfo"] == "DENY" and page["nosniff"] == "nosniff" and page["referrer"] == "same-origin"
    # django-csp does not keep the directives' order (it follows hash randomisation): compare by name.
    assert "script-src 'self'" in [d.strip() for d in page["csp"].split(";")]
    assert page["csrf_cookie_secure"] is True
    assert page["plain"] == [301, "https://testserver/accounts/login/"]  # http is redirected to https
    assert page["health"] == 200  # load balancers probe /healthz over plain http
    assert page["scrape"] == 200  # Prometheus scrapes each daphne host over plain http
    assert json.loads(cookie_line) == [True, True, True]  # session cookie: Secure, HttpOnly; CSRF: Secure


_SHOW_URLS = """
import json
from django.conf import settings
print(json.dumps({
    "engine": settings.DATABASES["default"]["ENGINE"],
    "redis": settings.REDIS_URL,
    "layer": settings.CHANNEL_LAYERS["default"]["BACKEND"],
    "openai": settings.PROVIDERS["openai"]["base_url"],
    "anthropic": settings.PROVIDERS["anthropic"]["base_url"],
    "max_chars": settings.MAX_MESSAGE_CHARS,
}))
"""


def test_an_empty_variable_counts_as_unset() -> None:
    """`DATABASE_URL=` (as many .env files have it) means "not set", not "a database with no engine"."""
    empty = {name: "" for name in ["DATABASE_URL", "REDIS_URL", "OPENAI_BASE_URL", "ANTHROPIC_BASE_URL"]}
    proc = _manage("shell", "-c", _SHOW_URLS, DEBUG="true", MAX_MESSAGE_CHARS=" ", **empty)
    assert proc.returncode == 0, proc.stderr
    shown = json.loads(proc.stdout.strip().splitlines()[-1])
    assert shown == {
        "engine": "django_prometheus.db.backends.sqlite3",
        "redis": "",
        "layer": "channels.layers.InMemoryChannelLayer",
        "openai": "https://api.openai.com/v1",
        "anthropic": "https://api.anthropic.com",
        "max_chars": 32_000,
    }


def test_a_bad_metrics_address_refuses_to_start() -> None:
    proc = _manage("check", DEBUG="true", METRICS_ALLOWED_IPS="10.0.0.0/8,prometheus.internal")
    assert proc.returncode != 0
    assert "METRICS_ALLOWED_IPS: 'prometheus.internal' is not an address or network" in proc.stderr


_PROXIED = """
import json
from django.test import RequestFactory
print(json.dumps(RequestFactory().get("/", headers={"X-Forwarded-Proto": "https"}).is_secure()))
"""


def test_x_forwarded_proto_is_trusted_only_when_asked() -> None:
    """daphne listening directly (the README's command): anyone can send `X-Forwarded-Proto: https`, and
    a request believed secure is never redirected to https. Behind a proxy that sets it, opt in."""
    direct = _manage("shell", "-c", _PROXIED, **_production())
    assert direct.returncode == 0, direct.stderr
    assert json.loads(direct.stdout.strip().splitlines()[-1]) is False
    proxied = _manage("shell", "-c", _PROXIED, **_production(TRUST_PROXY_HEADERS="true"))
    assert proxied.returncode == 0, proxied.stderr
    assert json.loads(proxied.stdout.strip().splitlines()[-1]) is True
