"""chatapp/asgi.py's ApiASGIHandler copies three methods of Django 5.2's ASGIHandler and changes a few
lines of each. Pinning the source they were copied from makes a Django upgrade that changes them fail
here, instead of the copies silently keeping the old behaviour (or missing a security fix)."""

from __future__ import annotations

import hashlib
import inspect

import django
import pytest
from django.core.handlers.asgi import ASGIHandler

from chatapp.asgi import ApiASGIHandler

# sha256 of inspect.getsource(ASGIHandler.<method>) in Django 5.2.19, and what our copy changes.
PINNED = {
    "handle": (
        "98faeb5bef800331e6a8002fbc96b30e4122a23438ae45a047190a531ea11323",
        "request_started/request_finished sent inline instead of through sync_to_async",
    ),
    "__call__": (
        "f756809e9c9308dcccb78a301fccf09196e80cdc4745690f80384d09b69dd102",
        "a few long-lived executors instead of a fresh ThreadSensitiveContext executor per request",
    ),
    "listen_for_disconnect": (
        "c729aa315c734f98cc8a6460d75adcae548e97549b6600388666fbbf6fcba2a9",
        "a disconnect returns instead of raising RequestAborted",
    ),
}


def _digest(method: object) -> str:
    return hashlib.sha256(inspect.getsource(method).encode()).hexdigest()  # type: ignore[arg-type]


@pytest.mark.parametrize("name", sorted(PINNED))
def test_the_copied_django_source_is_unchanged(name: str) -> None:
    expected, change = PINNED[name]
    assert _digest(getattr(ASGIHandler, name)) == expected, (
        f"Django {django.get_version()} changed ASGIHandler.{name}, which chatapp/asgi.py's "
        f"ApiASGIHandler.{name} copies from Django 5.2.19 ({change}). Diff the new "
        f"django/core/handlers/asgi.py against 5.2.19's, carry the change into the copy (or drop the "
        f"copy if Django now does the same), run tests/chatapp/test_api_handler.py, then update the "
        f"hash in {__name__}.PINNED."
    )


@pytest.mark.parametrize("name", sorted(PINNED))
def test_the_copies_still_override_django(name: str) -> None:
    """A pin for a method chatapp/asgi.py no longer copies would guard nothing: remove it."""
    assert name in vars(ApiASGIHandler), f"ApiASGIHandler no longer overrides {name}: drop its pin"
