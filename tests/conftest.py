"""Shared fixtures.

The suite runs twice under `make test`: on the embedded defaults (SQLite + in-process channel layer)
and, for tests marked `services` or `both`, on PostgreSQL + Redis from DATABASE_URL / REDIS_URL.
Without those variables the `services` tests skip and say why; in CI (CI=true) they fail instead.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from channels import layers as channels_layers
from channels.layers import channel_layers
from django.conf import settings

from tests.needs import missing

# Channels' in-memory layer names channels with the `random` module, which Hypothesis reseeds to the
# same state for every example: two channels alive at once could get the same name, and one then
# received the other's messages (the fuzz tests met it as a stream that never heard its own events).
# A process has its own, unseeded names in production; so do the tests.
channels_layers.random = random.SystemRandom()

# The demo provider streams instantly in tests unless a test asks otherwise.
os.environ.setdefault("DEMO_TTFT_MS", "0")

SERVICES_MISSING = [v for v in ("DATABASE_URL", "REDIS_URL") if not os.environ.get(v)]


def pytest_runtest_setup(item: pytest.Item) -> None:
    """A `services` test without DATABASE_URL / REDIS_URL: skipped, saying why; in CI a failure."""
    if not SERVICES_MISSING or not item.get_closest_marker("services"):
        return
    reason = (
        f"needs real PostgreSQL and Redis: set {' and '.join(SERVICES_MISSING)} "
        "(e.g. DATABASE_URL=postgres://postgres@127.0.0.1:5432/test REDIS_URL=redis://127.0.0.1:6379/0)"
    )
    missing(reason)


@pytest.fixture(autouse=True)
def _no_user_quotas(settings: Any) -> None:
    """Tests send far faster than a person types and open more sockets than a person has tabs: the
    per-user quotas are off, except in the tests of them (tests/threads/test_quotas.py sets them)."""
    settings.SEND_RATE_PER_MIN = 0
    settings.MAX_SOCKETS_PER_USER = 0


@pytest.fixture(autouse=True)
def _no_account_rate_limits(settings: Any) -> None:
    """Tests log in and sign up far faster than people, from one address: allauth's rate limits are off,
    except in the tests of them (tests/accounts/test_allauth.py sets them)."""
    settings.ACCOUNT_RATE_LIMITS = False


@pytest.fixture(autouse=True)
def _fast_demo(settings: Any) -> None:
    settings.PROVIDERS = {
        **settings.PROVIDERS,
        "demo": {**settings.PROVIDERS["demo"], "ttft_ms": 0.0, "tokens_per_s": 2000.0},
    }


def _model_caches_reset() -> None:
    """The model catalog and users' groups are per-process caches too (providers/catalog.py)."""
    from providers import catalog
    from threads import modelaccess

    catalog.reset(drop=True)
    modelaccess.reset()


@pytest.fixture(autouse=True)
async def _fresh_layer_and_services() -> AsyncIterator[None]:
    """Each test gets a new channel layer and flag cache, and its loop's resources (generation
    service, providers, pacer, quotas, Redis client...) are closed after it, in order (core/loopres.py)."""
    from accounts.auth import _token_users
    from core.loopres import aclose_all
    from ops.flags import flags_reset
    from threads.chat import _threads

    channel_layers.backends.clear()
    flags_reset()
    _token_users.clear()  # per-process caches: ids are reused after each test's flush
    _threads.clear()
    _model_caches_reset()
    yield
    await aclose_all()
    flags_reset()
    for layer in channel_layers.backends.values():
        flush = getattr(layer, "flush", None)
        if flush is not None:
            await flush()
    channel_layers.backends.clear()


@pytest.fixture
def user(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user(username="alice", password="pw-alice-123!")


@pytest.fixture
def other_user(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user(username="bob", password="pw-bob-123!")


@pytest.fixture
def token(user: Any) -> str:
    from accounts.tokens import api_token_create

    _, raw = api_token_create(user=user)
    return raw


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup: None, django_db_blocker: Any) -> Iterator[None]:
    """Close connections that worker threads (sync_to_async) keep open under CONN_MAX_AGE, so the
    PostgreSQL test database can be dropped at the end of the session."""
    yield
    from django.db import connection

    if connection.vendor != "postgresql":
        return
    with django_db_blocker.unblock(), connection.cursor() as cur:
        cur.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix: None) -> None:
    """No connection pool in the test process: Django's test client keeps request threads' connections
    open (it disconnects close_old_connections from request_finished), so pooled connections would
    never be returned and the pool would run dry. The daphne processes that tests start keep it."""
    settings.DATABASES["default"].get("OPTIONS", {}).pop("pool", None)


@pytest.fixture
def admin_user(admin_user: Any) -> Any:
    """Staff need a second factor before admin opens (accounts/middleware.py): pytest-django's
    admin_user (and so admin_client) has one."""
    from allauth.mfa.models import Authenticator

    Authenticator.objects.create(user=admin_user, type=Authenticator.Type.TOTP, data={"secret": "unused"})
    return admin_user


class RecordingIntake:
    """A server for core/intake.py that records its pauses and resumes."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.paused, self.resumed = asyncio.Event(), asyncio.Event()

    def pause(self) -> None:
        self.calls.append("pause")
        self.paused.set()

    def resume(self) -> None:
        self.calls.append("resume")
        self.resumed.set()


@pytest.fixture
def intake_server() -> Iterator[RecordingIntake]:
    """A RecordingIntake installed for the test (core/intake.py), uninstalled after."""
    from core import intake

    installed = RecordingIntake()
    intake.install(installed)
    yield installed
    intake.install(None)
