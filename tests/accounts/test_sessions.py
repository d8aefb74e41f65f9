"""The session store names each session's user (accounts/sessions.py), so ending a user's sessions
reaches every one of them; migration 0003 brings django_session's sessions over, named."""

from __future__ import annotations

import importlib
from types import SimpleNamespace
from typing import Any

import pytest
from django.apps import apps
from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.sessions.backends.db import SessionStore as DjangoDbStore
from django.db import connection
from django.test import Client

from accounts.models import Session
from accounts.sessions import end_stale_sessions, end_user_sessions, session_user_id

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("data", "user_id"),
    [
        ({SESSION_KEY: "7"}, 7),
        ({SESSION_KEY: 7}, 7),
        ({}, None),
        ({SESSION_KEY: "x"}, None),
        ({SESSION_KEY: None}, None),
    ],
)
def test_session_user_id(data: dict[str, Any], user_id: int | None) -> None:
    assert session_user_id(data) == user_id


def test_a_login_names_its_user_and_a_logout_removes_it(client: Client, user: Any) -> None:
    client.force_login(user)
    key = client.cookies[settings.SESSION_COOKIE_NAME].value
    assert Session.objects.get(session_key=key).user_id == user.pk
    client.post("/accounts/logout/")
    assert not Session.objects.filter(session_key=key).exists()


def test_a_session_from_before_the_migration_keeps_working_and_can_be_ended(
    user: Any, other_user: Any
) -> None:
    """A session in Django's own table (the store before the migration) is copied over, named."""
    old = DjangoDbStore()
    old.update(
        {
            SESSION_KEY: str(user.pk),
            BACKEND_SESSION_KEY: "django.contrib.auth.backends.ModelBackend",
            HASH_SESSION_KEY: user.get_session_auth_hash(),
        }
    )
    old.save()
    anonymous = DjangoDbStore()
    anonymous["seen"] = True
    anonymous.save()
    migration = importlib.import_module("accounts.migrations.0003_session_names_its_user")
    Session.objects.all().delete()  # as the migration found it: nothing in the new table yet

    migration.copy_sessions(apps, SimpleNamespace(connection=connection))

    assert dict(Session.objects.values_list("session_key", "user_id")) == {
        old.session_key: user.pk,
        anonymous.session_key: None,
    }
    client = Client()
    client.cookies[settings.SESSION_COOKIE_NAME] = str(old.session_key)
    assert client.get("/accounts/settings/").status_code == 200
    assert end_user_sessions(user_id=other_user.pk) == 0
    assert end_user_sessions(user_id=user.pk) == 1
    assert client.get("/accounts/settings/").status_code == 302


def test_sessions_made_under_an_old_password_end_and_the_others_stay(user: Any) -> None:
    from django.contrib.auth.hashers import make_password

    from tests.accounts.sockets import session_stored, untracked_session

    before = untracked_session(user)
    # A new password written without the signal (which would end them itself).
    type(user).objects.filter(pk=user.pk).update(password=make_password("a-brand-new-password-42"))
    user.refresh_from_db()
    after = untracked_session(user)
    assert end_stale_sessions(user_id=user.pk) == 1
    assert not session_stored(before) and session_stored(after)
    assert end_stale_sessions(user_id=user.pk + 1000) == 0
