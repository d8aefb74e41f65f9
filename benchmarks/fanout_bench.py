"""Stream fan-out benchmark: K WebSocket viewers of one thread, with 1 and 2 daphne processes.

    .venv/bin/python -m benchmarks.fanout_bench                    # K=10,100,1000; 1p+Redis, 2p+Redis, 1p in-memory
    .venv/bin/python -m benchmarks.fanout_bench --k 10,100 --processes 2 --no-memory-row

Prints, per deployment and K: delivered deltas (against K x the deltas of the reply), delivery lag
p50/p99, server CPU per delivered client-frame; per deployment: TTFT overhead over the provider's own
TTFT (p50/p95 over `--ttft-sends` sends) and cancel latency (p50/p95 over `--cancels` cancels). Writes
benchmarks/results/fanout.json. A report, not a test: exits 0 either way.

Set-up: the fake provider (providers.fake.server) runs in a thread of this process, so its schedule is
known (a token i of a reply is due at call arrival + ttft + i / tps) and its TTFT is also measured directly
with httpx. The app runs as daphne process(es) on a temporary PostgreSQL database (createdb, dropped at the
end) with REDIS_URL=--redis-url and CHANNEL_LAYER_PREFIX=fanbench (channels-redis), for 1 and 2 processes
alike; the extra "1p-mem" row is one process on SQLite with the in-memory channel layer. Viewers are asyncio
`websockets` clients in `--client-procs` worker processes (at most `--clients-per-proc` each), spread
round-robin over the server processes; each viewer reads continuously and stamps every frame with
time.monotonic() (one clock for every process on Linux) when it arrives.

Definitions:
- delivered: delta frames of the send received by the K viewers (each seq counted once per viewer);
  expected = K x n, n = the reply's number of deltas (highest seq). complete = viewers whose seqs are
  1..n with no gap and whose concatenated deltas equal message.done's content.
- lag (the target's): the server puts no timestamps in deltas, so "the leader's send" of delta s is taken
  as its earliest receipt by any viewer: lag(viewer, s) = receipt(viewer, s) - min over viewers of
  receipt(s). It measures the fan-out spread; it does not include the time before the first receipt.
- e2e lag (for reference, an upper bound): receipt(viewer, s) - the time the fake provider was due to
  emit the last token delta s holds. It includes the app's batching window (STREAM_FLUSH_MS, 30 ms).
- CPU per client-frame: utime+stime of the daphne processes (/proc/PID/stat) from just before the send
  until every viewer has its terminal event, divided by the frames (start, deltas, terminal) delivered.
- TTFT overhead: a viewer sends {"type": "send"} and stamps the first message.delta of its request;
  minus the provider's TTFT measured directly (median of `--ttft-sends` direct streams); one viewer per
  process, nobody else watching. The fan-out table's "TTFT+" is the same overhead with K viewers
  watching (an HTTP send to process A -> the first viewer's first delta).
- cancel latency: a long generation (fake 2000 tokens at 50 tokens/s); after the first delta, POST
  /api/threads/cancel/{request_id} (alternating between the processes); until the viewer receives
  message.cancelled. Also checks the fake provider saw one client disconnect per cancel.

Targets (2-core machine): K=1000 lag p99 <= 250 ms; TTFT overhead p95 <= 20 ms; cancel p95 <= 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing as mp
import os
import platform
import resource
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from websockets.asyncio.client import ClientConnection

    from benchmarks.deploy import FakeControl

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / ".venv" / "bin" if (ROOT / ".venv" / "bin" / "daphne").exists() else Path(sys.executable).parent

# Runnable as `python -m benchmarks.NAME` or as a script: the project root must be importable.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from benchmarks._common import pct, process_cpu_seconds  # noqa: E402
from benchmarks.deploy import DEFAULT_ASGI_APP, Deployment, bench_env, redis_clean, temporary_database  # noqa: E402

PREFIX = "fanbench"
METRICS_TOKEN = "fanbench-metrics"
TERMINAL = ("message.done", "message.cancelled", "message.error")
TERMINAL_MARKS = tuple(f'"type":"{t}"'.encode() for t in TERMINAL)
TARGET_LAG_P99_MS = 250.0
TARGET_TTFT_P95_MS = 20.0
TARGET_CANCEL_P95_MS = 50.0


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 65536, hard))


# --- viewer worker processes ------------------------------------------------------------------------------


@dataclass(eq=False)
class Viewer:
    ws: ClientConnection
    log: list[tuple[float, str | bytes]]
    ended: asyncio.Event
    task: asyncio.Task[None] | None = None


async def _read_forever(viewer: Viewer) -> None:
    from websockets.exceptions import ConnectionClosed

    try:
        async for frame in viewer.ws:
            viewer.log.append((time.monotonic(), frame))
            raw = frame.encode() if isinstance(frame, str) else frame
            if any(mark in raw for mark in TERMINAL_MARKS):
                viewer.ended.set()
    except ConnectionClosed:
        pass
    finally:
        viewer.ended.set()


async def _connect_viewer(url: str, token: str, sem: asyncio.Semaphore) -> Viewer | str:
    from websockets.asyncio.client import connect

    async with sem:
        try:
            ws = await connect(
                url,
                additional_headers={"Authorization": f"Bearer {token}"},
                open_timeout=60,
                ping_interval=None,
                max_size=None,
            )
            snap = json.loads(await asyncio.wait_for(ws.recv(), 60))
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
    if snap.get("type") != "snapshot":
        return f"first frame {snap.get('type')!r}"
    viewer = Viewer(ws=ws, log=[], ended=asyncio.Event())
    viewer.task = asyncio.create_task(_read_forever(viewer))
    return viewer


def _summarise(viewers: list[Viewer], request_id: str) -> dict[str, Any]:
    """Per viewer: seqs and receipt times of the request's deltas, whether its stream is complete."""
    out: dict[str, Any] = {
        "seqs": [],
        "times": [],
        "complete": [],
        "frames": 0,
        "terminal": [],
        "texts": None,
    }
    for viewer in viewers:
        seqs: list[int] = []
        times: list[float] = []
        texts: list[str] = []
        terminal: dict[str, Any] | None = None
        for t, raw in viewer.log:
            ev = json.loads(raw)
            if ev.get("request_id") != request_id:
                continue
            out["frames"] += 1
            if ev["type"] == "message.delta":
                seqs.append(ev["seq"])
                times.append(t)
                texts.append(ev["text"])
            elif ev["type"] in TERMINAL:
                terminal = ev
        text = "".join(texts)
        complete = (
            terminal is not None
            and terminal["type"] == "message.done"
            and seqs == list(range(1, len(seqs) + 1))
            and text == terminal["message"]["content"]
        )
        out["seqs"].append(seqs)
        out["times"].append(times)
        out["complete"].append(complete)
        out["terminal"].append(None if terminal is None else terminal["type"])
        if complete and out["texts"] is None:
            out["texts"] = texts
    return out


