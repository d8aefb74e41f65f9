"""Real daphne processes for multi-process tests.

    from tests.servers import daphne_servers, wait_until

    pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

    def test_two_processes() -> None:
        with daphne_servers(2, env={"METRICS_TOKEN": "t"}) as (a, b):
            httpx.get(a.url("/healthz"))
            wait_until(lambda: httpx.get(b.url("/api/metrics"), ...).json()["requests"] == 2, timeout=1)

`daphne_servers(n, env=None, *, timeout=30.0)` starts `n` daphne processes of `chatapp.asgi:application`
on free loopback ports, waits until each answers 200 on /healthz, yields them as a list of
`DaphneServer` (`.url(path)`, `.base_url`, `.port`, `.pid`, `.log_path`), and stops them (SIGTERM, then
SIGKILL) when the block ends, even on failure. They share, like one deployment:

- the current test database: `DATABASE_URL` points at `connection.settings_dict["NAME"]` (pytest-django's
  `test_…` database). It must be PostgreSQL: SQLite's in-memory test database lives in this process.
  Rows the test creates are visible to the servers only once committed, so use
  `django_db(transaction=True)` (or a module-scoped fixture that depends on `django_db_setup`).
- `REDIS_URL` from settings (the channel layer that connects the processes), with a
  `CHANNEL_LAYER_PREFIX` unique to this test session. It does not start with "chatapp": the test
  process's own layer flushes `chatapp*` keys after every test and would wipe the servers' groups.
- a fresh `PROMETHEUS_MULTIPROC_DIR` per `daphne_servers` call (metrics summed over the n processes).

Servers cache some rows per process (ContentType ids, used by admin history and permissions), and the
flush after each transactional test renumbers them: a test that writes admin history should start its
own servers rather than share module-scoped ones.

`env` adds or overrides variables (e.g. `{"METRICS_TOKEN": "x", "DEMO_TTFT_MS": "50"}`). A server
that exits or never becomes healthy fails the test with the tail of its log. Mark such tests
`pytest.mark.services` (they need PostgreSQL and Redis).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from django.conf import settings
from django.db import connection

from tests.waiting import wait_until as wait_until  # re-exported: tests import it from here

ROOT = Path(__file__).resolve().parents[1]
# One prefix per test session (this module is imported once), so concurrent sessions on the same
# Redis do not deliver to each other's servers.
SESSION_LAYER_PREFIX = f"srv{uuid.uuid4().hex[:12]}"
STOP_TIMEOUT_S = 10.0
# daphne's WebSocket message and frame cap, as the Makefile's WS_MAX_BYTES (tests/chatapp/test_limits_docs.py).
WS_MAX_BYTES = 1048576


@dataclass
class DaphneServer:
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str] = field(repr=False)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def url(self, path: str) -> str:
        return self.base_url + path

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def free_port() -> int:
    """A loopback port free right now (another process may still take it: callers retry)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def database_url_for_servers() -> str:
    """DATABASE_URL of this session's test database, for other processes."""
    db = connection.settings_dict
    if connection.vendor != "postgresql":
        raise RuntimeError(
            "daphne_servers needs PostgreSQL: SQLite's test database is in this process's memory. "
            "Run with DATABASE_URL=postgres://… and mark the test `services`."
        )
    user = quote(db.get("USER") or "", safe="")
    password = f":{quote(db['PASSWORD'], safe='')}" if db.get("PASSWORD") else ""
    auth = f"{user}{password}@" if user else ""
    host = db.get("HOST") or "127.0.0.1"
    port = f":{db['PORT']}" if db.get("PORT") else ""
    return f"postgres://{auth}{host}{port}/{quote(str(db['NAME']), safe='')}"


