"""#16 item 5 through a real daphne process and a real outage: PostgreSQL is reached through a TCP proxy the
test cuts (every connection reset, new ones closed at once) just as a reply ends, for longer than the
final write's retries, then restores. The reply's text used to be thrown away (the row saved "" as
`interrupted` by the sweep); it is now saved whole, `complete`, once the database is back."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from providers.fake.server import ThreadedFakeServer
from tests.servers import daphne_servers, database_url_for_servers, wait_until
from threads.models import Message

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

TIMEOUT = 30.0


class CuttableProxy:
    """A TCP proxy to one upstream port; `cut()` resets every connection and closes new ones at once
    (what a client sees when the database host goes away), `restore()` lets connections through again."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.up = True
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:  # closed
                return
            if not self.up:
                client.close()
                continue
            server = socket.create_connection(self.upstream)
            with self._lock:
                self._open += [client, server]
            for src, dst in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self.up = False
        with self._lock:
            doomed, self._open = self._open, []
        for sock in doomed:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def restore(self) -> None:
        self.up = True

    def close(self) -> None:
        self.listener.close()
        self.cut()


@pytest.fixture
def proxy() -> Iterator[CuttableProxy]:
    url = urlsplit(database_url_for_servers())
    found = CuttableProxy((url.hostname or "127.0.0.1", url.port or 5432))
    try:
        yield found
    finally:
        found.close()


def _through(proxy: CuttableProxy) -> str:
    url = urlsplit(database_url_for_servers())
    netloc = url.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{proxy.port}"
    return urlunsplit(url._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host))


def test_a_reply_that_ends_while_the_database_is_down_is_saved_whole_when_it_is_back(
    token: str, proxy: CuttableProxy
) -> None:
    auth = {"Authorization": f"Bearer {token}"}
    with ThreadedFakeServer(ttft_ms=0, tps=20, tokens=40) as fake:  # a 2 s reply
        env = {
            "DATABASE_URL": _through(proxy),
            "DB_POOL_TIMEOUT_S": "1",
            "OPENAI_BASE_URL": fake.openai_base_url,
            "OPENAI_API_KEY": "sk-test",
            "OPENAI_MODEL": "fake-model",
        }
        with daphne_servers(1, env=env) as (a,):
            tid = httpx.post(a.url("/api/threads"), json={"provider": "openai"}, headers=auth).json()["id"]
            body = {"content": "a reply", "request_id": "unsaved-1", "stream": True}
            seen: list[dict[str, Any]] = []
            with httpx.stream(
                "POST", a.url(f"/api/threads/{tid}/messages"), json=body, headers=auth, timeout=TIMEOUT
            ) as resp:
                assert resp.status_code == 200
                for line in resp.iter_lines():
                    if not line.startswith("data: "):
                        continue
                    seen.append(json.loads(line.removeprefix("data: ")))
                    if seen[-1]["type"] == "message.delta" and len(seen) == 3:
                        proxy.cut()  # the database goes away while the reply streams on
            # The sender was told after the final write's retries; the text it saw was all of it.
            assert seen[-1]["type"] == "message.error", seen[-1]
            assert seen[-1]["error"]["code"] == "database_unavailable"
            text = "".join(e["text"] for e in seen if e["type"] == "message.delta")
            assert fake.stats()["completed"] == 1 and len(text.split()) == 40
            proxy.restore()

            def settled() -> Message | None:
                row = Message.objects.get(request_id="unsaved-1", role="assistant")
                return None if row.status == "streaming" else row

            row = wait_until(settled, timeout=TIMEOUT, interval=0.2)
            assert row is not None and (row.status, row.content) == ("complete", text)
            log = a.log_path.read_text(errors="replace")
            assert '" 500 ' not in log and "Exception inside application" not in log
