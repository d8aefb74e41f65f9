"""Every revocation path of #20 closes the affected sockets on another process within 5 s and ends the
sessions concerned: "log out everywhere else", a password change on the page, revoking a token over the
API, and demotion, each done through one real daphne process while the socket lives on the other."""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from django.conf import settings
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from accounts.tokens import api_token_create
from tests.accounts.sockets import untracked_session
from tests.servers import SESSION_LAYER_PREFIX, daphne_servers, wait_until

pytestmark = [pytest.mark.services, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

CLOSE_WITHIN_S = 5.0
PASSWORD = "pw-alice-123!"


@pytest.fixture(autouse=True)
def _layer_shared_with_the_servers(settings: Any) -> Iterator[None]:
    config = settings.CHANNEL_LAYERS["default"]["CONFIG"]
    settings.CHANNEL_LAYERS = {
        "default": {
            **settings.CHANNEL_LAYERS["default"],
            "CONFIG": {**config, "prefix": SESSION_LAYER_PREFIX},
        }
    }
    yield


def _close_code_within(ws: Any, timeout: float) -> tuple[int | None, float]:
    start = time.monotonic()
    try:
        while True:
            ws.recv(timeout=max(0.01, timeout - (time.monotonic() - start)))
    except ConnectionClosed as exc:
        return (exc.rcvd.code if exc.rcvd else None), time.monotonic() - start
    except TimeoutError:
        return None, time.monotonic() - start


class Browser:
    """A browser's cookies against one deployment (any of its processes)."""

    def __init__(self, agent: str) -> None:
        self.http = httpx.Client(headers={"User-Agent": agent}, timeout=10)

    def csrf(self, server: Any) -> str:
        if "csrftoken" not in self.http.cookies:
            self.http.get(server.url("/accounts/login/"))
        return self.http.cookies["csrftoken"]

    def post(self, server: Any, path: str, data: dict[str, str]) -> httpx.Response:
        token = self.csrf(server)
        return self.http.post(server.url(path), data={**data, "csrfmiddlewaretoken": token})

    def login(self, server: Any, password: str = PASSWORD) -> None:
        resp = self.post(server, "/accounts/login/", {"login": "alice", "password": password})
        assert resp.status_code == 302, resp.text[:500]

    def logged_in(self, server: Any) -> bool:
        return self.http.get(server.url("/")).status_code == 200

    @contextlib.contextmanager
    def socket(self, server: Any, thread_id: int) -> Iterator[Any]:
        cookie = "; ".join(f"{k}={v}" for k, v in self.http.cookies.items())
        with connect(
            server.base_url.replace("http://", "ws://") + f"/ws/threads/{thread_id}/",
            additional_headers={"Cookie": cookie, "Origin": server.base_url},
        ) as ws:
            assert json.loads(ws.recv(timeout=10))["type"] == "snapshot"
            yield ws


@pytest.fixture
def browsers() -> Iterator[Any]:
    """Makes Browsers, and closes their connections after the test."""
    made: list[Browser] = []

    def make(agent: str) -> Browser:
        made.append(Browser(agent))
        return made[-1]

    yield make
    for b in made:
        b.http.close()


def _thread(server: Any, raw_token: str) -> int:
    with httpx.Client() as http:
        resp = http.post(
            server.url("/api/threads"), json={}, headers={"Authorization": f"Bearer {raw_token}"}
        )
    return int(resp.json()["id"])


def test_log_out_everywhere_else_and_a_new_password(user: Any, browsers: Any) -> None:
    _, raw = api_token_create(user=user)
    with daphne_servers(2) as (a, b):
        thread_id = _thread(a, raw)
        here, phone, tablet = browsers("Firefox here"), browsers("Phone browser"), browsers("Tablet browser")
        for browser in (here, phone):
            browser.login(a)
        with phone.socket(b, thread_id) as ws:
            page = here.http.get(a.url("/accounts/settings/")).text
            assert "Log out everywhere else (1)" in page and "Phone browser" in page
            assert here.post(a, "/accounts/sessions/", {}).status_code == 302
            code, took = _close_code_within(ws, CLOSE_WITHIN_S)
            assert code == 4001, f"closed with {code} after {took:.2f} s"
        assert not phone.logged_in(b) and here.logged_in(b)

        tablet.login(b)
        with tablet.socket(b, thread_id) as ws:
            new = "a-brand-new-password-42"
            resp = here.post(
                a, "/accounts/password/change/", {"oldpassword": PASSWORD, "password1": new, "password2": new}
            )
            assert resp.status_code == 302, re.sub(r"\s+", " ", resp.text)[:800]
            code, took = _close_code_within(ws, CLOSE_WITHIN_S)
            assert code == 4001, f"closed with {code} after {took:.2f} s"
        assert not tablet.logged_in(a) and here.logged_in(a)
        assert "Log out everywhere else" not in here.http.get(a.url("/accounts/settings/")).text


def test_log_out_everywhere_else_ends_a_session_allauth_never_tracked(user: Any, browsers: Any) -> None:
    """Fails on the old code: a session made before the migration (written straight to the store here)
    kept its socket on the other process, and its log-in."""
    _, raw = api_token_create(user=user)
    key = untracked_session(user).cookies[settings.SESSION_COOKIE_NAME].value
    with daphne_servers(2) as (a, b):
        thread_id = _thread(a, raw)
        old, here = browsers("Old laptop"), browsers("Firefox here")
        old.http.cookies.set(settings.SESSION_COOKIE_NAME, key)
        here.login(a)
        with old.socket(b, thread_id) as ws:  # a socket: usersessions does not see it
            assert here.post(a, "/accounts/sessions/", {}).status_code == 302
            code, took = _close_code_within(ws, CLOSE_WITHIN_S)
            assert code == 4001, f"closed with {code} after {took:.2f} s"
        assert not old.logged_in(b) and here.logged_in(b)


def test_revoking_a_token_over_the_api_closes_its_socket(user: Any, browsers: Any) -> None:
    _, raw = api_token_create(user=user, name="cli")
    with daphne_servers(2) as (a, b):
        thread_id = _thread(a, raw)
        url = b.base_url.replace("http://", "ws://") + f"/ws/threads/{thread_id}/"
        with connect(url, additional_headers={"Authorization": f"Bearer {raw}"}) as ws:
            assert json.loads(ws.recv(timeout=10))["type"] == "snapshot"
            me = browsers("Firefox")
            me.login(a)
            token_id = me.http.get(a.url("/api/tokens")).json()["tokens"][0]["id"]
            resp = me.http.delete(a.url(f"/api/tokens/{token_id}"), headers={"X-CSRFToken": me.csrf(a)})
            assert resp.status_code == 204
            code, took = _close_code_within(ws, CLOSE_WITHIN_S)
            assert code == 4001, f"closed with {code} after {took:.2f} s"
        # The other process's token cache forgets it within its TTL (5 s): the token stops working.
        wait_until(
            lambda: (
                me.http.get(b.url("/api/threads"), headers={"Authorization": f"Bearer {raw}"}).status_code
                == 401
            ),
            timeout=6,
            interval=0.2,
        )


def test_demotion_closes_sockets_and_ends_sessions(user: Any, browsers: Any) -> None:
    user.is_staff = True
    user.save()
    _, raw = api_token_create(user=user)
    with daphne_servers(2) as (a, b):
        thread_id = _thread(a, raw)
        laptop = browsers("Laptop")
        laptop.login(a)
        with laptop.socket(b, thread_id) as ws:
            user.is_staff = False
            user.save()  # as admin on another process would
            code, took = _close_code_within(ws, CLOSE_WITHIN_S)
            assert code == 4001, f"closed with {code} after {took:.2f} s"
        assert not laptop.logged_in(a)


def test_failed_logins_count_across_processes(user: Any, browsers: Any) -> None:
    """The counts live in Redis: failures on one process refuse the right password on the other."""
    with daphne_servers(2, env={"ACCOUNT_LOGIN_FAILED_RATE": "3/5m/key"}) as (a, b):
        guesser = browsers("Guesser")
        for _ in range(3):
            assert (
                guesser.post(
                    a, "/accounts/login/", {"login": "alice", "password": "wrong-guess-1"}
                ).status_code
                == 200
            )
        owner = browsers("Owner")
        refused = owner.post(b, "/accounts/login/", {"login": "alice", "password": PASSWORD})
        assert refused.status_code in (200, 429) and "Too many failed login attempts" in refused.text
        assert not owner.logged_in(b)