def _server_env(extra: Mapping[str, str] | None, metrics_dir: str) -> dict[str, str]:
    if not settings.REDIS_URL:
        raise RuntimeError("daphne_servers needs REDIS_URL: processes talk through the Redis channel layer.")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env.update(
        DJANGO_SETTINGS_MODULE="chatapp.settings",
        DEBUG="true",  # development settings (DEBUG is off by default): no SECRET_KEY, http on loopback
        PYTHONPATH=str(ROOT),
        DATABASE_URL=database_url_for_servers(),
        REDIS_URL=settings.REDIS_URL,
        CHANNEL_LAYER_PREFIX=SESSION_LAYER_PREFIX,
        PROMETHEUS_MULTIPROC_DIR=metrics_dir,
        DEMO_TTFT_MS="0",
        # Tests send faster, and open more sockets, than people; a test of the quotas passes its own.
        SEND_RATE_PER_MIN="0",
        MAX_SOCKETS_PER_USER="0",
        LOG_LEVEL="INFO",
        # A SIGTERM drains (chatapp/shutdown.py) within STOP_TIMEOUT_S.
        SHUTDOWN_GRACE_S="5",
    )
    env.update(extra or {})
    return env


def _spawn(env: dict[str, str], log_dir: Path, index: int) -> DaphneServer:
    port = free_port()
    log_path = log_dir / f"daphne-{index}-{port}.log"
    daphne = Path(sys.executable).with_name("daphne")
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                str(daphne),
                *("-b", "127.0.0.1", "-p", str(port)),
                *("--websocket-max-message-size", str(WS_MAX_BYTES)),
                *("--websocket-max-frame-size", str(WS_MAX_BYTES)),
                "chatapp.asgi:application",
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return DaphneServer(port=port, process=process, log_path=log_path, env=env)


def _healthy(server: DaphneServer, *, answering: bool = False) -> bool:
    """/healthz says 200 (or, with `answering`, anything at all: the process serves requests)."""
    if server.process.poll() is not None:
        raise RuntimeError(
            f"daphne on port {server.port} exited with {server.process.returncode}:\n{server.log_tail()}"
        )
    try:
        status = httpx.get(server.url("/healthz"), timeout=5.0).status_code
    except httpx.HTTPError:
        return False
    return answering or status == 200


def _stop(server: DaphneServer) -> None:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(STOP_TIMEOUT_S)


@contextlib.contextmanager
def daphne_servers(
    n: int, env: Mapping[str, str] | None = None, *, timeout: float = 30.0, healthy: bool = True
) -> Iterator[list[DaphneServer]]:
    """Start `n` daphne processes sharing this test session's database and Redis (see module doc).
    `healthy=False` only waits until they answer (fault tests start servers whose Redis is down)."""
    workdir = Path(tempfile.mkdtemp(prefix="daphne-servers-"))
    metrics_dir = workdir / "prometheus"
    metrics_dir.mkdir()
    server_env = _server_env(env, str(metrics_dir))
    servers: list[DaphneServer] = []
    try:
        servers = [_spawn(server_env, workdir, i) for i in range(n)]
        for i, server in enumerate(servers):
            try:
                wait_until(lambda s=server: _healthy(s, answering=not healthy), timeout=timeout, interval=0.1)  # type: ignore[misc]
            except RuntimeError:
                # Lost the port race (another process bound it first): one retry on a new port.
                if "Address already in use" not in server.log_tail():
                    raise
                servers[i] = server = _spawn(server_env, workdir, i)
                wait_until(lambda s=server: _healthy(s, answering=not healthy), timeout=timeout, interval=0.1)  # type: ignore[misc]
        try:
            yield servers
        except BaseException:
            # The servers' side of a failure: pytest shows this with the test's captured output.
            for server in servers:
                print(
                    f"--- daphne pid {server.pid} port {server.port}:\n{server.log_tail()}", file=sys.stderr
                )
            raise
    finally:
        for server in servers:
            _stop(server)
        shutil.rmtree(workdir, ignore_errors=True)


def parse_prometheus(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Samples of a Prometheus text exposition: name -> [(labels, value)]."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((dict(sample.labels), float(sample.value)))
    return out


def sample_sum(samples: Mapping[str, list[tuple[dict[str, str], float]]], name: str, **labels: Any) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    return sum(
        value for got, value in samples.get(name, []) if all(got.get(k) == str(v) for k, v in labels.items())
    )
