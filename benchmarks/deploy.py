"""What the benchmarks start and stop: the fake provider in its own process, daphne deployments, and a
throw-away PostgreSQL database and Redis key prefix.

Every class here stops what it started, also on errors (context managers, `stop()` in `finally`).
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx

from benchmarks._common import free_port, healthy

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / ".venv" / "bin" if (ROOT / ".venv" / "bin" / "daphne").exists() else Path(sys.executable).parent


class FakeControl(Protocol):
    """What the benchmarks use of a fake provider, in a thread (ThreadedFakeServer) or a process."""

    @property
    def openai_base_url(self) -> str: ...

    def configure(self, **changes: Any) -> dict[str, Any]: ...

    def stats(self) -> dict[str, Any]: ...

    def reset(self) -> None: ...


class SubprocessFakeServer:
    """The fake provider in its own OS process, so the benchmark's 200-connection client does not slow
    it down (in one process the provider alone measured p95 1.8x its own latency on 200 streams)."""

    def __init__(self, *, ttft_ms: float, tps: float, tokens: int) -> None:
        args = ["--port", "0", "--ttft-ms", str(ttft_ms), "--tps", str(tps), "--tokens", str(tokens)]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "providers.fake", *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(10)
            raise RuntimeError(f"the fake provider exited with {self.proc.returncode} before listening")
        url = next(w for w in line.split() if w.startswith("http"))
        self.base_url = url.rstrip("/").removesuffix("/v1")
        self.openai_base_url = self.base_url + "/v1"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def reset(self) -> None:
        """Counters, fault queue and config back to the startup flags."""
        httpx.post(self.base_url + "/_fake/reset", timeout=10).raise_for_status()

    def configure(self, **changes: Any) -> dict[str, Any]:
        """Same fields as POST /_fake/config (`ttft_ms`, `tps`, `tokens`, `fault`, `next_faults`...)."""
        resp = httpx.post(self.base_url + "/_fake/config", json=changes, timeout=10)
        resp.raise_for_status()
        return dict(resp.json())

    def stats(self) -> dict[str, Any]:
        return dict(httpx.get(self.base_url + "/_fake/stats", timeout=10).json())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def __enter__(self) -> SubprocessFakeServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


DEFAULT_ASGI_APP = "chatapp.asgi:application"


def bench_env(*, prefix: str, metrics_token: str) -> dict[str, str]:
    """A benchmarked deployment's environment, without its URLs: production settings (DEBUG=false, own
    SECRET_KEY), the fake as the OpenAI provider with no pacing of it (the pacer is measured on its
    own), no per-user quotas (one bench user stands for many people), its own Redis key prefix."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("REDIS_URL", "DATABASE_URL", "PROMETHEUS_MULTIPROC_DIR") and not k.startswith("PYTEST")
    }
    return env | {
        "DEBUG": "false",
        "SECRET_KEY": secrets.token_urlsafe(40),
        "FIELD_ENCRYPTION_KEY": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        "SECURE_SSL_REDIRECT": "false",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "LOG_LEVEL": "WARNING",
        "DEFAULT_PROVIDER": "openai",
        "OPENAI_API_KEY": "sk-bench",
        "OPENAI_MODEL": "fake-model",
        "PACER_OPENAI_RPS": "0",
        "SEND_RATE_PER_MIN": "0",
        "MAX_SOCKETS_PER_USER": "0",
        "METRICS_TOKEN": metrics_token,
        "CHANNEL_LAYER_PREFIX": prefix,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH", "")])),
    }


