"""daphne's requests skip Twisted's form parsing (Django still parses forms itself), its loop runs
urgent callbacks first (core/urgent.py), and a finished answer is sent at once."""

from __future__ import annotations

import contextlib
import functools
import http.client
import io
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from daphne.http_protocol import HTTPFactory, WebRequest
from twisted.web.http import HTTPChannel, _genericHTTPChannelProtocolFactory
from twisted.web.http import HTTPFactory as TwistedHTTPFactory

import chatapp.asgi  # noqa: F401 - applies the tuning, as in a server process
from chatapp.daphne_tuning import (
    TwistedIntake,
    can_send_now,
    skip_twisted_access_log,
    skip_twisted_form_parsing,
)
from tests.servers import free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]


def test_requests_never_parse_forms_whatever_twisted_sets() -> None:
    assert skip_twisted_form_parsing() is True
    request = WebRequest.__new__(WebRequest)
    request._parsePOSTFormSubmission = True  # what Twisted's Request.__init__ assigns
    assert request._parsePOSTFormSubmission is False


def test_twisted_formats_no_access_line_of_its_own_daphne_writes_the_access_log() -> None:
    assert skip_twisted_access_log() is True
    factory = HTTPFactory.__new__(HTTPFactory)
    formatted: list[object] = []

    def formatter(*args: object) -> str:
        formatted.append(args)
        return "line"

    factory._logFormatter = formatter
    factory._logDateTime = "05/Dec/2026:12:00:00 +0000"
    factory._logFile = io.StringIO()
    factory.log(WebRequest.__new__(WebRequest))
    assert formatted == [] and factory._logFile.getvalue() == ""


def test_daphnes_loop_runs_urgent_callbacks_first_once_the_app_is_loaded() -> None:
    """As daphne's command line does: its server module (which makes the loop), then the application."""
    script = (
        "import daphne.server\n"
        "import chatapp.asgi\n"
        "from twisted.internet import reactor\n"
        "from core import urgent\n"
        "print(urgent.installed(reactor._asyncioEventloop))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "True"


def test_outside_daphne_nothing_is_installed_and_no_reactor_is_imported() -> None:
    script = (
        "import sys\n"
        "from chatapp.daphne_tuning import intake_held_for_leaders, urgent_first\n"
        "print(urgent_first(), intake_held_for_leaders(), 'twisted.internet.reactor' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["False", "False", "False"]


# An ASGI app served by a real daphne process with chatapp's tuning: it answers, then keeps the rest of
# that turn of the loop busy (as a process answering hundreds of followers at once) until the client
# says through a FIFO that it has the answer, or BUSY_S passes. GET /outcome says which it was.
_BUSY_APP = """
import os, select
import chatapp.asgi  # noqa: F401 - daphne's tuning, applied as in the server process

outcome = []

async def answer(send, body):
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await receive()
    if scope["path"] == "/outcome":
        await answer(send, outcome[-1].encode())
        return
    said = os.open(os.environ["SAID_FIFO"], os.O_RDONLY | os.O_NONBLOCK)
    await answer(send, b"answered")
    ready, _, _ = select.select([said], [], [], float(os.environ["BUSY_S"]))
    os.close(said)
    outcome.append("received while busy" if ready else "received after")
"""


@contextlib.contextmanager
def _daphne(tmp_path: Path, source: str, **env: str) -> Iterator[str]:
    """A daphne process serving `source`'s `app` (written to tmp_path); its base URL."""
    (tmp_path / "served_app.py").write_text(source)
    port = free_port()
    env = (
        os.environ
        | {"PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT), os.environ.get("PYTHONPATH", "")])}
        | env
    )
    daphne = Path(sys.executable).with_name("daphne")
    with (tmp_path / "daphne.log").open("wb") as log:
        proc = subprocess.Popen(
            [str(daphne), "-b", "127.0.0.1", "-p", str(port), "served_app:app"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(lambda: _accepts(port), timeout=60, interval=0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_a_finished_answer_reaches_its_client_while_the_loop_is_still_busy(tmp_path: Path) -> None:
    """Before, Twisted sent it at the loop's next poll: the client got it only once the turn ended."""
    said = tmp_path / "said"
    os.mkfifo(said)
    with _daphne(tmp_path, _BUSY_APP, SAID_FIFO=str(said), BUSY_S="15") as url:
        reply = httpx.get(f"{url}/", timeout=60)
        # No reader left (ENXIO) when the app already stopped waiting: it then reports "received after".
        with contextlib.suppress(OSError):
            fifo = os.open(said, os.O_WRONLY | os.O_NONBLOCK)
            os.write(fifo, b"!")
            os.close(fifo)
        assert reply.text == "answered"
        outcome = httpx.get(f"{url}/outcome", timeout=60).text
        assert outcome == "received while busy", (tmp_path / "daphne.log").read_text()[-2000:]


# An ASGI app served by a real daphne process with chatapp's tuning, counting the reactor's watches for
# a socket to become writable. GET /?<n> answers n bytes; GET /watched how many watches began so far.
_WATCH_APP = """
import chatapp.asgi  # noqa: F401 - daphne's tuning, applied as in the server process
from twisted.internet import reactor, tcp

watched = []
_add_writer = reactor.addWriter

def add_writer(writer):
    watched.append(writer)
    _add_writer(writer)

reactor.addWriter = add_writer

empty_sends = []
_write_some = tcp.Connection.writeSomeData

def write_some(self, data):
    if not data:
        empty_sends.append(self)
    return _write_some(self, data)

tcp.Connection.writeSomeData = write_some

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await receive()
    headers = [(b"content-type", b"text/plain")]
    if scope["path"] == "/watched":
        body = str(len(watched)).encode()
    elif scope["path"] == "/empty-sends":
        body = str(len(empty_sends)).encode()
    else:
        body = b"x" * int(scope["query_string"])
    if scope["path"] == "/sized":
        headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
"""


def test_a_whole_answer_the_socket_takes_at_once_is_never_watched_for_by_the_reactor(tmp_path: Path) -> None:
    """Before, Twisted began watching the socket when the answer was written (an epoll_ctl), and stopped
    once it was sent (another): two system calls and their bookkeeping per answer."""
    with _daphne(tmp_path, _WATCH_APP) as url, httpx.Client(timeout=60) as client:
        assert client.get(f"{url}/?1000").text == "x" * 1000
        assert client.get(f"{url}/watched").text == "0"
        # More than a socket takes at once: the rest is the reactor's to send, as before.
        big = 64 * 1024 * 1024
        with client.stream("GET", f"{url}/?{big}") as reply:
            received = sum(len(chunk) for chunk in reply.iter_bytes())
        assert received == big
        assert int(client.get(f"{url}/watched").text) >= 1
    # An answer that ends its connection: the close, after the bytes, is the reactor's, as before.
    with _daphne(tmp_path, _WATCH_APP) as url:
        closing = httpx.get(f"{url}/?1000", headers={"Connection": "close"}, timeout=10)
        assert closing.text == "x" * 1000 and closing.headers.get("connection") == "close"


def test_a_request_whose_answer_has_left_ends_without_an_empty_send(tmp_path: Path) -> None:
    """An answer whose length is given leaves whole; its request's end has nothing left to send. Before,
    the end sent anyway: an empty send() per answer, 500 system calls per process in a burst's answer
    turn."""
    with _daphne(tmp_path, _WATCH_APP) as url, httpx.Client(timeout=60) as client:
        for _ in range(5):
            assert client.get(f"{url}/sized?1000").text == "x" * 1000
        assert client.get(f"{url}/empty-sends").text == "0"


# An ASGI app served by a real daphne process with chatapp's tuning: GET /a, /b and /c wait until GET /go,
# so that their answers are ready in one turn of the loop, as a burst's followers are; /a and /b give
# their length, /c does not (chunks). GET /log: the order in which answers were sent and requests ended.
_ENDING_APP = """
import asyncio, json
import chatapp.asgi  # noqa: F401 - daphne's tuning, applied as in the server process
from daphne.http_protocol import WebRequest

log = []
waiting = []
go = asyncio.Event()
_finish = WebRequest.finish

def finish(self):
    log.append(["ended", self.path.decode()])
    _finish(self)

WebRequest.finish = finish

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await receive()
    path = scope["path"]
    if path in ("/a", "/b", "/c"):
        waiting.append(path)
        await go.wait()
    elif path == "/go":
        go.set()
    body = json.dumps(log if path == "/log" else waiting if path == "/waiting" else path).encode()
    headers = [(b"content-type", b"application/json")]
    if path != "/c":
        headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
    if path in ("/a", "/b", "/c"):
        log.append(["answered", path])
    if path == "/twice":  # an app that sends after its last body: nothing of it may reach the client
        await send({"type": "http.response.body", "body": b"more"})
"""


def test_answers_ready_in_one_turn_all_leave_before_their_requests_end(tmp_path: Path) -> None:
    """An answer whose length is given is the whole answer once written: it is sent, and its request's
    ending (Twisted's finish, daphne's access line) waits behind the other answers of the turn. Before,
    each answer's ending ran before the next answer was sent. A chunked answer still ends as it is sent
    (its ending writes the last chunk)."""
    with _daphne(tmp_path, _ENDING_APP) as url, httpx.Client(timeout=60) as client:

        def waiting(path: str) -> bool:
            return path in client.get(f"{url}/waiting").json()

        with ThreadPoolExecutor(3) as pool:
            replies = []
            for path in ("/a", "/b", "/c"):
                replies.append(pool.submit(httpx.get, f"{url}{path}", timeout=60))
                wait_until(functools.partial(waiting, path), timeout=30, interval=0.01)
            assert client.get(f"{url}/go").json() == "/go"
            answers = [reply.result() for reply in replies]
        assert [a.json() for a in answers] == ["/a", "/b", "/c"]
        assert [a.headers.get("transfer-encoding") for a in answers] == [None, None, "chunked"]
        order = [tuple(e) for e in client.get(f"{url}/log").json() if e[1] in ("/a", "/b", "/c")]
    assert order == [
        ("answered", "/a"),
        ("answered", "/b"),
        ("ended", "/c"),
        ("answered", "/c"),
        ("ended", "/a"),
        ("ended", "/b"),
    ]


def test_what_an_app_sends_after_its_whole_answer_never_reaches_the_client(tmp_path: Path) -> None:
    """Between an answer sent whole and its request's end, a further body is ignored, as daphne ignores
    one after the end: sent, it would have been read as the start of the connection's next answer."""
    with _daphne(tmp_path, _ENDING_APP) as url, httpx.Client(timeout=60) as client:
        assert client.get(f"{url}/twice").json() == "/twice"
        assert client.get(f"{url}/next").json() == "/next"  # the same kept-alive connection


def _accepts(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


def test_only_a_connected_socket_that_is_not_closing_is_sent_to_at_once() -> None:
    class Transport:
        def __init__(self, connected: int, disconnecting: bool) -> None:
            self.connected, self.disconnecting = connected, disconnecting

        def doWrite(self) -> None:  # noqa: N802 - Twisted's name
            pass

    assert can_send_now(Transport(connected=1, disconnecting=False))
    assert not can_send_now(Transport(connected=1, disconnecting=True))  # its last write ends it
    assert not can_send_now(Transport(connected=0, disconnecting=False))
    assert not can_send_now(None)
    assert not can_send_now(object())  # not a socket transport (no doWrite)


# An ASGI app served by a real daphne process with chatapp's tuning, its sends taking turns as chatapp's
# handler does (threads/sendgate.py). The first send to thread 1 leads: it says so in a file, waits for
# the client's word through a FIFO, makes three round trips through the loop's poll (as its claims and
# rows do), counts the GET /other requests daphne has read by then, and lets go. GET /report: that count.
_HOLD_APP = """
import asyncio, os, socket
from pathlib import Path
import chatapp.asgi  # noqa: F401 - daphne's tuning, applied as in the server process
from twisted.web.http import HTTPChannel
from core import intake
from threads import sendgate

intake.MAX_HOLD_S = 60  # however slow this machine is at sending the test's requests (the cap: tests/core)

read = []
report = []
_received = HTTPChannel.dataReceived

def received(self, data):
    if data.startswith(b"GET /other"):
        read.append(data)
    _received(self, data)

HTTPChannel.dataReceived = received

async def answer(send, body):
    length = str(len(body)).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", length)]})
    await send({"type": "http.response.body", "body": body})

async def word_from_client():
    loop = asyncio.get_running_loop()
    fifo = os.open(os.environ["GO_FIFO"], os.O_RDONLY | os.O_NONBLOCK)
    said = loop.create_future()
    loop.add_reader(fifo, lambda: said.done() or said.set_result(None))
    Path(os.environ["STATE_DIR"], "leading").touch()
    await said
    loop.remove_reader(fifo)
    os.close(fifo)

async def round_trips(count):
    # each answered at the loop's next poll, as a Redis reply is
    loop = asyncio.get_running_loop()
    a, b = socket.socketpair()
    for _ in range(count):
        polled = loop.create_future()
        loop.add_reader(b, lambda: polled.done() or polled.set_result(b.recv(1)))
        a.send(b"x")
        await polled
        loop.remove_reader(b)
    a.close(), b.close()

def holds():
    # What the process's metrics say of its holds (ops/metrics.py): released, expired, held > 0.
    from prometheus_client import REGISTRY
    count = lambda ended: int(REGISTRY.get_sample_value("chatapp_intake_holds_total", {"ended": ended}) or 0)
    held = REGISTRY.get_sample_value("chatapp_intake_held_seconds_sum") or 0.0
    return f"{count('released')} {count('expired')} {held > 0}".encode()

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await receive()
    thread_id = sendgate.send_thread_id(scope["method"], scope["path"])
    if thread_id is None:
        await answer(send, str(report).encode() if scope["path"] == "/report" else holds() if scope["path"] == "/holds" else b"other")
        return
    if not os.path.exists(os.path.join(os.environ["STATE_DIR"], "leading")):
        assert await sendgate.take_turn(thread_id)
        sendgate.vouch()  # as the send view does once the sender is signed in and may send there
        await word_from_client()
        await round_trips(3)
        report.append(len(read))
        sendgate.release_turn()
    else:
        Path(os.environ["STATE_DIR"], "waiting").touch()
        await sendgate.take_turn(thread_id)
    await answer(send, b"sent")
"""


def _body(connection: http.client.HTTPConnection) -> bytes:
    return connection.getresponse().read()


def test_while_a_burst_leader_is_on_its_way_no_other_request_is_read(tmp_path: Path) -> None:
    """core/intake.py: before, daphne read the requests arriving meanwhile in the turns of the loop that
    answered the leader's awaits (here 11 of the 12 by its third round trip)."""
    go = tmp_path / "go"
    os.mkfifo(go)
    with (
        _daphne(tmp_path, _HOLD_APP, GO_FIFO=str(go), STATE_DIR=str(tmp_path)) as url,
        contextlib.ExitStack() as connections,
    ):
        port = int(url.rsplit(":", 1)[1])

        def request(
            line: str, connection: http.client.HTTPConnection | None = None
        ) -> http.client.HTTPConnection:
            """Sent, not waited for: its answer is read later (`_body`)."""
            if connection is None:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                connections.callback(connection.close)
            method, path = line.split()
            connection.request(method, path)
            return connection

        idle = [request("GET /warm") for _ in range(8)]  # keep-alive connections, idle after
        assert [_body(c) for c in idle] == [b"other"] * 8
        leader = request("POST /api/threads/1/messages")
        wait_until(lambda: (tmp_path / "leading").exists(), timeout=30, interval=0.01)
        follower = request("POST /api/threads/1/messages")
        wait_until(lambda: (tmp_path / "waiting").exists(), timeout=30, interval=0.01)
        others = [request("GET /other", c) for c in idle]
        others += [request("GET /other") for _ in range(4)]  # new connections
        fifo = os.open(go, os.O_WRONLY | os.O_NONBLOCK)
        os.write(fifo, b"!")
        os.close(fifo)
        assert _body(leader) == _body(follower) == b"sent"
        assert [_body(c) for c in others] == [b"other"] * 12  # all read once it let go
        assert _body(request("GET /report")) == b"[0]", (tmp_path / "daphne.log").read_text()[-2000:]
        assert _body(request("GET /holds")) == b"1 0 True"  # counted and timed (chatapp_intake_*)


class _Transport:
    def __init__(self, protocol: object, *, connected: int = 1) -> None:
        self.protocol, self.connected, self.disconnecting = protocol, connected, False
        self.reading = True

    def stopReading(self) -> None:  # noqa: N802 - Twisted's name
        self.reading = False

    def startReading(self) -> None:  # noqa: N802 - Twisted's name
        self.reading = True


def _http(*, busy: bool = False) -> object:
    """An HTTP connection's protocol as daphne's factory makes it (HTTPChannel behind its wrapper)."""
    wrapper = _genericHTTPChannelProtocolFactory(TwistedHTTPFactory())
    channel = wrapper._channel
    assert isinstance(channel, HTTPChannel)
    if busy:
        channel.requests.append(object())  # a request being read or answered
    return wrapper


def test_the_held_intake_stops_idle_http_connections_only_and_restarts_those_still_open() -> None:
    idle, busy, bare = _Transport(_http()), _Transport(_http(busy=True)), _Transport(HTTPChannel())
    websocket, port, closed = _Transport(object()), _Transport(None), _Transport(_http())

    class Reactor:
        def getReaders(self) -> list[_Transport]:  # noqa: N802 - Twisted's name
            return [idle, busy, bare, websocket, port, closed]

    server = TwistedIntake(Reactor())
    server.pause()
    assert [t.reading for t in (idle, busy, bare, websocket, port, closed)] == [
        False,
        True,
        False,
        True,
        True,
        False,
    ]
    opened = _Transport(_http())
    server.opened(opened)  # made while held: held too
    assert not opened.reading
    closed.connected = 0
    server.resume()
    assert [t.reading for t in (idle, bare, opened, closed)] == [True, True, True, False]
    later = _Transport(_http())
    server.opened(later)  # not held any more
    assert later.reading