async def _worker(conn: Connection) -> None:
    loop = asyncio.get_running_loop()
    viewers: list[Viewer] = []
    while True:
        cmd, arg = await loop.run_in_executor(None, conn.recv)
        if cmd == "connect":
            urls, token = arg
            t0 = time.monotonic()
            sem = asyncio.Semaphore(32)
            got = await asyncio.gather(*(_connect_viewer(u, token, sem) for u in urls))
            viewers = [v for v in got if isinstance(v, Viewer)]
            errors = [v for v in got if isinstance(v, str)]
            conn.send({"connected": len(viewers), "errors": errors[:5], "seconds": time.monotonic() - t0})
        elif cmd == "mark":
            for v in viewers:
                v.log.clear()
                v.ended.clear()
            conn.send(None)
        elif cmd == "report":
            request_id, timeout = arg
            with_timeout = asyncio.wait_for(asyncio.gather(*(v.ended.wait() for v in viewers)), timeout)
            try:
                await with_timeout
            except TimeoutError:
                pass
            conn.send(_summarise(viewers, request_id))
        elif cmd == "close":
            await asyncio.gather(*(v.ws.close() for v in viewers), return_exceptions=True)
            for v in viewers:
                if v.task is not None:
                    v.task.cancel()
            viewers = []
            conn.send(None)
        else:
            conn.send(None)
            return


