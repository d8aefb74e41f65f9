"""Ending access ends it on open sockets too (accounts/signals.py announces it, threads/signals.py closes
the sockets): logging out closes that user's
session sockets in every tab, revoking or deleting an API token closes the sockets opened with it, and
a revoked token stops authenticating at once in this process (its cached lookup is dropped)."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.db import transaction
from django.test import Client

from accounts.auth import TOKEN_CACHE_TTL_S, _token_users, token_user
from accounts.models import ApiToken
from accounts.signals import user_rights_changed
from accounts.tokens import api_token_create, api_token_revoke, token_hash
from chatapp.asgi import application
from tests.accounts.sockets import (
    ORIGIN,
    TIMEOUT,
    closed_with,
    demo_thread,
    logged_in,
    open_socket,
    still_open,
)
from threads import signals
from threads.consumers import CLOSE_AUTH_REVOKED

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.both]


@pytest.fixture(autouse=True)
def _production_origin(settings: Any) -> None:
    settings.ALLOWED_HOSTS = ["app.example.com", "testserver"]


async def test_logout_closes_that_users_session_sockets_only(user: Any, other_user: Any, token: str) -> None:
    alice_a, alice_b, bob = (
        await sync_to_async(logged_in)(user),
        await sync_to_async(logged_in)(user),  # another browser: its own session
        await sync_to_async(logged_in)(other_user),
    )
    mine, theirs = await demo_thread(user), await demo_thread(other_user)
    tab1, tab2 = await open_socket(mine, client=alice_a), await open_socket(mine, client=alice_a)
    other_browser = await open_socket(mine, client=alice_b)
    by_token = await open_socket(mine, token=token)  # an API client of alice's: not a session
    bobs = await open_socket(theirs, client=bob)

    # The real log-out view (POST, CSRF checked by Django), as the page's "Log out" button does it.
    resp = await sync_to_async(alice_a.post)("/accounts/logout/")
    assert resp.status_code == 302

    # Every session socket of alice closes (other browsers reconnect and authenticate afresh).
    assert [await closed_with(c) for c in (tab1, tab2, other_browser)] == [CLOSE_AUTH_REVOKED] * 3
    await still_open(by_token)
    await still_open(bobs)
    # The logged-out browser's reconnect is refused; the other browser's is accepted.
    refused = WebsocketCommunicator(
        application,
        f"/ws/threads/{mine.pk}/",
        headers=[
            (b"origin", ORIGIN.encode()),
            (
                b"cookie",
                f"{settings.SESSION_COOKIE_NAME}={alice_a.cookies[settings.SESSION_COOKIE_NAME].value}".encode(),
            ),
        ],
    )
    assert await refused.connect(timeout=TIMEOUT) == (False, 4401)
    again = await open_socket(mine, client=alice_b)
    for comm in (by_token, bobs, again):
        await comm.disconnect()


async def test_revoking_a_token_closes_its_sockets_and_stops_it_at_once(user: Any) -> None:
    (row, raw), (_, other_raw) = (
        await sync_to_async(api_token_create)(user=user),
        await sync_to_async(api_token_create)(user=user),
    )
    mine = await demo_thread(user)
    assert await token_user(raw) is not None  # cached now, for TOKEN_CACHE_TTL_S
    with_it, with_other = await open_socket(mine, token=raw), await open_socket(mine, token=other_raw)
    by_session = await open_socket(mine, client=await sync_to_async(logged_in)(user))

    assert await sync_to_async(api_token_revoke)(tokens=ApiToken.objects.filter(pk=row.pk)) == 1

    assert await closed_with(with_it) == CLOSE_AUTH_REVOKED
    await still_open(with_other)
    await still_open(by_session)  # a token's revocation is not a log-out
    assert token_hash(raw) not in _token_users._items  # dropped, not left to expire
    assert await token_user(raw) is None
    comm = WebsocketCommunicator(
        application, f"/ws/threads/{mine.pk}/", headers=[(b"authorization", f"Bearer {raw}".encode())]
    )
    assert await comm.connect(timeout=TIMEOUT) == (False, 4401)
    # Revoking again revokes nothing.
    assert await sync_to_async(api_token_revoke)(tokens=ApiToken.objects.filter(pk=row.pk)) == 0
    await with_other.disconnect()
    await by_session.disconnect()


async def test_deleting_a_token_closes_its_sockets_and_stops_it_at_once(user: Any) -> None:
    row, raw = await sync_to_async(api_token_create)(user=user)
    mine = await demo_thread(user)
    assert await token_user(raw) is not None
    comm = await open_socket(mine, token=raw)
    await sync_to_async(row.delete)()
    assert await closed_with(comm) == CLOSE_AUTH_REVOKED
    assert await token_user(raw) is None


async def test_deactivating_a_user_drops_cached_tokens(user: Any) -> None:
    _, raw = await sync_to_async(api_token_create)(user=user)
    assert await token_user(raw) is not None
    user.is_active = False
    await sync_to_async(user.save)()
    assert await token_user(raw) is None
    assert TOKEN_CACHE_TTL_S == 5.0  # README: the cross-process bound on revocation


async def test_deleting_a_user_drops_cached_tokens(user: Any) -> None:
    _, raw = await sync_to_async(api_token_create)(user=user)
    assert await token_user(raw) is not None
    await sync_to_async(user.delete)()
    assert _token_users._items == {} and await token_user(raw) is None


def test_logging_out_when_not_logged_in_is_fine(client: Client) -> None:
    assert client.post("/accounts/logout/").status_code == 302


def test_logout_works_with_the_channel_layer_down(
    user: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    class DownLayer:
        async def group_send(self, group: str, message: dict[str, Any]) -> None:
            raise ConnectionError("redis is down")

    monkeypatch.setattr(signals, "get_channel_layer", lambda: DownLayer())
    client = logged_in(user)
    assert client.post("/accounts/logout/").status_code == 302
    assert client.get("/").status_code == 302  # logged out all the same
    assert "redis is down" in caplog.text  # logged by Django's robust on_commit


def test_rights_change_is_announced_after_commit_only(user: Any) -> None:
    heard: list[dict[str, Any]] = []

    def listen(sender: Any, **kwargs: Any) -> None:
        heard.append({k: kwargs[k] for k in ("user_id", "method", "token_hash")})

    row, _ = api_token_create(user=user)
    user_rights_changed.connect(listen, weak=False)
    try:
        with pytest.raises(RuntimeError), transaction.atomic():
            api_token_revoke(tokens=ApiToken.objects.filter(pk=row.pk))
            assert heard == []  # not before commit
            raise RuntimeError("roll back")
        assert heard == []  # a rolled-back revocation closes nothing
        api_token_revoke(tokens=ApiToken.objects.filter(pk=row.pk))
    finally:
        user_rights_changed.disconnect(listen)
    assert heard == [{"user_id": user.pk, "method": "token", "token_hash": row.key_hash}]
