"""ASGI entry point: HTTP through Django, WebSockets through Channels (auth + origin check)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import ThreadSensitiveContext
from django.core.asgi import get_asgi_application

from chatapp.daphne_tuning import (
    answers_sent_at_once,
    intake_held_for_leaders,
    skip_twisted_access_log,
    skip_twisted_form_parsing,
    urgent_first,
)

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatapp.settings")
# Django must be set up before importing code that touches models.
django_asgi_app = get_asgi_application()
skip_twisted_form_parsing()
skip_twisted_access_log()  # daphne writes its own
answers_sent_at_once()  # a follower's answer leaves when it is finished
urgent_first()  # a burst's leader and the generations go first (core/urgent.py)
intake_held_for_leaders()  # and the burst's rest is read once its leader is on its way (core/intake.py)

from typing import Any  # noqa: E402

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core import signals  # noqa: E402
from django.core.exceptions import RequestAborted  # noqa: E402
from django.core.handlers.asgi import ASGIHandler, get_script_prefix  # noqa: E402
from django.urls import path, set_script_prefix  # noqa: E402

from accounts.auth import WebsocketAuthStack  # noqa: E402
from chatapp.bodylimit import BodyLimitMiddleware  # noqa: E402
from chatapp.dependencies import WebsocketDependencyGuard  # noqa: E402
from chatapp.gctuning import tune_gc  # noqa: E402
from chatapp.middleware import API_MIDDLEWARE, API_PREFIX  # noqa: E402
from chatapp.origin import SameOriginValidator  # noqa: E402
from chatapp.shutdown import ConnectionTracker, install_graceful_shutdown  # noqa: E402
from chatapp.warmup import warm_up  # noqa: E402
from core import later  # noqa: E402
from core.writebuffer import WriteBufferProbe  # noqa: E402
from threads import sendgate  # noqa: E402
from threads.consumers import ThreadConsumer  # noqa: E402


class ApiASGIHandler(ASGIHandler):
    """Django's handler with the async-only API_MIDDLEWARE instead of MIDDLEWARE (no thread hops)."""

    def load_middleware(self, is_async: bool = False) -> None:
        # BaseHandler.load_middleware reads settings.MIDDLEWARE; swap it for the duration of the call
        # (once, at start-up, before any request is served).
        full = settings.MIDDLEWARE
        settings.MIDDLEWARE = API_MIDDLEWARE
        try:
            super().load_middleware(is_async)
        finally:
            settings.MIDDLEWARE = full

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """As Django's, but the request's thread-sensitive calls (the request_started and
        request_finished signal receivers, closing the response) run on one of a few long-lived
        threads. Django's handler gives every request a fresh single-thread executor, which costs
        starting and joining two threads per request (a tenth of the CPU of a burst of sends)."""
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        # Leader first (threads/sendgate.py): a send waits while the thread's first send in this
        # process is on its way to the provider; that one lets go in the view, or here at the latest.
        thread_id = sendgate.send_thread_id(scope["method"], scope["path"])
        if thread_id is not None:
            await sendgate.take_turn(thread_id)
        try:
            async with ThreadSensitiveContext(executor=next(_SYNC_EXECUTORS)):
                await self.handle(scope, receive, send)
        finally:
            sendgate.release_turn()

    async def send_response(self, response: Any, send: Any) -> None:
        """As Django's, with the length of a whole body given (Django's CommonMiddleware sets it on pages):
        the client knows where the answer ends without chunks, and daphne can send it before ending the
        request (chatapp/daphne_tuning.answers_sent_at_once)."""
        if not response.streaming and not response.has_header("Content-Length"):
            response["Content-Length"] = str(len(response.content))
        await super().send_response(response, send)

    async def listen_for_disconnect(self, receive: Any) -> None:
        """As Django's, but a disconnect returns instead of raising RequestAborted: `handle` ignores
        it either way, and an exception left in a finished task is a reference cycle (task, exception,
        traceback, frames) per request for the garbage collector."""
        message = await receive()
        if message["type"] != "http.disconnect":
            raise AssertionError(f"Invalid ASGI message after request body: {message['type']}")

    async def handle(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Django's `ASGIHandler.handle` (5.2), but the view runs in this task (see below), and
        `request_started` and `request_finished` are sent inline instead of through `sync_to_async`:
        two thread hops per request fewer. Their receivers
        (reset_queries, close_old_connections, close_caches, reset_urlconf) touch only this thread's
        database connections, and an API request has none here: its queries run in `db_async` calls,
        which close stale connections themselves (chatapp/middleware.py loads session users that way).
        On a burst of sends each hop cost every request several turns of the event loop, and a
        leader's provider call waited behind those turns."""
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        set_script_prefix(get_script_prefix(scope))
        signals.request_started.send(sender=self.__class__, scope=scope)
        request, error_response = self.create_request(scope, body_file)
        if request is None:
            assert error_response is not None
            body_file.close()
            await self.send_response(error_response, send)
            error_response.close()
            return

        # As Django, a disconnect while the response is computed cancels the view; but the view runs in
        # this task, not a second one awaited beside the listener: on a burst each extra task and wait
        # was one more turn of a loop crowded with the other arrivals, on the leader's way to the provider.
        handler = asyncio.current_task()
        assert handler is not None
        state: dict[str, Any] = {"done": False, "disconnected": False, "error": None}

        async def watch() -> None:
            try:
                await self.listen_for_disconnect(receive)
            except AssertionError as exc:  # a message no client may send after the body
                state["error"] = exc
            if not state["done"]:
                state["disconnected"] = True
                handler.cancel()

        watcher = asyncio.create_task(watch())
        response = None
        try:
            response = await self.run_get_response(request)
            with contextlib.suppress(asyncio.CancelledError):  # the client left during send_response
                await self.send_response(response, send)
        except asyncio.CancelledError:
            if not state["disconnected"]:
                raise  # the server's own cancel (shutdown): not ours to swallow
            handler.uncancel()
        finally:
            state["done"] = True
            watcher.cancel()
            if response is None:
                signals.request_finished.send(sender=self.__class__)
            else:
                # Sends request_finished; once a burst's answers have left (core/later.py).
                later.call(response.close)
            body_file.close()
        if state["error"] is not None:
            raise state["error"]


# Each executor must run one call at a time (asgiref's rule for a context's executor); several of
# them let session lookups of different requests run side by side.
_SYNC_EXECUTORS = itertools.cycle(
    [ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"api-sync-{i}") for i in range(4)]
)
api_asgi_app = ApiASGIHandler()