def _worker_entry(conn: Connection) -> None:
    raise_nofile()
    asyncio.run(_worker(conn))


class ViewerPool:
    """`n` worker processes holding the viewers of one run."""

    def __init__(self, n: int) -> None:
        ctx = mp.get_context("spawn")
        self.conns: list[Connection] = []
        self.procs: list[Any] = []
        for _ in range(n):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker_entry, args=(child,), daemon=True)
            proc.start()
            self.conns.append(parent)
            self.procs.append(proc)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def call(self, cmd: str, args: list[Any]) -> list[Any]:
        for conn, arg in zip(self.conns, args, strict=True):
            conn.send((cmd, arg))
        return [conn.recv() for conn in self.conns]

    def call_all(self, cmd: str, arg: Any = None) -> list[Any]:
        return self.call(cmd, [arg] * len(self.conns))

    def stop(self) -> None:
        for conn in self.conns:
            try:
                conn.send(("exit", None))
            except OSError:
                pass
        for proc in self.procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()


# --- the app ----------------------------------------------------------------------------------------------


@dataclass
class Mode:
    label: str
    processes: int
    redis: bool


def _app(mode: Mode, env: dict[str, str], tmp: Path, asgi_app: str = "") -> Deployment:
    return Deployment(
        env, tmp, processes=mode.processes, label=mode.label, asgi_app=asgi_app or DEFAULT_ASGI_APP
    )


