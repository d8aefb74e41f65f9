"""Helpers for the tests of sockets losing rights: open a socket as a browser (session cookie, the
production origin) or an API client (Bearer token), and read how it ends."""

from __future__ import annotations

import json
from typing import Any

from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import Client

from chatapp.asgi import application
from threads.models import Thread

TIMEOUT = 10
ORIGIN = "https://app.example.com"


def logged_in(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def untracked_session(user: Any) -> Client:
    """A client whose session was written straight to the session store, as one made before allauth
    was installed: allauth's usersessions never saw it (the API and sockets do not track either)."""
    from importlib import import_module

    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY

    store = import_module(settings.SESSION_ENGINE).SessionStore()
    store[SESSION_KEY] = str(user.pk)
    store[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    store[HASH_SESSION_KEY] = user.get_session_auth_hash()
    store.save()
    client = Client()
    client.cookies[settings.SESSION_COOKIE_NAME] = store.session_key
    return client


def session_stored(client: Client) -> bool:
    """Does the client's session still exist in the session store?"""
    from importlib import import_module

    key = client.cookies[settings.SESSION_COOKIE_NAME].value
    return bool(import_module(settings.SESSION_ENGINE).SessionStore().exists(key))


async def open_socket(
    thread: Thread, *, client: Client | None = None, token: str = ""
) -> WebsocketCommunicator:
    headers = [(b"origin", ORIGIN.encode())]
    if client is not None:
        cookie = f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"
        headers.append((b"cookie", cookie.encode()))
    if token:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    comm = WebsocketCommunicator(application, f"/ws/threads/{thread.pk}/", headers=headers)
    assert (await comm.connect(timeout=TIMEOUT))[0]
    assert (await comm.receive_json_from(timeout=TIMEOUT))["type"] == "snapshot"
    return comm


async def closed_with(comm: WebsocketCommunicator) -> int:
    out = await comm.receive_output(timeout=TIMEOUT)
    assert out["type"] == "websocket.close", out
    return int(out["code"])


async def still_open(comm: WebsocketCommunicator) -> None:
    """Open and served: a frame gets its answer (an error frame, the socket stays open)."""
    await comm.send_to(text_data=json.dumps({"type": "ping?"}))
    ev = await comm.receive_json_from(timeout=TIMEOUT)
    assert ev["type"] == "error" and ev["error"]["code"] == "unknown_type"


async def demo_thread(owner: Any) -> Thread:
    return await sync_to_async(Thread.objects.create)(owner=owner, provider="demo", model="demo-1")
