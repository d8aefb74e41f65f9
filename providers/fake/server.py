"""A fake model server speaking the OpenAI, Anthropic and Gemini streaming APIs, with fault injection.

    python -m providers.fake --port 9100           # then OPENAI_BASE_URL=http://127.0.0.1:9100/v1

Model routes: `POST /v1/chat/completions` (and `/chat/completions`), `POST /v1/messages`; streaming
(SSE) when the body says `"stream": true`, one JSON answer otherwise. Gemini:
`POST /v1beta/models/{model}:streamGenerateContent?alt=sse` (SSE) and `:generateContent` (JSON). Model
lists: `GET /v1/models` (OpenAI's shape, Anthropic's with an `anthropic-version` header) and
`GET /v1beta/models` (Gemini's), each naming `FAKE_MODELS`. Replies are deterministic
words seeded by the prompt. Knobs, from weakest to strongest:

- server defaults: CLI flags `--ttft-ms --tps --tokens --fault`, or `POST /_fake/config` with
  JSON `{"ttft_ms", "tps", "tokens", "fault"}`;
- queued faults: `POST /_fake/config {"next_faults": ["http:503", "none"]}` applies one per model
  call, in order (`"clear_faults": true` empties the queue first);
- request headers: `X-Fake-TTFT-Ms`, `X-Fake-TPS`, `X-Fake-Tokens`, `X-Fake-Fault` (a header fault
  leaves the queue alone).

`GET /_fake/stats` returns the counters of `FakeStats`; `POST /_fake/reset` clears them, the queue
and the config (back to the startup flags). Fault syntax is in `_formats.FAULT_KINDS`. HTTP is
aiohttp.web's (`_wire.py`).

In tests: `async with FakeProviderServer(ttft_ms=0, tps=0) as srv:` (same loop, `srv.state.stats`,
`await srv.wait_until(...)`), or `with ThreadedFakeServer(...) as srv:` from sync code.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from aiohttp import web

from ._formats import model_list, parse_fault
from ._respond import (
    ANTHROPIC_PATHS,
    GEMINI_CALL,
    OPENAI_PATHS,
    STATUS_FAULTS,
    build_plan,
    error_response,
    send_stream,
    send_whole,
)
from ._state import FakeConfig, FakeState, FakeStats
from ._wire import MAX_BODY, BadRequest, close_connection, json_response, read_request

# What the model list routes answer (admin's "fetch models" reads them).
FAKE_MODELS = ("fake-model", "fake-model-large")
MODEL_LIST_PATHS = frozenset({"/v1/models", "/models", "/v1beta/models"})

T = TypeVar("T")


class FakeProviderServer:
    """The server on the running loop: `async with FakeProviderServer() as srv: srv.base_url`."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        ttft_ms: float = 200.0,
        tps: float = 50.0,
        tokens: int = 60,
        fault: str | None = None,
        max_requests: int = 50,
    ) -> None:
        self.host, self.port = host, port
        self.state = FakeState(
            FakeConfig(ttft_ms, tps, tokens, parse_fault(fault)), max_requests=max_requests
        )
        self._runner: web.AppRunner | None = None
        self._stopping = False
        self._changed = asyncio.Event()

    @property
    def base_url(self) -> str:
        """Root URL: the Anthropic base URL; OpenAI clients may use it or `openai_base_url`."""
        return f"http://{self.host}:{self.port}"

    @property
    def openai_base_url(self) -> str:
        return f"{self.base_url}/v1"

    @property
    def stats(self) -> FakeStats:
        return self.state.stats

    async def start(self) -> None:
        self._stopping = False
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_route("*", "/{path:.*}", self._dispatch)
        # handler_cancellation: a client that goes away cancels its handler at once, even while it
        # sleeps between tokens; that is how disconnects are seen (and counted) within ms.
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, backlog=1024)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        self._stopping = True  # cancelled handlers are not client disconnects
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> FakeProviderServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def serve_forever(self) -> None:
        assert self._runner is not None, "call start() first"
        await asyncio.get_running_loop().create_future()  # until cancelled (Ctrl-C)

    def configure(self, **changes: Any) -> dict[str, Any]:
        """Same fields as POST /_fake/config (`ttft_ms`, `tps`, `tokens`, `fault`, `next_faults`...)."""
        return self.state.configure(changes)

    def queue_faults(self, *specs: str) -> None:
        """Faults for the next model calls, one each ("none" lets a call through)."""
        self.state.configure({"next_faults": list(specs)})

    def reset(self) -> None:
        self.state.reset()
        self._notify()

    async def wait_until(self, predicate: Callable[[FakeStats], bool], within: float = 1.0) -> None:
        """Wait until `predicate(stats)` holds; raises TimeoutError after `within` seconds."""
        async with asyncio.timeout(within):
            while not predicate(self.state.stats):
                await self._changed.wait()

    def _notify(self) -> None:
        # Wake every wait_until(); later waiters block on a fresh event.
        self._changed.set()
        self._changed = asyncio.Event()

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path, method = request.path, request.method
        if path in MODEL_LIST_PATHS and method == "GET":
            return self._model_list(request)
        if path in OPENAI_PATHS or path in ANTHROPIC_PATHS or GEMINI_CALL.match(path):
            if method == "POST":
                return await self._model_call(request)
            return json_response(405, {"error": {"message": "use POST"}})
        if path == "/_fake/stats":
            return json_response(200, self.state.stats.to_json())
        if path == "/_fake/reset" and method == "POST":
            self.reset()
            return json_response(200, self.state.describe())
        if path == "/_fake/config":
            return await self._config_endpoint(request)
        if path in ("/", "/healthz"):
            return json_response(200, {"status": "ok"})
        return json_response(404, {"error": {"message": f"no route {method} {path}"}})

    def _model_list(self, request: web.Request) -> web.Response:
        """The models this server "has", in the asker's vendor format (admin's "fetch models")."""
        if request.path.startswith("/v1beta/"):
            kind = "gemini"
        elif "anthropic-version" in {h.lower() for h in request.headers}:
            kind = "anthropic"
        else:
            kind = "openai"
        return json_response(200, model_list(kind, list(FAKE_MODELS)))

    async def _config_endpoint(self, request: web.Request) -> web.Response:
        if request.method != "POST":
            return json_response(200, self.state.describe())
        try:
            changes = (await read_request(request)).json() or {}
            if not isinstance(changes, dict):
                raise ValueError("send a JSON object")
            return json_response(200, self.state.configure(changes))
        except (ValueError, TypeError, BadRequest) as exc:
            return json_response(400, {"error": {"message": str(exc)}})

    async def _model_call(self, request: web.Request) -> web.StreamResponse:
        try:
            call = await read_request(request)
            body = call.json()
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
            plan = build_plan(call, body, self.state, self.state.stats.calls + 1)
        except (ValueError, TypeError, BadRequest) as exc:
            return json_response(400, {"error": {"type": "invalid_request_error", "message": str(exc)}})
        stats = self.state.stats
        stats.record_call(call.path, call.headers, body, plan.fault)
        self._notify()
        fault = plan.fault
        if fault is not None and fault.kind in STATUS_FAULTS:
            return error_response(plan.wire, fault)
        if fault is not None and fault.kind == "drop":
            stats.server_aborts += 1
            close_connection(request)
            return web.Response()  # never written: the transport is closing
        stats.concurrent += 1
        stats.max_concurrent = max(stats.max_concurrent, stats.concurrent)
        try:
            return await (send_stream if plan.stream else send_whole)(request, plan, stats)
        except (asyncio.CancelledError, ConnectionError):
            # The client went away (aiohttp cancels the handler, or a write finds the socket gone),
            # unless the server itself is stopping.
            if not self._stopping:
                stats.client_disconnects += 1
            raise
        finally:
            stats.concurrent -= 1
            self._notify()


