"""Browser tests: the real app under daphne, driven by pytest-playwright with the system Chromium.

Each server fixture migrates a fresh SQLite file and starts `daphne chatapp.asgi:application` on a free
port (the embedded defaults: in-process channel layer, demo provider), waits for /healthz and stops
the process at teardown. Playwright never downloads a browser here: `browser_type_launch_args` points
it at CHROMIUM_PATH (Debian's /usr/bin/chromium). Without that binary the tests skip, saying so,
except in CI (CI=true), where a missing browser is a failure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.needs import missing
from tests.servers import free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",  # CI runs as root in a container
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
SCREENSHOTS = ROOT / "artifacts" / "screenshots"

# Auto-waiting assertions wait up to this long: a stream lasts a few seconds, CI machines are slow.
expect.set_options(timeout=15_000)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Browser tests run after every other test of the session. Playwright's sync API keeps an event
    loop running on the main thread from its first use until the session ends, and pytest-asyncio
    cannot run a test while a loop is running there ("Runner.run() cannot be called from a running
    event loop")."""
    items.sort(key=lambda item: item.get_closest_marker("browser") is not None)  # stable: keeps order


# The suite-wide autouse fixtures of tests/conftest.py reset in-process Django state; these tests talk to
# a server in another process, so they are switched off here.
@pytest.fixture(autouse=True)
def _fast_demo() -> None:
    return None


@pytest.fixture(autouse=True)
def _fresh_layer_and_services() -> None:
    return None


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    if not os.access(CHROMIUM, os.X_OK):
        missing(f"no Chromium at {CHROMIUM}: apt-get install -y chromium (or set CHROMIUM_PATH)")
    return {
        **browser_type_launch_args,
        "executable_path": CHROMIUM,
        "args": [*browser_type_launch_args.get("args", []), *CHROMIUM_ARGS],
        "timeout": 30_000,
    }


@dataclass
class AppServer:
    url: str
    env: dict[str, str]

    def manage(self, *args: str) -> str:
        """Run a management command against this server's database; its stdout."""
        done = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return done.stdout

    def seed_demo(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.manage("seed_demo", "--session").strip().splitlines()[-1])
        return data


def _healthy(url: str, proc: subprocess.Popen[bytes], log: Path) -> bool:
    """/healthz answers 200; a daphne that exited fails at once, with its log."""
    if proc.poll() is not None:
        raise RuntimeError(f"daphne exited with {proc.returncode}:\n{log.read_text()}")
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def _serve(tmp: Path, **settings: str) -> Iterator[AppServer]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "DEBUG")}
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "chatapp.settings",
            # As `make run` serves (DEBUG is off by default): http on a random loopback port, whose
            # WebSocket Origin only DEBUG admits (chatapp/origin.py).
            "DEBUG": "true",
            "DATABASE_URL": f"sqlite:///{tmp / 'db.sqlite3'}",
            # Real-model timing (tests/conftest.py makes the in-process demo instant; not this server).
            "DEMO_TTFT_MS": "300",
            "DEMO_TOKENS_PER_S": "40",
            "DEMO_MAX_TOKENS": "120",
            # SIGTERM at teardown drains (chatapp/shutdown.py): within the 10 s it is given.
            "SHUTDOWN_GRACE_S": "5",
            **settings,
        }
    )
    server = AppServer(url=f"http://127.0.0.1:{port}", env=env)
    server.manage("migrate", "--noinput")
    log = tmp / "daphne.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(BIN / "daphne"), "-e", f"tcp:port={port}:interface=127.0.0.1", "chatapp.asgi:application"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        try:
            wait_until(lambda: _healthy(server.url, proc, log), timeout=30, interval=0.1)
        except AssertionError:
            raise RuntimeError(
                f"daphne did not answer {server.url}/healthz within 30 s:\n{log.read_text()}"
            ) from None
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def app_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    """The app at demo speed (~3 s replies). Its `openai` provider points at a closed local port, so a
    thread on it fails at once: that is how the error + Retry path is exercised."""
    yield from _serve(
        tmp_path_factory.mktemp("app"),
        OPENAI_BASE_URL=f"http://127.0.0.1:{free_port()}/v1",
        OPENAI_API_KEY="sk-test-not-used",
        PROVIDER_MAX_RETRIES="0",
    )


@pytest.fixture(scope="session")
def slow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    """A slower model (15 tokens/s, long replies) so that Stop lands mid-stream."""
    yield from _serve(tmp_path_factory.mktemp("slow"), DEMO_TOKENS_PER_S="15", DEMO_MAX_TOKENS="300")


@pytest.fixture(scope="session")
def models_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    """The app with a second connection made in the database ("lab", the demo under another name), and
    the catalog read afresh on every request (no MODEL_CATALOG_TTL_S wait after the test adds it)."""
    yield from _serve(tmp_path_factory.mktemp("models"), MODEL_CATALOG_TTL_S="0", DEMO_TOKENS_PER_S="120")


@pytest.fixture(scope="session")
def base_url(app_server: AppServer) -> str:
    return app_server.url


@pytest.fixture(scope="session")
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS
