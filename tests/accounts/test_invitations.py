"""Invitation links are stored as hashes only (accounts/invitations.py): what the database holds opens
nothing, and links sent before the change keep working (migration 0004 hashes the stored keys)."""

from __future__ import annotations

import hashlib
import importlib
import re
from datetime import timedelta
from importlib import import_module
from types import SimpleNamespace
from typing import Any

import pytest
from django.apps import apps
from django.conf import settings
from django.db import connection
from django.test import Client
from django.utils import timezone

from accounts.invitations import SESSION_KEY, invitation_create
from accounts.models import Invitation

pytestmark = pytest.mark.django_db


def _sha256(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _stored_strings() -> list[str]:
    """Every text the database holds of the invitation (each column, and the visitor's session)."""
    sessions = import_module(settings.SESSION_ENGINE).SessionStore.get_model_class()
    row = Invitation.objects.values().get()
    texts = [v for v in row.values() if isinstance(v, str)]
    return texts + [s.session_data for s in sessions.objects.all()]


def test_the_database_holds_no_usable_invitation(admin_client: Client, settings: Any) -> None:
    """Fails on the old code: the key itself was stored (and opened sign-up from the database's copy)."""
    settings.SIGNUP_MODE = "closed"
    resp = admin_client.post("/admin/accounts/invitation/add/", {"note": "for carol"}, follow=True)
    link = re.search(r"/accounts/invite/([^/]+)/", resp.content.decode())
    assert link is not None
    key = link.group(1)
    visitor = Client()
    assert visitor.get(f"/accounts/invite/{key}/")["Location"] == "/accounts/signup/"

    stored = _stored_strings()
    assert not any(key in text for text in stored)
    for text in stored:
        assert Client().get(f"/accounts/invite/{text}/").status_code == 404
    assert visitor.session[SESSION_KEY] == _sha256(key)


def test_a_link_sent_before_the_migration_still_opens_sign_up(settings: Any) -> None:
    settings.SIGNUP_MODE = "closed"
    migration = importlib.import_module("accounts.migrations.0004_invitation_key_hash")
    old_key = "an-old-plain-text-key-from-before-0004"
    Invitation.objects.create(key_hash=old_key, expires_at=timezone.now() + timedelta(days=1))

    migration.hash_keys(apps, SimpleNamespace(connection=connection))

    assert Invitation.objects.get().key_hash == _sha256(old_key)
    assert Client().get(f"/accounts/invite/{old_key}/")["Location"] == "/accounts/signup/"
    assert Client().get(f"/accounts/invite/{_sha256(old_key)}/").status_code == 404


def test_an_expired_invitation_opens_nothing() -> None:
    invitation, key = invitation_create(created_by=None, now=timezone.now() - timedelta(days=30))
    assert invitation.expires_at < timezone.now()
    assert Client().get(f"/accounts/invite/{key}/").status_code == 404
