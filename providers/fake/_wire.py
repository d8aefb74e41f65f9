"""Minimal HTTP/1.1 over asyncio streams for the fake provider server (not a general server).

Enough for httpx and curl: request line, headers, `Content-Length` bodies, keep-alive, chunked
streaming responses. No pipelining, no chunked request bodies, no TLS.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

# Request bodies are chat transcripts: 16 MiB is far above any real one and bounds memory.
MAX_BODY = 16 * 1024 * 1024
_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    411: "Length Required",
    413: "Payload Too Large",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    529: "Overloaded",
}


class BadRequest(Exception):
    """The bytes on the socket are not a request this server understands."""


@dataclass(slots=True)
class Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]  # lower-case names
    body: bytes

    @property
    def keep_alive(self) -> bool:
        return self.headers.get("connection", "").lower() != "close"

    def json(self) -> Any:
        """The body as JSON (None when empty); raises BadRequest when it is not JSON."""
        if not self.body:
            return None
        try:
            return json.loads(self.body)
        except ValueError as exc:
            raise BadRequest(f"request body is not JSON: {exc}") from exc


async def read_request(reader: asyncio.StreamReader) -> Request | None:
    """The next request on the connection, or None when the client closed it cleanly."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise BadRequest("connection closed mid-request") from exc
        return None
    except asyncio.LimitOverrunError as exc:
        raise BadRequest("request head too large") from exc
    lines = head.decode("latin-1").split("\r\n")
    try:
        method, target, _version = lines[0].split(" ", 2)
    except ValueError as exc:
        raise BadRequest(f"bad request line {lines[0]!r}") from exc
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        raise BadRequest("chunked request bodies are not supported; send Content-Length")
    length = int(headers.get("content-length") or 0)
    if length > MAX_BODY:
        raise BadRequest("request body too large")
    body = await reader.readexactly(length) if length else b""
    url = urlsplit(target)
    return Request(method.upper(), url.path or "/", url.query, headers, body)


def head_bytes(status: int, headers: dict[str, str]) -> bytes:
    """Status line and headers, ending with the blank line."""
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def full_response(
    status: int,
    body: bytes,
    *,
    content_type: str = "application/json",
    headers: dict[str, str] | None = None,
    keep_alive: bool = True,
) -> bytes:
    """A complete response with a Content-Length body."""
    all_headers = {
        "content-type": content_type,
        "content-length": str(len(body)),
        "connection": "keep-alive" if keep_alive else "close",
        **(headers or {}),
    }
    return head_bytes(status, all_headers) + body


def json_response(
    status: int, payload: Any, *, headers: dict[str, str] | None = None, keep_alive: bool = True
) -> bytes:
    """A complete JSON response."""
    body = json.dumps(payload, separators=(",", ":")).encode()
    return full_response(status, body, headers=headers, keep_alive=keep_alive)


def stream_head(content_type: str = "text/event-stream") -> bytes:
    """Headers of a chunked streaming response."""
    return head_bytes(
        200,
        {
            "content-type": content_type,
            "cache-control": "no-cache",
            "transfer-encoding": "chunked",
            "connection": "keep-alive",
        },
    )


def chunk(payload: bytes) -> bytes:
    """One HTTP/1.1 chunk (empty payloads are not allowed: b"" would end the body)."""
    return b"%x\r\n%s\r\n" % (len(payload), payload)


LAST_CHUNK = b"0\r\n\r\n"
