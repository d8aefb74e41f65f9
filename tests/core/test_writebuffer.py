"""core/writebuffer.py reads Twisted's private send buffers: these tests pin them on the installed
Twisted, so an upgrade that renames them fails here instead of silently unbounding every socket."""

from __future__ import annotations

import functools
import inspect
from typing import Any

import pytest
from twisted.internet.abstract import FileDescriptor
from twisted.internet.testing import MemoryReactor

from core.writebuffer import (
    PATIENCE_KEY,
    SCOPE_KEY,
    WriteBufferProbe,
    daphne_close_patience,
    daphne_probe,
    unsent_bytes,
)


class _Transport(FileDescriptor):
    """A connected Twisted transport whose writes never reach a socket (MemoryReactor never calls
    doWrite): what a peer that stopped reading leaves behind."""

    connected = 1


class _Protocol:
    def __init__(self, transport: Any) -> None:
        self.transport = transport


class _Wrapper:  # as twisted.protocols.tls.TLSMemoryBIOProtocol: the TCP transport one level down
    def __init__(self, transport: Any) -> None:
        self.transport = transport


async def _handle_reply(protocol: Any, message: dict[str, Any]) -> None:
    """Stands for daphne.server.Server.handle_reply."""


def test_unsent_bytes_counts_what_twisted_holds() -> None:
    t = _Transport(reactor=MemoryReactor())  # type: ignore[arg-type]  # it is an IReactorFDSet
    assert unsent_bytes(t) == 0
    t.write(b"x" * 1000)
    t.writeSequence([b"y" * 500, b"z" * 24])
    assert unsent_bytes(t) == 1524
    t.bufferSize = 1523
    assert t._isSendBufferFull()  # Twisted's own view of the same bytes
    assert unsent_bytes(_Wrapper(t)) == 1524


@pytest.mark.parametrize("transport", [None, object(), _Wrapper(None), _Wrapper(object())])
def test_unsent_bytes_is_none_for_anything_else(transport: Any) -> None:
    assert unsent_bytes(transport) is None


async def test_the_probe_sees_daphnes_protocol_behind_send() -> None:
    t = _Transport(reactor=MemoryReactor())  # type: ignore[arg-type]  # it is an IReactorFDSet
    send = functools.partial(_handle_reply, _Protocol(t))
    seen: list[Any] = []

    async def inner(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(scope.get(SCOPE_KEY))

    await WriteBufferProbe(inner)({"type": "websocket"}, None, send)
    t.write(b"abc")
    assert seen[0] is not None and seen[0]() == 3
    await WriteBufferProbe(inner)({"type": "websocket"}, None, _handle_reply)
    assert seen[1] is None and daphne_probe(functools.partial(_handle_reply, object())) is None


class _AutobahnLike(_Protocol):
    closeHandshakeTimeout: float = 1  # autobahn's factory default, copied onto each protocol


async def test_the_patience_setter_reaches_daphnes_protocol_behind_send() -> None:
    protocol = _AutobahnLike(None)
    seen: list[Any] = []

    async def inner(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(scope.get(PATIENCE_KEY))

    await WriteBufferProbe(inner)({"type": "websocket"}, None, functools.partial(_handle_reply, protocol))
    seen[0](30.0)
    assert protocol.closeHandshakeTimeout == 30.0 and _AutobahnLike.closeHandshakeTimeout == 1
    await WriteBufferProbe(inner)({"type": "websocket"}, None, _handle_reply)
    assert seen[1] is None and daphne_close_patience(functools.partial(_handle_reply, object())) is None


def test_autobahn_reads_the_timeout_when_it_sends_the_close_frame() -> None:
    """The setter works only because autobahn schedules its abort from the protocol's attribute at
    sendCloseFrame time: pinned here, so an upgrade that changes it fails loudly."""
    from autobahn.websocket.protocol import WebSocketProtocol

    source = inspect.getsource(WebSocketProtocol.sendCloseFrame)
    assert "self.closeHandshakeTimeout," in source and "self.onCloseHandshakeTimeout" in source
    assert "closeHandshakeTimeout" in WebSocketProtocol.CONFIG_ATTRS_COMMON
