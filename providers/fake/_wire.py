"""The fake provider server's requests and plain answers, on aiohttp.web (it speaks the HTTP/1.1).

The one thing aiohttp does not do for us is break a connection on purpose (the `drop` and
`disconnect_after` faults): `close_connection` does it on the request's own transport.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from aiohttp import web

# Request bodies are chat transcripts: 16 MiB is far above any real one and bounds memory.
MAX_BODY = 16 * 1024 * 1024
# Statuses the fault table may ask for that http.HTTPStatus does not name.
_REASONS = {529: "Overloaded"}


class BadRequest(Exception):
    """The request is not one this server understands (answered 400)."""


@dataclass(slots=True)
class Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        """The body as JSON (None when empty); raises BadRequest when it is not JSON."""
        if not self.body:
            return None
        try:
            return json.loads(self.body)
        except ValueError as exc:
            raise BadRequest(f"request body is not JSON: {exc}") from exc


async def read_request(request: web.Request) -> Request:
    """Our plain view of an aiohttp request (headers lower-cased, the whole body read)."""
    headers = {name.lower(): value for name, value in request.headers.items()}
    return Request(request.method, request.path, request.query_string, headers, await request.read())


def json_response(status: int, payload: Any, *, headers: dict[str, str] | None = None) -> web.Response:
    """A complete JSON answer."""
    body = json.dumps(payload, separators=(",", ":")).encode()
    return web.Response(
        status=status,
        reason=_REASONS.get(status),
        body=body,
        content_type="application/json",
        headers=headers,
    )


async def stream_response(request: web.Request) -> web.StreamResponse:
    """The headers of a chunked SSE answer, sent."""
    response = web.StreamResponse(headers={"content-type": "text/event-stream", "cache-control": "no-cache"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    return response


def close_connection(request: web.Request) -> None:
    """Close the connection (FIN, after what was already written) without finishing the answer: aiohttp
    then finds the transport closing and writes nothing more."""
    transport = request.transport
    if transport is not None:
        transport.close()
