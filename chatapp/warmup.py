"""What a server process makes ready before it serves (called once from chatapp/asgi.py): what the
first requests after each start or restart would otherwise build on their way, at a moment they wait.
"""

from __future__ import annotations

from django.urls import get_resolver

from providers import prepare_http


def warm_up() -> None:
    """Load the URLconf and build `reverse()`'s map, and make the providers' HTTP stack ready.

    The map, once: until one build has finished, every thread that calls `reverse()` builds its own
    (Django marks a build in progress per thread), and allauth's middleware calls it on every page
    request from the worker threads: a crowd of first requests spent about 1.5 s of one process's CPU
    on it (py-spy, a 1000-request burst on a fresh process)."""
    get_resolver().reverse_dict  # noqa: B018 (the property builds it)
    prepare_http()