async def http_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The send and thread endpoints take the lean handler; everything else the full stack."""
    app = api_asgi_app if scope["path"].startswith(API_PREFIX) else django_asgi_app
    await app(scope, receive, send)


websocket_urlpatterns = [path("ws/threads/<int:thread_id>/", ThreadConsumer.as_asgi())]

routes = ProtocolTypeRouter(
    {
        # Bodies over MAX_BODY_BYTES are refused while they arrive, before Django reads them.
        "http": BodyLimitMiddleware(http_app),
        "websocket": WebsocketDependencyGuard(
            SameOriginValidator(WebsocketAuthStack(URLRouter(websocket_urlpatterns)))
        ),
    }
)
# The process's open connections, for the drain on SIGTERM (chatapp/shutdown.py). Outermost: the
# consumer measures its connection's unsent bytes through daphne's own `send`.
connections = ConnectionTracker(routes)
application = WriteBufferProbe(connections)
install_graceful_shutdown(connections, grace_s=settings.SHUTDOWN_GRACE_S)

# A wrong FIELD_ENCRYPTION_KEY stops the server here; the environment's providers become connections.
if settings.CONNECTIONS_BOOTSTRAP:
    from providers.bootstrap import start_up as _connections_start_up

    _connections_start_up()

warm_up()
# Last: everything start-up creates exists now (chatapp/gctuning.py).
tune_gc(freeze=settings.GC_FREEZE, gen0_threshold=settings.GC_GEN0_THRESHOLD)
