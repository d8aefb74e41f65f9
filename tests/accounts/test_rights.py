"""Open sockets lose the rights their user loses (#16 item 4): deactivating or deleting a user, changing
their password, or taking away staff closes their sockets with 4001 (accounts/signals.py announces it,
threads/signals.py closes them); a frame that acts (send, cancel) re-checks the user's row, so a change
that no signal announces (a queryset update) still stops the next act; and no socket outlives
WS_MAX_LIFETIME_S."""

from __future__ import annotations

import json
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.test import Client

from accounts.tokens import api_token_create
from chatapp.asgi import application
from tests.accounts.sockets import (
    TIMEOUT,
    closed_with,
    demo_thread,
    logged_in,
    open_socket,
    session_stored,
    still_open,
    untracked_session,
)
from threads.consumers import CLOSE_AUTH_REVOKED
from threads.models import Message, Thread

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.both]


@pytest.fixture(autouse=True)
def _production_origin(settings: Any) -> None:
    settings.ALLOWED_HOSTS = ["app.example.com", "testserver"]


@pytest.fixture
def staff(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user(username="carol", password="pw-carol-123!", is_staff=True)


async def _token(user: Any) -> str:
    return (await sync_to_async(api_token_create)(user=user))[1]


async def test_deactivating_a_user_closes_every_socket_of_theirs(user: Any, other_user: Any) -> None:
    mine, theirs = await demo_thread(user), await demo_thread(other_user)
    by_token = await open_socket(mine, token=await _token(user))
    by_session = await open_socket(mine, client=await sync_to_async(logged_in)(user))
    bobs = await open_socket(theirs, token=await _token(other_user))

    user.is_active = False
    await sync_to_async(user.save)()

    assert [await closed_with(c) for c in (by_token, by_session)] == [CLOSE_AUTH_REVOKED] * 2
    await still_open(bobs)
    await bobs.disconnect()


async def test_deleting_a_user_closes_their_session_sockets(user: Any) -> None:
    mine = await demo_thread(user)
    by_session = await open_socket(mine, client=await sync_to_async(logged_in)(user))
    await sync_to_async(user.delete)()
    assert await closed_with(by_session) == CLOSE_AUTH_REVOKED


async def test_a_password_change_closes_session_sockets_not_token_ones(user: Any) -> None:
    mine = await demo_thread(user)
    by_session = await open_socket(mine, client=await sync_to_async(logged_in)(user))
    by_token = await open_socket(mine, token=await _token(user))

    user.set_password("a-new-secret-456")
    await sync_to_async(user.save)()

    assert await closed_with(by_session) == CLOSE_AUTH_REVOKED
    await still_open(by_token)  # an API token is not a password: it stays valid
    await by_token.disconnect()


async def test_saving_a_user_without_losing_anything_closes_nothing(user: Any) -> None:
    mine = await demo_thread(user)
    comm = await open_socket(mine, client=await sync_to_async(logged_in)(user))
    user.first_name = "Alice"
    user.is_staff = True  # gaining rights takes nothing away
    await sync_to_async(user.save)()
    await still_open(comm)
    await comm.disconnect()


async def test_a_demoted_staff_member_stops_watching_other_users_threads(user: Any, staff: Any) -> None:
    alices = await demo_thread(user)
    raw = await _token(staff)
    watching = await open_socket(alices, token=raw)

    staff.is_staff = False
    await sync_to_async(staff.save)()

    assert await closed_with(watching) == CLOSE_AUTH_REVOKED
    again = WebsocketCommunicator(
        application, f"/ws/threads/{alices.pk}/", headers=[(b"authorization", f"Bearer {raw}".encode())]
    )
    assert await again.connect(timeout=TIMEOUT) == (False, 4404)


def test_deactivating_in_admin_closes_the_users_sockets(user: Any, admin_client: Client) -> None:
    """The admin's change form saves the row: the same signal, the same close."""
    from asgiref.sync import async_to_sync

    mine = Thread.objects.create(owner=user, provider="demo", model="demo-1")
    raw = api_token_create(user=user)[1]

    async def scenario() -> None:
        comm = await open_socket(mine, token=raw)
        resp = await sync_to_async(admin_client.post)(
            f"/admin/auth/user/{user.pk}/change/",
            {
                "username": user.username,
                "date_joined_0": "2026-01-01",
                "date_joined_1": "00:00:00",
                # is_active left out: the unchecked box
            },
        )
        assert resp.status_code == 302, resp.content.decode()[:2000]
        assert await closed_with(comm) == CLOSE_AUTH_REVOKED

    async_to_sync(scenario)()
    assert not get_user_model().objects.get(pk=user.pk).is_active


async def test_a_send_rechecks_the_user_a_queryset_update_deactivated(user: Any) -> None:
    """No signal announces `.update()`: the send frame itself re-reads the user's row (cached a few
    seconds per process: the test moves that cache's clock past its TTL)."""
    from accounts import rights

    now = [1000.0]
    rights.user_rights_cache.clock = lambda: now[0]
    mine = await demo_thread(user)
    comm = await open_socket(mine, token=await _token(user))
    await sync_to_async(get_user_model().objects.filter(pk=user.pk).update)(is_active=False)
    now[0] += rights.USER_RIGHTS_TTL_S + 0.01

    await comm.send_to(text_data=json.dumps({"type": "send", "content": "spend more", "request_id": "r-1"}))

    assert await closed_with(comm) == CLOSE_AUTH_REVOKED
    assert not await sync_to_async(Message.objects.filter(thread=mine).exists)()


async def test_a_cancel_rechecks_staff(user: Any, staff: Any) -> None:
    """A staff member demoted without a signal cannot cancel another user's reply on a socket opened as
    staff: the cancel frame closes the socket before acting."""
    from accounts import rights

    now = [1000.0]
    rights.user_rights_cache.clock = lambda: now[0]
    alices = await demo_thread(user)
    watching = await open_socket(alices, token=await _token(staff))
    await sync_to_async(get_user_model().objects.filter(pk=staff.pk).update)(is_staff=False)
    now[0] += rights.USER_RIGHTS_TTL_S + 0.01

    await watching.send_to(text_data=json.dumps({"type": "cancel", "request_id": "any-request"}))

    assert await closed_with(watching) == CLOSE_AUTH_REVOKED


async def test_a_socket_closes_at_its_maximum_lifetime(user: Any, settings: Any) -> None:
    # Longer than opening a socket takes on a loaded machine (its snapshot read included): at 0.2 s it
    # once closed before sending its snapshot (CI, PostgreSQL pass).
    settings.WS_MAX_LIFETIME_S = 2.0
    comm = await open_socket(await demo_thread(user), token=await _token(user))
    assert await closed_with(comm) == CLOSE_AUTH_REVOKED  # the page reconnects and resumes


async def test_log_out_everywhere_else_ends_a_session_allauth_never_tracked(user: Any) -> None:
    """Fails on the old code: only the sessions usersessions tracked ended, so one made before the
    migration (or used only by the API and sockets) kept its socket and its log-in."""
    old = await sync_to_async(untracked_session)(user)
    # Authenticated (a socket, which usersessions does not track; the test client's pages would).
    comm = await open_socket(await demo_thread(user), client=old)
    here = await sync_to_async(logged_in)(user)
    page = await sync_to_async(here.get)("/accounts/settings/")
    assert b"Log out everywhere else (1)" in page.content  # counted, though allauth lists only this one

    assert (await sync_to_async(here.post)("/accounts/sessions/")).status_code == 302

    assert await closed_with(comm) == CLOSE_AUTH_REVOKED
    assert not await sync_to_async(session_stored)(old)
    assert (await sync_to_async(old.get)("/api/threads")).status_code == 401
    assert (await sync_to_async(here.get)("/api/threads")).status_code == 200


@pytest.mark.parametrize("change", ["demote", "deactivate", "new password", "password set elsewhere"])
def test_losing_rights_ends_sessions_allauth_never_tracked(user: Any, change: str) -> None:
    """Fails on the old code: the untracked session stayed in the store (and, demoted, still logged in)."""
    user.is_staff = True
    user.save()
    old = untracked_session(user)
    here = logged_in(user)
    if change == "demote":
        user.is_staff = False
        user.save()
    elif change == "deactivate":
        user.is_active = False
        user.save()
    elif change == "password set elsewhere":  # admin, `manage.py changepassword`
        user.set_password("a-brand-new-password-42")
        user.save()
    else:
        new = "a-brand-new-password-42"
        form = {"oldpassword": "pw-alice-123!", "password1": new, "password2": new}
        assert here.post("/accounts/password/change/", form).status_code == 302
        assert here.get("/accounts/settings/").status_code == 200  # this session is kept
    assert not session_stored(old)
    assert old.get("/accounts/settings/").status_code == 302
