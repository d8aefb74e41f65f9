"""`make bench`'s deployment rows (#21): chatapp as it is deployed, nginx in front of daphne processes
(deploy/serve.py's `Nginx` and `AppProcess`), every client going through nginx.

- the burst and the fan-out, as in the direct rows, but through nginx;
- the rolling restart: VIEWERS WebSocket viewers (benchmarks/resume.py: they reconnect and resume as the
  page does) follow one long reply; the process that does not run it is restarted (SIGTERM, start
  again), then the one that does. Counted: deltas lost, deltas repeated, viewers whose text differs from
  the saved message, the processes' exit codes.

    .venv/bin/python -m benchmarks.restart_bench [--viewers 100]   # the rolling restart on its own

On its own it starts the fake provider (a 12 s reply), a throw-away PostgreSQL database and Redis db 8
under the key prefix `restartbench`, as `make bench` does.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from benchmarks.resume import ResumingViewer, ws_url
from deploy.serve import AppProcess, Nginx, free_port

VIEWERS = 100
TIMEOUT_S = 120.0


class Front:
    """`processes` daphne processes behind nginx; looks like benchmarks.deploy.Deployment to the
    benchmarks (`urls` is nginx alone, `pids` the app processes)."""

    def __init__(self, env: Mapping[str, str], tmp: Path, *, processes: int = 2) -> None:
        prom = Path(tempfile.mkdtemp(prefix="prom-front-", dir=tmp))
        self.env = dict(env) | {"PROMETHEUS_MULTIPROC_DIR": str(prom), "PACER_PROCESSES": str(processes)}
        self.apps = [
            AppProcess(free_port(), self.env, tmp / f"daphne-front-{i}.log") for i in range(processes)
        ]
        self.nginx = Nginx(free_port(), [a.port for a in self.apps], tmp / "nginx-front")

    def start(self, **overrides: str) -> list[str]:
        for app in self.apps:
            app.env = dict(app.env) | overrides
            app.start()
        self.nginx.start()
        return self.urls

    @property
    def urls(self) -> list[str]:
        return [self.nginx.url]

    @property
    def pids(self) -> list[int]:
        return [a.process.pid for a in self.apps if a.process is not None]

    def logs(self) -> str:
        return "".join(a.log_tail(1500) for a in self.apps)

    def by_upstream(self, addr: str) -> AppProcess:
        port = int(addr.rsplit(":", 1)[1])
        return next(a for a in self.apps if a.port == port)

    def stop(self) -> None:
        for app in self.apps:
            try:
                app.terminate(timeout=60)
            except Exception:  # killed after the timeout: nothing more to do
                pass
        self.nginx.stop()


async def _sse_send(
    client: httpx.AsyncClient, url: str, body: dict[str, Any], upstream: asyncio.Future[str]
) -> dict[str, Any]:
    """The send as SSE (its headers name the process that runs it: X-Upstream); its terminal event."""
    last: dict[str, Any] = {}
    async with client.stream("POST", url, json=body, timeout=TIMEOUT_S) as resp:
        upstream.set_result(resp.headers.get("x-upstream", ""))
        async for line in resp.aiter_lines():
            if line.startswith("data: "):
                last = json.loads(line.removeprefix("data: "))
    return last


async def rolling_restart(front: Front, token: str, *, viewers: int = VIEWERS) -> dict[str, Any]:
    """Viewers on a thread, a long reply, each process restarted in turn (the one that does not run the
    reply first: its viewers move to the one that does, which is then restarted under all of them)."""
    auth = {"Authorization": f"Bearer {token}"}
    base = front.nginx.url
    async with httpx.AsyncClient(headers=auth, timeout=TIMEOUT_S) as client:
        thread = (await client.post(f"{base}/api/threads", json={"provider": "openai"})).json()["id"]
        request_id = f"rolling-{time.time_ns()}"
        followers = [ResumingViewer(ws_url(base, thread), token, request_id) for _ in range(viewers)]
        tasks = [asyncio.create_task(v.run(give_up_after_s=TIMEOUT_S)) for v in followers]
        await asyncio.wait_for(asyncio.gather(*(v.connected.wait() for v in followers)), TIMEOUT_S)
        upstream: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        body = {"content": "a long answer, please", "request_id": request_id, "stream": True}
        sender = asyncio.create_task(
            _sse_send(client, f"{base}/api/threads/{thread}/messages", body, upstream)
        )
        runner = front.by_upstream(await asyncio.wait_for(upstream, TIMEOUT_S))
        await asyncio.wait_for(followers[0].streaming.wait(), TIMEOUT_S)
        order = [a for a in front.apps if a is not runner] + [runner]
        exits, restart_s = [], []
        for app in order:
            t = time.monotonic()
            exits.append(await asyncio.to_thread(app.restart, timeout=TIMEOUT_S))
            restart_s.append(time.monotonic() - t)
        terminal = await asyncio.wait_for(sender, TIMEOUT_S)
        await asyncio.wait_for(asyncio.gather(*tasks), TIMEOUT_S)
        saved = (await client.get(f"{base}/api/threads/{thread}")).json()["messages"][-1]
    summaries = [v.summary() for v in followers]
    return {
        "viewers": viewers,
        "exit_codes": exits,
        "restart_s": restart_s,
        "saved_status": saved["status"],
        "saved_chars": len(saved["content"]),
        "sender_terminal": terminal.get("type"),
        "lost": sum(s["lost"] for s in summaries),
        "repeated": sum(s["repeated"] for s in summaries),
        "mismatched": sum(s["mismatched"] for s in summaries),
        "equal": sum(1 for v in followers if v.text == saved["content"]),
        "finished": sum(1 for v in followers if v.done.is_set()),
        "reconnects": sum(s["connects"] - 1 for s in summaries),
    }


def restart_row_figure(res: Mapping[str, Any]) -> tuple[float, str]:
    """How many things went wrong (0 is the bar), and how the row reads."""
    n = int(res["viewers"])
    bad = (
        int(res["lost"])
        + int(res["repeated"])
        + int(res["mismatched"])
        + (n - int(res["equal"]))
        + (0 if res["saved_status"] == "complete" else 1)
        + sum(1 for code in res["exit_codes"] if code != 0)
    )
    shown = (
        f"{res['lost']} lost, {res['repeated']} repeated, message {res['saved_status']}, "
        f"{res['equal']}/{n} viewers equal, exits {res['exit_codes']}, {res['reconnects']} reconnects"
    )
    return float(bad), shown


def main(argv: list[str] | None = None) -> int:
    import argparse
    import os

    from benchmarks.deploy import Deployment, SubprocessFakeServer, bench_env, redis_clean, temporary_database

    p = argparse.ArgumentParser(description="rolling restart through nginx")
    p.add_argument("--viewers", type=int, default=VIEWERS)
    p.add_argument("--postgres", default="postgres://postgres@127.0.0.1:5432")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/8")
    opts = p.parse_args(argv)
    prefix = "restartbench"
    with (
        SubprocessFakeServer(ttft_ms=300, tps=50, tokens=600) as fake,
        tempfile.TemporaryDirectory(prefix="restart-bench-") as tmpdir,
        temporary_database(opts.postgres, f"restartbench_{os.getpid()}") as db_url,
    ):
        env = bench_env(prefix=prefix, metrics_token="restart-bench") | {
            "OPENAI_BASE_URL": fake.openai_base_url,
            "DATABASE_URL": db_url,
            "REDIS_URL": opts.redis_url,
        }
        redis_clean(opts.redis_url, prefix)
        token = Deployment(env, Path(tmpdir)).prepare()
        front = Front(env, Path(tmpdir))
        try:
            front.start()
            res = asyncio.run(rolling_restart(front, token, viewers=opts.viewers))
        finally:
            front.stop()
            redis_clean(opts.redis_url, prefix)
            print(front.logs()[-3000:] if "res" not in locals() else "")
    bad, shown = restart_row_figure(res)
    print(json.dumps(res, indent=2))
    print(f"rolling restart ({opts.viewers} viewers): {shown} -> {'PASS' if bad == 0 else 'FAIL'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
