"""Admin's "fetch models" (#17): each kind's model list read from the fake server, new ones added unticked."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from providers.fake.server import ThreadedFakeServer
from providers.listing import ListingError, fetch_model_ids
from providers.models import Connection, ModelOffer


@pytest.fixture(scope="module")
def fake() -> Any:
    with ThreadedFakeServer(ttft_ms=0, tps=0, tokens=3) as server:
        yield server


@pytest.mark.parametrize("kind", ["openai", "anthropic", "gemini"])
def test_each_kind_reads_its_list(fake: Any, kind: str) -> None:
    base = fake.openai_base_url if kind == "openai" else fake.base_url
    assert fetch_model_ids(kind=kind, base_url=base, api_key="k") == ["fake-model", "fake-model-large"]


def test_an_unreachable_server_is_a_clear_error() -> None:
    with pytest.raises(ListingError, match="could not be reached"):
        fetch_model_ids(kind="openai", base_url="http://127.0.0.1:9", api_key="sk-secret")


@pytest.mark.django_db
def test_the_admin_action_adds_new_models_unticked(fake: Any, admin_user: User) -> None:
    conn = Connection(name="fk", kind="gemini", base_url=fake.base_url)
    conn.set_api_key("g-key")
    conn.save()
    ModelOffer.objects.create(connection=conn, model="fake-model", label="Mine")
    client = Client()
    client.force_login(admin_user)
    resp = client.post(
        "/admin/providers/connection/",
        {"action": "fetch_models", "_selected_action": [conn.pk]},
        follow=True,
    )
    assert resp.status_code == 200 and b"2 models listed, 1 new" in resp.content
    offers = dict(ModelOffer.objects.values_list("model", "offered"))
    assert offers == {"fake-model": True, "fake-model-large": False}
    assert ModelOffer.objects.get(model="fake-model").label == "Mine"  # staff's choices are kept


@pytest.mark.django_db
def test_the_admin_never_shows_the_key(admin_user: User) -> None:
    client = Client()
    client.force_login(admin_user)
    resp = client.post(
        "/admin/providers/connection/add/",
        {
            "name": "acct",
            "kind": "openai",
            "base_url": "https://api.example.com/v1",
            "api_key": "sk-admin-123",
            "enabled": "on",
            "rps": "5",
            "burst": "2",
            "bucket": "",
            "offers-TOTAL_FORMS": "0",
            "offers-INITIAL_FORMS": "0",
        },  # fmt: skip
        follow=True,
    )
    assert resp.status_code == 200, resp.content[:500]
    row = Connection.objects.get(name="acct")
    assert row.api_key == "sk-admin-123" and "sk-admin-123" not in row.api_key_encrypted
    page = client.get(f"/admin/providers/connection/{row.pk}/change/")
    assert page.status_code == 200 and b"sk-admin-123" not in page.content