def _new_thread(url: str, token: str) -> int:
    resp = httpx.post(
        f"{url}/api/threads",
        json={"provider": "openai", "title": "fan-out bench"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    resp.raise_for_status()
    return int(resp.json()["id"])


def _ws_url(url: str, thread_id: int) -> str:
    return url.replace("http://", "ws://") + f"/ws/threads/{thread_id}/"


def _last_call_time(fake: FakeControl) -> float:
    times = fake.stats()["call_times"]
    return float(times[-1]) if times else float("nan")


# --- fan-out runs -----------------------------------------------------------------------------------------


def fanout_run(
    app: Deployment, fake: FakeControl, token: str, k: int, opts: argparse.Namespace
) -> dict[str, Any]:
    urls = app.urls
    thread_id = _new_thread(urls[0], token)
    n_workers = max(1, min(opts.client_procs, math.ceil(k / opts.clients_per_proc)))
    pool = ViewerPool(n_workers)
    try:
        # Contiguous index ranges per worker, round-robin over the servers: every worker has viewers on
        # every server process.
        bounds = [round(w * k / n_workers) for w in range(n_workers + 1)]
        args = [
            ([_ws_url(urls[i % len(urls)], thread_id) for i in range(bounds[w], bounds[w + 1])], token)
            for w in range(n_workers)
        ]
        t0 = time.monotonic()
        connected = pool.call("connect", list(args))
        connect_s = time.monotonic() - t0
        n_connected = sum(c["connected"] for c in connected)
        errors = [e for c in connected for e in c["errors"]]
        fake.configure(ttft_ms=opts.ttft_ms, tps=opts.tps, tokens=opts.tokens)
        sends = []
        for s in range(opts.sends):
            pool.call_all("mark")
            rid = f"fan-{k}-{s}-{uuid.uuid4().hex[:8]}"
            cpu0, wcpu0 = process_cpu_seconds(app.pids), process_cpu_seconds(pool.pids)
            t_send = time.monotonic()
            resp = httpx.post(
                f"{urls[0]}/api/threads/{thread_id}/messages",
                json={"content": f"fan-out bench {k} {s}: tell me a long story", "request_id": rid},
                headers={"Authorization": f"Bearer {token}"},
                timeout=300,
            )
            reports = pool.call_all("report", (rid, 120.0))
            cpu1, wcpu1 = process_cpu_seconds(app.pids), process_cpu_seconds(pool.pids)
            call_at = _last_call_time(fake)
            sends.append(_send_figures(reports, resp, t_send, call_at, cpu1 - cpu0, wcpu1 - wcpu0, k, opts))
        pool.call_all("close")
    finally:
        pool.stop()
    return {
        "k": k,
        "client_procs": n_workers,
        "connected": n_connected,
        "connect_errors": errors,
        "connect_s": connect_s,
        "sends": sends,
        **_merge_sends(sends),
    }


def _send_figures(
    reports: list[dict[str, Any]],
    resp: httpx.Response,
    t_send: float,
    call_at: float,
    cpu_s: float,
    client_cpu_s: float,
    k: int,
    opts: argparse.Namespace,
) -> dict[str, Any]:
    seqs = [s for r in reports for s in r["seqs"]]
    times = [t for r in reports for t in r["times"]]
    n = max((max(s) for s in seqs if s), default=0)
    first: dict[int, float] = {}
    for ss, ts in zip(seqs, times, strict=True):
        for s, t in zip(ss, ts, strict=True):
            if s not in first or t < first[s]:
                first[s] = t
    lags = [
        (t - first[s]) * 1000 for ss, ts in zip(seqs, times, strict=True) for s, t in zip(ss, ts, strict=True)
    ]
    # When the fake provider was due to emit the last token each delta holds (tokens are " word").
    texts = next((r["texts"] for r in reports if r["texts"] is not None), None)
    e2e: list[float] = []
    if texts is not None and call_at == call_at:
        interval = 1 / opts.tps if opts.tps > 0 else 0.0
        words = 0
        due: dict[int, float] = {}
        for seq, text in enumerate(texts, start=1):
            words += len(text.split())
            due[seq] = call_at + opts.ttft_ms / 1000 + (words - 1) * interval
        e2e = [
            (t - due[s]) * 1000
            for ss, ts in zip(seqs, times, strict=True)
            for s, t in zip(ss, ts, strict=True)
            if s in due
        ]
    delivered = sum(len(set(s)) for s in seqs)
    frames = sum(r["frames"] for r in reports)
    all_times = [t for ts in times for t in ts]
    return {
        "status": resp.status_code,
        "deltas_per_reply": n,
        "expected": k * n,
        "delivered": delivered,
        "complete_viewers": sum(c for r in reports for c in r["complete"]),
        "terminal_missing": sum(t is None for r in reports for t in r["terminal"]),
        "frames": frames,
        "lag_ms": lags,
        "e2e_ms": e2e,
        "first_delta_after_send_s": (min(all_times) - t_send) if all_times else None,
        "last_delta_after_send_s": (max(all_times) - t_send) if all_times else None,
        "provider_call_after_send_s": call_at - t_send,
        "server_cpu_s": cpu_s,
        "client_cpu_s": client_cpu_s,
    }


def _merge_sends(sends: list[dict[str, Any]]) -> dict[str, Any]:
    lags = [x for s in sends for x in s["lag_ms"]]
    e2e = [x for s in sends for x in s["e2e_ms"]]
    frames = sum(s["frames"] for s in sends)
    cpu = sum(s["server_cpu_s"] for s in sends)
    return {
        "delivered": sum(s["delivered"] for s in sends),
        "expected": sum(s["expected"] for s in sends),
        "complete_viewers": sum(s["complete_viewers"] for s in sends),
        "lag_p50_ms": pct(lags, 50),
        "lag_p99_ms": pct(lags, 99),
        "lag_max_ms": max(lags, default=float("nan")),
        "e2e_p50_ms": pct(e2e, 50),
        "e2e_p99_ms": pct(e2e, 99),
        "frames": frames,
        "server_cpu_s": cpu,
        "cpu_us_per_frame": cpu / frames * 1e6 if frames else float("nan"),
        "client_cpu_s": sum(s["client_cpu_s"] for s in sends),
        "reply_s": max((s["last_delta_after_send_s"] or 0) for s in sends) if sends else None,
        "first_delta_after_send_p50_s": pct(
            [s["first_delta_after_send_s"] for s in sends if s["first_delta_after_send_s"] is not None], 50
        ),
    }


# --- TTFT and cancel ---------------------------------------------------------------------------------------


async def direct_ttft(fake: FakeControl, n: int) -> list[float]:
    """The provider's own TTFT: request sent -> first body chunk (the first token), straight to the fake."""
    out = []
    async with httpx.AsyncClient(timeout=30) as client:
        for i in range(n + 2):
            body = {
                "model": "fake-model",
                "stream": True,
                "messages": [{"role": "user", "content": f"d {i}"}],
            }
            t0 = time.monotonic()
            first = None
            async with client.stream("POST", f"{fake.openai_base_url}/chat/completions", json=body) as resp:
                async for chunk in resp.aiter_raw():
                    if first is None and chunk:
                        first = time.monotonic() - t0
            if i >= 2 and first is not None:  # the first two warm the connection
                out.append(first)
    return out


async def _until(
    ws: ClientConnection, request_id: str, kinds: tuple[str, ...]
) -> tuple[dict[str, Any], float]:
    while True:
        ev = json.loads(await asyncio.wait_for(ws.recv(), 60))
        if ev.get("request_id") == request_id and ev["type"] in kinds:
            return ev, time.monotonic()


async def _open(url: str, thread_id: int, token: str) -> ClientConnection:
    from websockets.asyncio.client import connect

    ws = await connect(
        _ws_url(url, thread_id), additional_headers={"Authorization": f"Bearer {token}"}, ping_interval=None
    )
    assert json.loads(await ws.recv())["type"] == "snapshot"
    return ws


async def ttft_phase(
    urls: list[str], token: str, thread_id: int, fake: FakeControl, n: int
) -> list[dict[str, float]]:
    """`n` sends (after 2 warm-ups), each from a viewer on the process i % P: send frame -> first delta."""
    sockets = [await _open(url, thread_id, token) for url in urls]
    out = []
    try:
        for i in range(n + 2):
            ws = sockets[i % len(sockets)]
            rid = f"ttft-{i}-{uuid.uuid4().hex[:8]}"
            t0 = time.monotonic()
            await ws.send(json.dumps({"type": "send", "content": f"ttft probe {i}", "request_id": rid}))
            _, t1 = await _until(ws, rid, ("message.delta", *TERMINAL))
            await _until(ws, rid, TERMINAL)
            call_at = await asyncio.to_thread(_last_call_time, fake)
            if i >= 2:
                out.append({"ttft_s": t1 - t0, "to_provider_call_s": call_at - t0})
    finally:
        for ws in sockets:
            await ws.close()
    return out


async def cancel_phase(urls: list[str], token: str, thread_id: int, n: int) -> list[dict[str, Any]]:
    """`n` times: a long generation from a viewer on process A, POST cancel to process i % P after its
    first delta, until that viewer receives message.cancelled."""
    ws = await _open(urls[0], thread_id, token)
    out = []
    try:
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
            for i in range(n):
                rid = f"cancel-{i}-{uuid.uuid4().hex[:8]}"
                await ws.send(json.dumps({"type": "send", "content": f"cancel me {i}", "request_id": rid}))
                await _until(ws, rid, ("message.delta",))
                target = urls[i % len(urls)]
                t0 = time.monotonic()
                resp = await http.post(f"{target}/api/threads/cancel/{rid}")
                t_http = time.monotonic()
                ev, t1 = await _until(ws, rid, TERMINAL)
                out.append(
                    {
                        "latency_s": t1 - t0,
                        "http_s": t_http - t0,
                        "status": resp.status_code,
                        "terminal": ev["type"],
                        "cross_process": target != urls[0],
                    }
                )
    finally:
        await ws.close()
    return out


def measure_streaming(
    app: Deployment, label: str, token: str, fake: FakeControl, opts: argparse.Namespace
) -> dict[str, Any]:
    """On a running deployment: warm-up, the fan-out run for each K, TTFT, cancel, the metrics summary."""
    urls = app.urls
    result: dict[str, Any] = {}
    # Warm-up: every process imports, connects to the database and the provider once.
    fake.configure(ttft_ms=opts.ttft_ms, tps=0, tokens=20)
    warm = _new_thread(urls[0], token)
    for url in urls:
        httpx.post(
            f"{url}/api/threads/{warm}/messages",
            json={"content": f"warm-up {url}"},
            headers={"Authorization": f"Bearer {token}"},
            timeout=60,
        ).raise_for_status()
    runs = []
    for k in opts.ks:
        print(f"  [{label}] K={k} ...", flush=True)
        runs.append(fanout_run(app, fake, token, k, opts))
    result["runs"] = runs
    print(f"  [{label}] TTFT x{opts.ttft_sends} ...", flush=True)
    fake.configure(ttft_ms=opts.ttft_ms, tps=0, tokens=20)
    result["ttft"] = asyncio.run(ttft_phase(urls, token, _new_thread(urls[0], token), fake, opts.ttft_sends))
    print(f"  [{label}] cancel x{opts.cancels} ...", flush=True)
    fake.configure(ttft_ms=20, tps=50, tokens=2000)
    disc0 = fake.stats()["client_disconnects"]
    result["cancel"] = asyncio.run(cancel_phase(urls, token, _new_thread(urls[0], token), opts.cancels))
    deadline = time.monotonic() + 5
    while fake.stats()["client_disconnects"] - disc0 < opts.cancels and time.monotonic() < deadline:
        time.sleep(0.05)
    result["cancel_client_disconnects"] = fake.stats()["client_disconnects"] - disc0
    summary = httpx.get(
        f"{urls[0]}/api/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=10
    )
    result["server_metrics"] = summary.json() if summary.status_code == 200 else summary.status_code
    return result


def run_mode(
    mode: Mode, env: dict[str, str], tmp: Path, token: str, fake: FakeControl, opts: argparse.Namespace
) -> dict[str, Any]:
    app = _app(mode, env, tmp, opts.app)
    result: dict[str, Any] = {"mode": mode.label, "processes": mode.processes, "redis": mode.redis}
    try:
        app.start()
        result |= measure_streaming(app, mode.label, token, fake, opts)
    except Exception as exc:
        result["failed"] = f"{type(exc).__name__}: {exc}"
        print(f"  [{mode.label}] FAILED: {result['failed']}\n{app.logs()[-3000:]}", flush=True)
    finally:
        app.stop()
    return result


# --- report ------------------------------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    return "-" if value is None or value != value else f"{value:.1f}"


def summarise_mode(res: dict[str, Any], direct_p50_s: float) -> dict[str, Any]:
    ttft = res.get("ttft") or []
    overhead = [(t["ttft_s"] - direct_p50_s) * 1000 for t in ttft]
    cancels = res.get("cancel") or []
    lat = [c["latency_s"] * 1000 for c in cancels if c["terminal"] == "message.cancelled"]
    cross = [c["latency_s"] * 1000 for c in cancels if c["cross_process"]]
    same = [c["latency_s"] * 1000 for c in cancels if not c["cross_process"]]
    return {
        "ttft_app_p50_ms": pct([t["ttft_s"] * 1000 for t in ttft], 50),
        "ttft_overhead_p50_ms": pct(overhead, 50),
        "ttft_overhead_p95_ms": pct(overhead, 95),
        "to_provider_call_p50_ms": pct([t["to_provider_call_s"] * 1000 for t in ttft], 50),
        "to_provider_call_p95_ms": pct([t["to_provider_call_s"] * 1000 for t in ttft], 95),
        "cancel_p50_ms": pct(lat, 50),
        "cancel_p95_ms": pct(lat, 95),
        "cancel_same_process_p95_ms": pct(same, 95),
        "cancel_cross_process_p95_ms": pct(cross, 95),
        "cancelled": len(lat),
        "cancel_statuses": sorted({c["status"] for c in cancels}),
        "cancel_http_p50_ms": pct([c["http_s"] * 1000 for c in cancels], 50),
    }


def report(results: list[dict[str, Any]], direct: list[float], opts: argparse.Namespace) -> dict[str, Any]:
    direct_p50 = pct(direct, 50)
    print(
        f"\nprovider (fake) TTFT measured directly: p50 {direct_p50 * 1000:.1f} ms, "
        f"p95 {pct(direct, 95) * 1000:.1f} ms (configured {opts.ttft_ms:g} ms)"
    )
    print(
        "lag = receipt - earliest receipt of that seq by any viewer; e2e = receipt - when the provider was due "
        "to emit the delta's last token (includes the 30 ms batching window); TTFT+ = the send's first delta "
        "at the first viewer minus the provider's direct TTFT, with K viewers (HTTP send to process A)"
    )
    head = (
        f"{'mode':9}{'K':>6}{'conn s':>8}{'delivered/expected':>20}{'complete':>10}"
        f"{'lag p50':>9}{'lag p99':>9}{'lag max':>9}{'e2e p50':>9}{'e2e p99':>9}{'CPU us/frame':>13}{'reply s':>9}{'TTFT+ ms':>10}"
    )
    print("\n" + head + "\n" + "-" * len(head))
    targets: dict[str, Any] = {}
    for res in results:
        for run in res.get("runs", []):
            print(
                f"{res['mode']:9}{run['k']:>6}{run['connect_s']:>8.1f}"
                f"{run['delivered']:>11}/{run['expected']:<8}"
                f"{run['complete_viewers']:>5}/{run['connected'] * opts.sends:<4}"
                f"{_ms(run['lag_p50_ms']):>9}{_ms(run['lag_p99_ms']):>9}{_ms(run['lag_max_ms']):>9}"
                f"{_ms(run['e2e_p50_ms']):>9}{_ms(run['e2e_p99_ms']):>9}{run['cpu_us_per_frame']:>13.1f}"
                f"{run['reply_s'] or float('nan'):>9.2f}"
                f"{_ms((run['first_delta_after_send_p50_s'] - direct_p50) * 1000):>10}"
            )
            if run["k"] == 1000:
                targets[f"{res['mode']} K=1000 lag p99 <= {TARGET_LAG_P99_MS:g} ms"] = (
                    run["lag_p99_ms"] <= TARGET_LAG_P99_MS and run["delivered"] == run["expected"]
                )
    head2 = (
        f"{'mode':9}{'TTFT app p50':>13}{'overhead p50':>13}{'overhead p95':>13}{'to call p95':>12}"
        f"{'cancel p50':>11}{'cancel p95':>11}{'same p95':>9}{'cross p95':>10}{'cancelled':>10}{'upstream closed':>16}"
    )
    print("\n" + head2 + "\n" + "-" * len(head2))
    for res in results:
        if "failed" in res:
            print(f"{res['mode']:9} FAILED: {res['failed']}")
        if "ttft" not in res:
            continue
        s = res["summary"] = summarise_mode(res, direct_p50)
        print(
            f"{res['mode']:9}{_ms(s['ttft_app_p50_ms']):>13}{_ms(s['ttft_overhead_p50_ms']):>13}"
            f"{_ms(s['ttft_overhead_p95_ms']):>13}{_ms(s['to_provider_call_p95_ms']):>12}"
            f"{_ms(s['cancel_p50_ms']):>11}{_ms(s['cancel_p95_ms']):>11}{_ms(s['cancel_same_process_p95_ms']):>9}"
            f"{_ms(s['cancel_cross_process_p95_ms']):>10}{s['cancelled']:>6}/{opts.cancels:<3}"
            f"{res.get('cancel_client_disconnects', 0):>12}/{opts.cancels:<3}"
        )
        targets[f"{res['mode']} TTFT overhead p95 <= {TARGET_TTFT_P95_MS:g} ms"] = (
            s["ttft_overhead_p95_ms"] <= TARGET_TTFT_P95_MS
        )
        targets[f"{res['mode']} cancel p95 <= {TARGET_CANCEL_P95_MS:g} ms"] = (
            s["cancel_p95_ms"] <= TARGET_CANCEL_P95_MS
            and s["cancelled"] == opts.cancels
            and res.get("cancel_client_disconnects") == opts.cancels
        )
    print("\ntargets:")
    for name, ok in targets.items():
        print(f"  {'MET   ' if ok else 'MISSED'} {name}")
    return targets


# --- main --------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument("--k", default="10,100,1000", help="viewer counts, comma-separated")
    p.add_argument("--processes", default="1,2", help="server process counts (Redis layer), comma-separated")
    p.add_argument("--no-memory-row", action="store_true", help="skip the 1-process in-memory-layer row")
    p.add_argument("--sends", type=int, default=1, help="sends per K (lag samples pooled)")
    p.add_argument("--ttft-ms", type=float, default=100.0, help="the fake provider's TTFT")
    p.add_argument("--tps", type=float, default=50.0, help="the fake provider's tokens/s in the fan-out runs")
    p.add_argument("--tokens", type=int, default=100, help="reply length (tokens) in the fan-out runs")
    p.add_argument("--ttft-sends", type=int, default=20)
    p.add_argument("--cancels", type=int, default=50)
    p.add_argument("--client-procs", type=int, default=4, help="most viewer worker processes")
    p.add_argument("--clients-per-proc", type=int, default=250)
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/4")
    p.add_argument("--postgres", default="postgres://postgres@127.0.0.1:5432", help="server for the temp db")
    p.add_argument("--app", default="chatapp.asgi:application", help="the ASGI application daphne serves")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "fanout.json"))
    opts = p.parse_args(argv)
    opts.ks = [int(x) for x in opts.k.split(",") if x]
    opts.process_counts = [int(x) for x in opts.processes.split(",") if x]
    return opts


