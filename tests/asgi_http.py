"""One HTTP request straight into the deployed ASGI application (chatapp.asgi:application), with full
control of what a real client can send and the test client cannot: raw bytes, any headers, a body in
several chunks without Content-Length, a Content-Length that lies.

    resp = await asgi_request("POST", "/api/threads", body=b"{}", headers={"authorization": "Bearer …"})
    resp.status, resp.headers["content-type"], resp.json()
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from asgiref.testing import ApplicationCommunicator

from chatapp.asgi import application


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def _header_list(
    headers: Mapping[str, str | bytes] | Sequence[tuple[bytes, bytes]],
) -> list[tuple[bytes, bytes]]:
    if isinstance(headers, Mapping):
        return [
            (k.lower().encode("latin-1"), v if isinstance(v, bytes) else v.encode("latin-1"))
            for k, v in headers.items()
        ]
    return list(headers)


async def asgi_request(
    method: str,
    path: str,
    *,
    body: bytes = b"",
    chunks: Sequence[bytes] | None = None,
    headers: Mapping[str, str | bytes] | Sequence[tuple[bytes, bytes]] = (),
    query: bytes = b"",
    content_length: bool = True,
    wait_s: float = 15.0,
    first_event_only: bool = False,
) -> Response:
    """Send a request and collect the whole answer. `chunks` sends the body in pieces (and, like a
    chunked upload, without Content-Length); otherwise Content-Length is `len(body)` unless
    `content_length` is False or `headers` sets one. `first_event_only`: of a `text/event-stream`
    answer, read the first chunk, then leave (as a client that closes the tab)."""
    hdrs = [(b"host", b"testserver"), *_header_list(headers)]
    names = {k for k, _ in hdrs}
    if chunks is None and content_length and b"content-length" not in names:
        hdrs.append((b"content-length", str(len(body)).encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode("utf-8", "surrogateescape"),
        "query_string": query,
        "root_path": "",
        "headers": hdrs,
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    comm = ApplicationCommunicator(application, scope)
    pieces = list(chunks) if chunks is not None else [body]
    for i, piece in enumerate(pieces):
        await comm.send_input({"type": "http.request", "body": piece, "more_body": i < len(pieces) - 1})
    start = await comm.receive_output(wait_s)
    assert start["type"] == "http.response.start", start
    streaming = any(k == b"content-type" and v.startswith(b"text/event-stream") for k, v in start["headers"])
    out = b""
    while True:
        msg = await comm.receive_output(wait_s)
        out += msg.get("body", b"")
        if not msg.get("more_body") or (first_event_only and streaming and out):
            break
    # As a server would: tell the app the client went away, and let it finish.
    await comm.send_input({"type": "http.disconnect"})
    await comm.wait(wait_s)
    headers_out = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in start["headers"]}
    return Response(start["status"], headers_out, out)
