"""A server process makes ready at start-up (chatapp/warmup.py, from chatapp/asgi.py) what its first
requests would otherwise build on their way: the providers' HTTP stack (the TLS context, httpcore's
modules) before a burst's leader calls the provider, and `reverse()`'s URL map before a crowd of worker
threads each builds its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow

# What daphne does first (import the application), then what the first requests do: two provider
# clients made in the server's loop, and reverse() from worker threads, as allauth's middleware does.
PROBE = """
import asyncio, json, ssl, sys, threading
import chatapp.asgi
from django.urls import reverse
from django.urls.resolvers import URLResolver
from providers import OpenAIProvider

before = set(sys.modules)
counts = {"ca_loads": 0, "url_map_builds": 0}
load, populate = ssl.SSLContext.load_verify_locations, URLResolver._populate
def counted(name, real):
    def wrapper(*args, **kwargs):
        counts[name] += 1
        return real(*args, **kwargs)
    return wrapper
ssl.SSLContext.load_verify_locations = counted("ca_loads", load)
URLResolver._populate = counted("url_map_builds", populate)

async def first_calls():
    for name in ("a", "b"):
        OpenAIProvider(name=name, base_url="http://127.0.0.1:9/v1", model="m")._get_client()
asyncio.run(first_calls())
threads = [threading.Thread(target=reverse, args=("account_login",)) for _ in range(4)]
for t in threads: t.start()
for t in threads: t.join()
new = sorted(m for m in set(sys.modules) - before if m.split(".")[0] in ("httpx", "httpcore", "h11", "anyio", "certifi"))
print(json.dumps({**counts, "imported_then": new}))
"""


def test_a_server_process_has_its_first_requests_work_done_before_it_serves(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=ROOT,
        env={
            **env,
            "DEBUG": "true",
            "DJANGO_SETTINGS_MODULE": "chatapp.settings",
            "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    # No CA bundle read per client (20-40 ms each), no module imported on the way, no URL map built.
    assert seen == {"ca_loads": 0, "url_map_builds": 0, "imported_then": []}