def main(argv: list[str] | None = None) -> None:
    opts = parse_args(argv)
    sys.path.insert(0, str(ROOT))
    raise_nofile()
    from providers.fake.server import ThreadedFakeServer

    modes = [Mode(f"{n}p-redis", n, True) for n in opts.process_counts]
    if not opts.no_memory_row and 1 in opts.process_counts:
        modes.append(Mode("1p-mem", 1, False))
    machine = {"nproc": os.cpu_count(), "loadavg_start": os.getloadavg(), "python": platform.python_version()}
    params = {k: v for k, v in vars(opts).items() if k != "out"}
    print(f"fan-out bench: {params}\nmachine: {machine}", flush=True)
    started = time.monotonic()
    base_env = bench_env(prefix=PREFIX, metrics_token=METRICS_TOKEN)
    results: list[dict[str, Any]] = []
    direct: list[float] = []
    need_pg = any(m.redis for m in modes)
    with ThreadedFakeServer(ttft_ms=opts.ttft_ms, tps=opts.tps, tokens=opts.tokens) as fake:
        base_env["OPENAI_BASE_URL"] = fake.openai_base_url
        direct = asyncio.run(direct_ttft(fake, opts.ttft_sends))
        with tempfile.TemporaryDirectory(prefix="fanout-bench-") as tmpdir:
            tmp = Path(tmpdir)
            with contextlib.ExitStack() as cleanup:
                if need_pg:
                    db_url = cleanup.enter_context(
                        temporary_database(opts.postgres, f"fanbench_{os.getpid()}")
                    )
                    redis_clean(opts.redis_url, PREFIX)
                    cleanup.callback(redis_clean, opts.redis_url, PREFIX)
                    redis_env = base_env | {"DATABASE_URL": db_url, "REDIS_URL": opts.redis_url}
                    token = _app(modes[0], redis_env, tmp).prepare()
                    for mode in modes:
                        if mode.redis:
                            print(f"== {mode.label}", flush=True)
                            results.append(run_mode(mode, redis_env, tmp, token, fake, opts))
                for mode in modes:
                    if not mode.redis:
                        print(f"== {mode.label}", flush=True)
                        mem_env = base_env | {"DATABASE_URL": f"sqlite:///{tmp / 'mem.sqlite3'}"}
                        mem_token = _app(mode, mem_env, tmp).prepare()
                        results.append(run_mode(mode, mem_env, tmp, mem_token, fake, opts))
    targets = report(results, direct, opts)
    machine["loadavg_end"] = os.getloadavg()
    elapsed = time.monotonic() - started
    print(f"\ntotal {elapsed:.0f} s")
    for res in results:  # raw samples are large: keep the figures
        for run in res.get("runs", []):
            for send in run["sends"]:
                send["lag_ms_count"] = len(send.pop("lag_ms"))
                send["e2e_ms_count"] = len(send.pop("e2e_ms"))
    out = Path(opts.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "machine": machine,
        "params": params,
        "elapsed_s": elapsed,
        "provider_direct_ttft_s": direct,
        "results": results,
        "targets": targets,
    }
    out.write_text(json.dumps(payload, indent=2, default=str))
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
