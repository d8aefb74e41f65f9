"""Lost rights close sockets on every process (#16 item 4): a user deactivated, or a staff member
demoted, in one process has their sockets on another daphne process closed with 4001 within 5 s."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from accounts.tokens import api_token_create
from tests.servers import SESSION_LAYER_PREFIX, daphne_servers

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

CLOSE_WITHIN_S = 5.0


@pytest.fixture(autouse=True)
def _layer_shared_with_the_servers(settings: Any) -> Iterator[None]:
    """This process announces through the servers' channel layer (their prefix), as another server
    process of the same deployment would."""
    config = settings.CHANNEL_LAYERS["default"]["CONFIG"]
    settings.CHANNEL_LAYERS = {
        "default": {
            **settings.CHANNEL_LAYERS["default"],
            "CONFIG": {**config, "prefix": SESSION_LAYER_PREFIX},
        }
    }
    yield


def _ws_url(server: Any, thread_id: int) -> str:
    return server.base_url.replace("http://", "ws://") + f"/ws/threads/{thread_id}/"


def _close_code_within(ws: Any, timeout: float) -> tuple[int | None, float]:
    """The close code the server sends within `timeout` s, and how long it took (frames are skipped)."""
    start = time.monotonic()
    try:
        while True:
            ws.recv(timeout=max(0.01, timeout - (time.monotonic() - start)))
    except ConnectionClosed as exc:
        return (exc.rcvd.code if exc.rcvd else None), time.monotonic() - start
    except TimeoutError:
        return None, time.monotonic() - start


def test_deactivating_a_user_closes_their_socket_on_another_process(user: Any, staff_user: Any) -> None:
    _, alice_raw = api_token_create(user=user)
    _, carol_raw = api_token_create(user=staff_user)
    alice = {"Authorization": f"Bearer {alice_raw}"}
    carol = {"Authorization": f"Bearer {carol_raw}"}
    with daphne_servers(2) as (a, b):
        thread = httpx.post(a.url("/api/threads"), json={}, headers=alice).json()
        with (
            connect(_ws_url(b, thread["id"]), additional_headers=alice) as alices,
            connect(_ws_url(b, thread["id"]), additional_headers=carol) as carols,
        ):
            for ws in (alices, carols):
                assert json.loads(ws.recv(timeout=10))["type"] == "snapshot"

            # This process, as another server would: the ORM save, its signal, the channel layer.
            staff_user.is_staff = False
            staff_user.save()
            assert _close_code_within(carols, CLOSE_WITHIN_S)[0] == 4001

            user.is_active = False
            user.save()
            code, took = _close_code_within(alices, CLOSE_WITHIN_S)
            assert code == 4001, f"closed with {code} after {took:.2f} s"
        # Neither comes back (a refused handshake is a 403): alice is inactive, and carol no longer
        # sees alice's thread.
        for headers in (alice, carol):
            with pytest.raises(InvalidStatus):
                connect(_ws_url(a, thread["id"]), additional_headers=headers)


@pytest.fixture
def staff_user(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user(username="carol", is_staff=True)
