"""A model switched through one process applies at once to sends through another (#17): the PATCH tells
every process to drop its copy of the thread (threads/control.py)."""

from __future__ import annotations

import httpx
import pytest

from providers.models import Connection, ModelOffer
from tests.servers import daphne_servers

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


def test_a_switch_through_a_applies_to_the_next_send_through_b(token: str) -> None:
    lab = Connection.objects.create(name="lab", kind="demo", rps=0)
    ModelOffer.objects.create(connection=lab, model="quick", label="Lab quick")
    auth = {"Authorization": f"Bearer {token}"}
    with daphne_servers(2, env={"DEMO_TTFT_MS": "0", "DEMO_TOKENS_PER_S": "500"}) as (a, b):
        thread = httpx.post(b.url("/api/threads"), json={"model": "demo/demo-1"}, headers=auth).json()
        url = b.url(f"/api/threads/{thread['id']}/messages")
        first = httpx.post(url, json={"content": "one"}, headers=auth, timeout=30)
        assert first.json()["assistant_message"]["model_id"] == "demo/demo-1"  # b now holds the thread
        switched = httpx.patch(
            a.url(f"/api/threads/{thread['id']}"), json={"model": "lab/quick"}, headers=auth
        )
        assert switched.status_code == 200, switched.text
        second = httpx.post(url, json={"content": "two"}, headers=auth, timeout=30)
        assert second.status_code == 200, second.text
        assert second.json()["assistant_message"]["model_id"] == "lab/quick"