class Deployment:
    """`processes` daphne processes of chatapp sharing `env` (DATABASE_URL, REDIS_URL...), on free
    loopback ports with a listen backlog of 1024 (Twisted's 50 would drop a burst of connections)."""

    def __init__(
        self,
        env: dict[str, str],
        tmp: Path,
        *,
        processes: int = 1,
        label: str = "app",
        asgi_app: str = DEFAULT_ASGI_APP,
        app_root: Path = ROOT,
    ) -> None:
        self.env, self.tmp, self.processes, self.label = env, tmp, processes, label
        self.asgi_app = asgi_app
        self.app_root = app_root  # whose code runs: this checkout's, or another's (benchmarks.ab)
        self.procs: list[tuple[subprocess.Popen[bytes], str]] = []

    def manage(self, *args: str) -> str:
        cmd = [str(BIN / "python"), "manage.py", *args]
        res = subprocess.run(
            cmd, cwd=self.app_root, env=self.env, capture_output=True, text=True, timeout=180
        )
        if res.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{res.stderr[-2000:]}")
        return res.stdout

    def prepare(self, username: str = "benchuser") -> str:
        """Migrate and create `username`'s API token (returned)."""
        self.manage("migrate", "--noinput")
        return self.manage("create_api_token", username).strip().splitlines()[-1]

    def start(self, **overrides: str) -> list[str]:
        """Start the processes with `env | overrides` and wait until each answers /healthz; their URLs."""
        prom = self.tmp / f"prom-{self.label}"
        shutil.rmtree(prom, ignore_errors=True)  # emptied when the deployment starts
        prom.mkdir(parents=True)
        env = self.env | {"PROMETHEUS_MULTIPROC_DIR": str(prom), "PACER_PROCESSES": str(self.processes)}
        env |= overrides
        for i in range(self.processes):
            port = free_port()
            log = open(self.tmp / f"daphne-{self.label}-{i}.log", "wb")  # the child keeps its own copy
            endpoint = f"tcp:port={port}:interface=127.0.0.1:backlog=1024"
            cmd = [str(BIN / "daphne"), "-e", endpoint, self.asgi_app]
            proc = subprocess.Popen(cmd, cwd=self.app_root, env=env, stdout=log, stderr=subprocess.STDOUT)
            log.close()
            self.procs.append((proc, f"http://127.0.0.1:{port}"))
        deadline = time.monotonic() + 60
        for proc, url in self.procs:
            while not healthy(url):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"daphne at {url} did not come up:\n{self.logs()}")
                time.sleep(0.2)
        return self.urls

    @property
    def urls(self) -> list[str]:
        return [url for _, url in self.procs]

    @property
    def pids(self) -> list[int]:
        return [proc.pid for proc, _ in self.procs]

    def logs(self) -> str:
        return "".join(
            p.read_text(errors="replace")[-1500:] for p in sorted(self.tmp.glob(f"daphne-{self.label}-*.log"))
        )

    def stop(self) -> None:
        for proc, _ in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc, _ in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.procs = []


def _pg_cli(server_url: str) -> tuple[list[str], dict[str, str]]:
    parts = urlsplit(server_url)
    args = ["-h", parts.hostname or "127.0.0.1", "-p", str(parts.port or 5432)]
    args += ["-U", parts.username or "postgres"]
    env = dict(os.environ) | ({"PGPASSWORD": parts.password} if parts.password else {})
    return args, env


@contextlib.contextmanager
def temporary_database(server_url: str, name: str) -> Iterator[str]:
    """Create database `name` on the PostgreSQL server `server_url` (no path), yield its URL, drop it."""
    args, env = _pg_cli(server_url)
    subprocess.run(["createdb", *args, name], env=env, check=True, capture_output=True, timeout=60)
    try:
        yield f"{server_url.rstrip('/')}/{name}"
    finally:
        dropdb = ["dropdb", *args, "--if-exists", "--force", name]
        subprocess.run(dropdb, env=env, check=False, capture_output=True, timeout=60)


def redis_clean(url: str, prefix: str) -> int:
    """Delete the keys starting with `prefix` (what a deployment with that prefix left); how many."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        for i in range(0, len(keys), 500):
            client.delete(*keys[i : i + 500])
        return len(keys)
    finally:
        client.close()
