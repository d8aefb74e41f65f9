"""#21: nginx in front of two daphne processes on PostgreSQL + Redis; SIGTERM to the process that runs a
generation. Its WebSocket viewers are closed with 1012, reconnect through nginx to the other process and
resume from a snapshot (no delta lost, none repeated); the SSE sender's stream ends with the whole reply;
the process exits 0; no row stays `streaming`. Before chatapp/shutdown.py, SIGTERM stopped the reactor at
once: the generation died (the row ended `interrupted` by the other process's sweep, its text cut short)
and the process's sockets dropped with 1006."""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from benchmarks.resume import ResumingViewer, ws_url
from deploy.serve import AppProcess, Nginx, free_port
from providers.fake.server import ThreadedFakeServer
from tests.servers import _server_env
from threads.models import Message

pytestmark = [pytest.mark.services, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

VIEWERS = 6
TIMEOUT = 60.0


class Stack:
    def __init__(self, env: dict[str, str], work: Path) -> None:
        self.apps = [AppProcess(free_port(), env, work / f"daphne-{i}.log") for i in range(2)]
        self.nginx = Nginx(free_port(), [a.port for a in self.apps], work / "nginx")

    def by_upstream(self, addr: str) -> AppProcess:
        port = int(addr.rsplit(":", 1)[1])
        return next(a for a in self.apps if a.port == port)

    def logs(self) -> str:
        return "\n".join(f"--- daphne {a.port}:\n{a.log_tail()}" for a in self.apps)


@pytest.fixture
def fake() -> Iterator[ThreadedFakeServer]:
    with ThreadedFakeServer(ttft_ms=100, tps=40, tokens=160) as server:  # a 4 s reply
        yield server


def _stack(fake: ThreadedFakeServer, **extra: str) -> Iterator[Stack]:
    work = Path(tempfile.mkdtemp(prefix="rolling-"))
    (work / "prometheus").mkdir()
    env = _server_env(
        {
            "OPENAI_BASE_URL": fake.openai_base_url,
            "OPENAI_API_KEY": "sk-test",
            "OPENAI_MODEL": "fake-model",
            "SHUTDOWN_GRACE_S": "20",
            **extra,
        },
        str(work / "prometheus"),
    )
    stack = Stack(env, work)
    try:
        for app in stack.apps:
            app.start()
        stack.nginx.start()
        yield stack
    except BaseException:
        print(stack.logs())
        raise
    finally:
        for app in stack.apps:
            app.terminate(timeout=30)
        stack.nginx.stop()
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture
def stack(fake: ThreadedFakeServer) -> Iterator[Stack]:
    yield from _stack(fake)


@pytest.fixture
def short_grace_stack(fake: ThreadedFakeServer) -> Iterator[Stack]:
    yield from _stack(fake, SHUTDOWN_GRACE_S="1")


async def _sse_send(
    client: httpx.AsyncClient, url: str, body: dict[str, Any], upstream: asyncio.Future[str]
) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    async with client.stream("POST", url, json=body, timeout=TIMEOUT) as resp:
        assert resp.status_code == 200, await resp.aread()
        upstream.set_result(resp.headers["x-upstream"])
        async for line in resp.aiter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line.removeprefix("data: ")))
    return events


async def _stream_and_stop(stack: Stack, token: str, request_id: str) -> tuple[Any, ...]:
    """Viewers through nginx, an SSE send through nginx, SIGTERM to the process that runs it after a few
    deltas; returns (viewers, the SSE events, the stopped process's exit code, the stopped process)."""
    auth = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(headers=auth) as client:
        resp = await client.post(stack.nginx.url + "/api/threads", json={"provider": "openai"})
        thread_id = resp.json()["id"]
        viewers = [
            ResumingViewer(ws_url(stack.nginx.url, thread_id), token, request_id) for _ in range(VIEWERS)
        ]
        tasks = [asyncio.create_task(v.run(give_up_after_s=TIMEOUT)) for v in viewers]
        await asyncio.wait_for(asyncio.gather(*(v.connected.wait() for v in viewers)), TIMEOUT)
        upstream: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        body = {"content": "a long answer", "request_id": request_id, "stream": True}
        sse = asyncio.create_task(
            _sse_send(client, f"{stack.nginx.url}/api/threads/{thread_id}/messages", body, upstream)
        )
        runner = stack.by_upstream(await asyncio.wait_for(upstream, TIMEOUT))
        await asyncio.wait_for(viewers[0].streaming.wait(), TIMEOUT)  # some deltas are out
        assert runner.process is not None
        runner.process.terminate()  # SIGTERM
        code = await asyncio.to_thread(runner.process.wait, TIMEOUT)
        events = await asyncio.wait_for(sse, TIMEOUT)
        await asyncio.wait_for(asyncio.gather(*tasks), TIMEOUT)
    return viewers, events, code, runner


def _sse_text(events: list[dict[str, Any]]) -> str:
    seqs = [e["seq"] for e in events if e["type"] == "message.delta"]
    assert seqs == list(range(1, len(seqs) + 1))
    return "".join(e["text"] for e in events if e["type"] == "message.delta")


async def test_sigterm_lets_the_generation_finish_and_every_viewer_resumes_elsewhere(
    stack: Stack, token: str, fake: ThreadedFakeServer
) -> None:
    viewers, events, code, runner = await _stream_and_stop(stack, token, "rolling-1")
    assert code == 0, runner.log_tail()
    row = await Message.objects.aget(request_id="rolling-1", role="assistant")
    assert row.status == "complete" and len(row.content.split()) == 160
    # The SSE sender stayed on the draining process to the end.
    assert events[-1]["type"] == "message.done" and _sse_text(events) == row.content
    for viewer in viewers:
        assert viewer.summary() == {
            "lost": 0,
            "repeated": 0,
            "mismatched": 0,
            "connects": viewer.connects,
            "terminal": viewer.terminal,
            "equal": True,
        }
    # The viewers of the stopped process were closed with 1012 and came back (through nginx).
    moved = [v for v in viewers if 1012 in v.close_codes]
    assert moved and all(v.connects == 2 for v in moved), [(v.connects, v.close_codes) for v in viewers]
    assert fake.stats()["completed"] == 1
    assert not await Message.objects.filter(status="streaming").aexists()
    log = runner.log_tail(20000)
    assert "SIGTERM: drained (0 generation(s) interrupted)" in log and "Traceback" not in log


async def test_a_generation_still_running_at_the_deadline_is_saved_with_its_text(
    short_grace_stack: Stack, token: str
) -> None:
    viewers, events, code, runner = await _stream_and_stop(short_grace_stack, token, "rolling-2")
    assert code == 0, runner.log_tail()
    row = await Message.objects.aget(request_id="rolling-2", role="assistant")
    assert (row.status, row.error_code) == ("error", "interrupted")  # the page offers Retry
    assert 0 < len(row.content.split()) < 160
    assert events[-1]["type"] == "message.error" and events[-1]["message"]["content"] == row.content
    for viewer in viewers:
        assert viewer.lost == viewer.repeated == viewer.mismatched == 0
        assert viewer.final is not None and viewer.final["content"] == row.content
    assert not await Message.objects.filter(status="streaming").aexists()