class ThreadedFakeServer:
    """A `FakeProviderServer` on its own loop in a daemon thread, for sync tests and benchmarks."""

    def __init__(self, **options: Any) -> None:
        self.server = FakeProviderServer(**options)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="fake-provider-server", daemon=True)
        self._started = threading.Event()
        self._error: BaseException | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self.server.start())
        except BaseException as exc:  # handed to start() in the caller's thread
            self._error = exc
            self._started.set()
            return
        self._started.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self.server.stop())
        self._loop.close()

    def start(self) -> ThreadedFakeServer:
        self._thread.start()
        self._started.wait(10)
        if self._error is not None:
            raise self._error
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def __enter__(self) -> ThreadedFakeServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        return self.server.base_url

    @property
    def openai_base_url(self) -> str:
        return self.server.openai_base_url

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `fn(*args, **kwargs)` on the server's loop (its state is not thread-safe) and return it."""

        async def run() -> T:
            return fn(*args, **kwargs)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(10)

    def stats(self) -> dict[str, Any]:
        return self.call(self.server.state.stats.to_json)

    def configure(self, **changes: Any) -> dict[str, Any]:
        return self.call(self.server.configure, **changes)

    def reset(self) -> None:
        self.call(self.server.reset)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m providers.fake", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100, help="0 picks a free port (printed on start)")
    parser.add_argument("--ttft-ms", type=float, default=200.0, help="time to first token (ms)")
    parser.add_argument("--tps", type=float, default=50.0, help="tokens per second (<= 0: all at once)")
    parser.add_argument("--tokens", type=int, default=60, help="reply length in tokens")
    parser.add_argument("--fault", default=None, help="fault for every call, e.g. http:503 (see docs)")
    return parser.parse_args(argv)


async def _serve(args: argparse.Namespace) -> None:
    server = FakeProviderServer(
        host=args.host,
        port=args.port,
        ttft_ms=args.ttft_ms,
        tps=args.tps,
        tokens=args.tokens,
        fault=args.fault,
    )
    async with server:
        print(f"fake provider server listening on {server.base_url}", flush=True)
        await server.serve_forever()


def main(argv: Sequence[str] | None = None) -> None:
    """CLI entry point; Ctrl-C stops it."""
    args = _parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args))


if __name__ == "__main__":
    main(sys.argv[1:])
