"""`python -m benchmarks.burst` against two live daphne processes and the fake provider: HTTP, SSE and WebSocket
sends; the JSON it writes holds the figures (identical sends: one provider call, two rows)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks import burst as burst_cli
from providers.fake.server import ThreadedFakeServer
from tests.servers import daphne_servers

pytestmark = [pytest.mark.services, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

BURST_KEYS = {
    "n",
    "ok",
    "errors",
    "success_rate",
    "statuses",
    "roles",
    "p50_s",
    "p95_s",
    "provider_calls",
    "rows",
}


def test_burst_writes_its_figures(token: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with ThreadedFakeServer(ttft_ms=200, tps=200, tokens=10) as fake:
        env = {
            "OPENAI_BASE_URL": fake.openai_base_url,
            "OPENAI_API_KEY": "sk-test",
            "OPENAI_MODEL": "fake-model",
            "DEFAULT_PROVIDER": "openai",
        }
        with daphne_servers(2, env=env) as (a, b):
            for mode in ("http", "sse", "ws"):
                out = tmp_path / f"{mode}.json"
                burst_cli.main(
                    [
                        *("--url", f"{a.base_url},{b.base_url}", "--token", token),
                        *("--n", "6", "--concurrency", "0", "--mode", mode, "--k", "1"),
                        *("--provider-url", fake.openai_base_url, "--json-out", str(out)),
                    ]
                )
                res = json.loads(out.read_text())
                burst = res["burst"]
                assert BURST_KEYS <= set(burst), mode
                assert (burst["ok"], burst["errors"]) == (6, 0), (
                    mode,
                    burst["statuses"],
                    burst["error_kinds"],
                )
                assert burst["provider_calls"] == 1 and burst["provider_calls_source"] == "fake", mode
                assert burst["rows"] == 2, mode
                provider = res["provider"]["sequential_median_s"]
                assert 0.2 <= provider < 2 and burst["p95_s"] >= 0.2, mode
                floor = res["floor"]
                assert floor["delay_s"] == provider and floor["errors"] == 0 and floor["p50_s"] >= provider
                if mode != "http":
                    assert burst["ttft_p50_s"] >= 0.2, mode  # the fake's 200 ms before the first token
    printed = capsys.readouterr().out
    assert "generator floor" in printed and "provider calls" in printed


async def test_the_row_count_reads_every_page_of_a_long_thread(token: str, user: Any) -> None:
    """The burst's "DB rows" figure: GET /api/threads/{id} answers the newest page only, so a burst with
    coalescing off (2 rows a send) was counted as 50 rows whatever its size."""
    from asgiref.sync import sync_to_async

    from benchmarks import loadgen
    from threads.models import Message, Thread

    def seed() -> int:
        thread = Thread.objects.create(owner=user, provider="demo", model="demo-1")
        Message.objects.bulk_create(
            Message(thread=thread, role="user", content=f"m{i}", status="complete", request_id=f"r{i}")
            for i in range(130)
        )
        return int(thread.pk)

    tid = await sync_to_async(seed)()
    with daphne_servers(1) as (server,):
        async with loadgen.session(token) as client:
            assert await loadgen.count_messages(client, server.url(f"/api/threads/{tid}")) == 130
            assert await loadgen.count_messages(client, server.url("/api/threads/999999")) is None
