"""Request-coalescing benchmark (issue 4): a burst of N identical sends, flag on and off, side by side.

    .venv/bin/python -m benchmarks.coalesce_bench                       # SQLite, 1 daphne, N=200
    .venv/bin/python -m benchmarks.coalesce_bench --n 50,200 --ttft-ms 300 --tps 100 --tokens 60  # 0.9 s replies
    .venv/bin/python -m benchmarks.coalesce_bench --processes 2 \\
        --database-url postgres://postgres@127.0.0.1:5432/bench_coalesce --redis-url redis://127.0.0.1:6379/3

The fake provider runs in its own process (`--fake-in-process`: a thread of this one) and its latency is
measured directly in the same run; by default it is `make bench`'s reference provider (TTFT 300 ms,
50 tokens/s, 200 tokens: 4.3 s a reply). The app runs as daphne process(es), restarted with
COALESCE_ENABLED=true, then false. Prints per burst: provider calls, rows, errors, p50/p95 latency / the
provider's, the same N sent straight to the provider through the same client (its floor), where the time
goes; writes benchmarks/results/coalesce.json. Targets (flag on): calls == 1, errors == 0, follower p95
ratio <= 1.05. A report, not a test: exits 0 either way.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

ROOT = Path(__file__).resolve().parent.parent

# Runnable as `python -m benchmarks.NAME` or as a script: the project root must be importable.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from benchmarks import leanclient, loadgen  # noqa: E402
from benchmarks._common import TOKENS, TPS, TTFT_MS, pct, process_cpu_seconds, quiet  # noqa: E402
from benchmarks.deploy import Deployment, SubprocessFakeServer  # noqa: E402

CONTENT = "Summarise the plot of Hamlet in three sentences."
MODES = ("on", "off")  # COALESCE_ENABLED, in this order
# PACER_OPENAI_RPS=0: unlimited, so the pacer does not interfere; SEND_RATE_PER_MIN=0: no per-user send
# budget (the flag-off burst is N generations of one user); the prefix keeps off others' Redis keys.
APP_ENV = """DEBUG=true OPENAI_API_KEY=sk-bench OPENAI_MODEL=fake-model DEFAULT_PROVIDER=openai
    PACER_OPENAI_RPS=0 SEND_RATE_PER_MIN=0 LOG_LEVEL=WARNING CHANNEL_LAYER_PREFIX=bench"""


@dataclass(slots=True)
class Sample:
    latency: float
    end: float  # time.monotonic(), system-wide on Linux: comparable with the fake's call_times
    status: int  # 0: transport error
    role: str  # leader | follower | bypass | "" (error)
    timings: dict[str, Any]  # the server's, of the Generation the request waited on in its process


async def direct_single(base: str, k: int) -> list[float]:
    """K sequential streams straight to the provider: its own latency (the denominator)."""
    async with loadgen.session() as client:
        await loadgen.stream_openai(client, base, "warm-up")
        return [await loadgen.stream_openai(client, base, f"direct {i}") for i in range(k)]


CLIENTS = ("aiohttp", "lean")  # benchmarks/loadgen.py, benchmarks/leanclient.py
WARM_PATH = "/_bench/prewarm"  # an unknown path: a 404 from the URL router, no database, no provider


async def direct_burst(
    base: str, n: int, stream: bool, prewarm: bool, client: str = "aiohttp", pids: list[int] | None = None
) -> list[float]:
    """N distinct requests at once straight to the provider, each on its own connection like the app
    burst. Streams: the provider's own concurrency cost. Whole answers (one body after the same delay):
    the floor of this client for N concurrent waits. `pids`: the provider's process, waited for until
    quiet once the connections are open, as the app's are before its bursts."""
    if client == "lean":
        return await _lean_direct_burst(base, n, stream, pids or [])
    async with loadgen.session() as session:
        if prewarm:
            await loadgen.prewarm(session, f"{base}{WARM_PATH}", n)
        await quiet(pids or [])
        tasks = (loadgen.stream_openai(session, base, f"burst {i}", stream=stream) for i in range(n))
        return list(await asyncio.gather(*tasks))


async def _lean_direct_burst(base: str, n: int, stream: bool, pids: list[int]) -> list[float]:
    prefix = urlsplit(base).path
    requests = [
        leanclient.post_request(
            base,
            f"{prefix}/chat/completions",
            {
                "model": "fake-model",
                "stream": stream,
                "messages": [{"role": "user", "content": f"burst {i}"}],
            },
        )
        for i in range(n)
    ]
    async with leanclient.connections([base], n, warm_path=prefix + WARM_PATH) as conns:
        await quiet(pids)
        replies = await leanclient.send_all(conns, requests)
    if bad := [r for r in replies if r.status != 200]:
        raise RuntimeError(f"{len(bad)} of {n} direct requests failed: {bad[0].status} {bad[0].error}")
    return [r.latency for r in replies]


def App(opts: argparse.Namespace, fake_url: str, tmp: Path) -> Deployment:
    """The deployment under test (benchmarks.deploy): SQLite or --database-url, Redis when given."""
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "PROMETHEUS_MULTIPROC_DIR")}
    env |= dict(kv.split("=", 1) for kv in APP_ENV.split())
    env |= {
        "DATABASE_URL": opts.database_url or f"sqlite:///{tmp / 'db.sqlite3'}",
        "OPENAI_BASE_URL": fake_url,
    }
    if opts.redis_url:
        env["REDIS_URL"] = opts.redis_url
    return Deployment(env, tmp, processes=opts.processes, label="coalesce", app_root=opts.app_dir)


def send_payload(content: str) -> dict[str, str]:
    # Each send with its own request_id, as the page and any retrying client send them.
    return {"content": content, "request_id": uuid.uuid4().hex}


async def send_one(client: aiohttp.ClientSession, url: str, thread_id: int, content: str) -> Sample:
    payload = send_payload(content)
    return sample(await loadgen.post_json(client, f"{url}/api/threads/{thread_id}/messages", payload))


def sample(reply: loadgen.Reply) -> Sample:
    if reply.status == 0:
        return Sample(reply.latency, reply.end, 0, "", {"exception": reply.error})
    role, timings = reply.body.get("coalesced", ""), reply.body.get("timings") or {}
    return Sample(reply.latency, reply.end, reply.status, role, timings)


async def new_thread(client: aiohttp.ClientSession, url: str) -> int:
    reply = await loadgen.post_json(client, f"{url}/api/threads", {"provider": "openai"})
    if reply.status != 201:
        raise RuntimeError(f"creating a thread failed: {reply.status} {reply.body or reply.error}")
    return int(reply.body["id"])


def app_client(token: str) -> aiohttp.ClientSession:
    return loadgen.session(token)


async def sequential_sends(urls: list[str], token: str, label: str, k: int) -> list[float]:
    """K sends one after another (distinct content, so never coalesced): warm-up, or the app's fixed
    per-request overhead when compared with the provider's direct latency."""
    async with app_client(token) as client:
        tid = await new_thread(client, urls[0])
        return [(await send_one(client, urls[i % len(urls)], tid, f"{label} {i}")).latency for i in range(k)]


def cpu_seconds(pids: list[int]) -> tuple[float, float]:
    """CPU time (user + system) used so far by this process and by the app processes."""
    t = os.times()
    return t.user + t.system, process_cpu_seconds(pids)


@contextlib.asynccontextmanager
async def burst_sender(
    kind: str, client: aiohttp.ClientSession, urls: list[str], token: str, tid: int, n: int, prewarm: bool
) -> AsyncIterator[Callable[[], Awaitable[list[Sample]]]]:
    """What fires the burst's N sends (over `urls` in turn) with client `kind`, made ready first: the lean
    client's connections are always opened first, and its requests built."""
    if kind == "lean":
        path = f"/api/threads/{tid}/messages"
        requests = [
            leanclient.post_request(urls[i % len(urls)], path, send_payload(CONTENT), token) for i in range(n)
        ]
        async with leanclient.connections(urls, n, warm_path=WARM_PATH) as conns:
            yield lambda: _lean_samples(conns, requests)
        return
    if prewarm:
        per_url = -(-n // len(urls))
        await asyncio.gather(*(loadgen.prewarm(client, f"{u}{WARM_PATH}", per_url) for u in urls))

    async def fire() -> list[Sample]:
        return list(
            await asyncio.gather(*(send_one(client, urls[i % len(urls)], tid, CONTENT) for i in range(n)))
        )

    yield fire


async def _lean_samples(conns: list[leanclient.Exchange], requests: list[bytes]) -> list[Sample]:
    return [sample(reply) for reply in await leanclient.send_all(conns, requests)]


async def burst(
    fake: Any,
    pids: list[int],
    urls: list[str],
    token: str,
    n: int,
    prov: float,
    prewarm: bool = False,
    client_kind: str = "aiohttp",
) -> dict[str, Any]:
    async with app_client(token) as client:
        tid = await new_thread(client, urls[0])
        async with burst_sender(client_kind, client, urls, token, tid, n, prewarm) as fire:
            quiet_s = await quiet(pids)  # the connections' opening requests finished, as before a real crowd
            fake.reset()
            cpu0, t0 = cpu_seconds(pids), time.monotonic()
            samples = await fire()
            cpu1, stats = cpu_seconds(pids), fake.stats()
        rows = await loadgen.count_messages(client, f"{urls[0]}/api/threads/{tid}")
    lat = [s.latency for s in samples]
    fol = [s.latency for s in samples if s.role == "follower"]
    out: dict[str, Any] = {
        "provider_calls": stats["calls"],
        "rows_written": rows or 0,
        "errors": sum(s.status != 200 for s in samples),
        "statuses": dict(Counter(s.status for s in samples)),
        "roles": dict(Counter(s.role or "error" for s in samples)),
    }
    for name, values in (("follower", fol), ("all", lat)):
        for q in (50, 95):
            out[f"p{q}_{name}_s"] = pct(values, q)
            out[f"p{q}_{name}_ratio"] = pct(values, q) / prov
    # Where the time goes, in s from the burst's first send (t0). Server timings are those of the Generation
    # a request waited on in its own process; total_ms runs from its start to that response being built,
    # so with one call the smallest total_ms is the generation itself, and the rest is the fan-out.
    calls = sorted(stats["call_times"])
    total = sorted(
        s.timings["total_ms"] / 1000 for s in samples if s.status == 200 and s.timings.get("total_ms")
    )
    gen_s = (total[0] if len(calls) == 1 else pct(total, 50)) if total else float("nan")
    after = [s.end - calls[0] - gen_s for s in samples] if len(calls) == 1 else []
    out["breakdown"] = {
        "quiet_wait_s": quiet_s,
        "first_call_s": calls[0] - t0 if calls else None,
        "last_call_s": calls[-1] - t0 if calls else None,
        "server_ttft_ms": pct([s.timings["ttft_ms"] for s in samples if s.timings.get("ttft_ms")], 50),
        "server_generation_s": gen_s,
        "after_gen_p50_s": pct(after, 50),
        "after_gen_p95_s": pct(after, 95),
        "last_response_s": max(s.end for s in samples) - t0,
        "cpu_bench_s": cpu1[0] - cpu0[0],
        "cpu_app_s": cpu1[1] - cpu0[1],
        "cpu_app_per_request_ms": (cpu1[1] - cpu0[1]) * 1000 / n,
    }
    return out


def fmt(value: Any, spec: str = ".3f") -> str:
    if isinstance(value, dict):
        return " ".join(f"{k[0]}={v}" for k, v in sorted(value.items()))
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    return format(value, spec) if isinstance(value, float) else str(value)


ROWS = [
    ("provider calls", "provider_calls"),
    ("rows written", "rows_written"),
    ("errors (non-200)", "errors"),
    ("roles (leader/follower)", "roles"),
    ("p50 follower (s)", "p50_follower_s"),
    ("p95 follower (s)", "p95_follower_s"),
    ("p50 follower / provider", "p50_follower_ratio"),
    ("p95 follower / provider", "p95_follower_ratio"),
    ("p50 all (s)", "p50_all_s"),
    ("p95 all (s)", "p95_all_s"),
    ("p50 all / provider", "p50_all_ratio"),
    ("p95 all / provider", "p95_all_ratio"),
    ("-- breakdown, s after t0", ""),
    ("(waited for quiet before t0)", "quiet_wait_s"),
    ("first provider call at", "first_call_s"),
    ("last provider call at", "last_call_s"),
    ("server ttft p50 (ms)", "server_ttft_ms"),
    ("generation (s, server; p50)", "server_generation_s"),
    ("answered after gen. p50", "after_gen_p50_s"),
    ("answered after gen. p95", "after_gen_p95_s"),
    ("last response at", "last_response_s"),
    ("CPU bench process (s)", "cpu_bench_s"),
    ("CPU app process(es) (s)", "cpu_app_s"),
    ("  per request (ms)", "cpu_app_per_request_ms"),
]


def floor_ratio(direct: dict[str, Any], n: int) -> float:
    """The client's own floor at burst `n`: N whole answers straight to the provider, p95 / its own time."""
    return float(direct[f"whole{n}_p95_s"] / direct["single_median_s"])


def report(n: int, direct: dict[str, Any], on: dict[str, Any], off: dict[str, Any] | None) -> dict[str, bool]:
    prov = direct["single_median_s"]
    print(f"\n== burst of N={n} identical sends ==")
    print(
        f"provider direct: single stream median {prov:.3f} s (the denominator); {n} at once, straight to it:"
    )
    for kind in ("streams", "whole"):
        p50, p95 = direct[f"{kind}{n}_p50_s"], direct[f"{kind}{n}_p95_s"]
        print(f"  {n} {kind:7} p50 {p50:.3f} s ({p50 / prov:.3f}x), p95 {p95:.3f} s ({p95 / prov:.3f}x)")
    print(f"{'':28}{'flag on':>16}{'flag off':>16}")
    for label, key in ROWS:
        cells = [
            fmt(res.get(key, res["breakdown"].get(key))) if key and res is not None else ""
            for res in (on, off)
        ]
        print(f"{label:28}{cells[0]:>16}{cells[1]:>16}")
    met = {
        "calls == 1": on["provider_calls"] == 1,
        "errors == 0": on["errors"] == 0,
        "p95 ratio <= 1.05": on["p95_follower_ratio"] <= 1.05,
    }
    print("targets (flag on): " + ", ".join(f"{k}: {'MET' if v else 'MISSED'}" for k, v in met.items()))
    floor = floor_ratio(direct, n)
    client = f" ({direct['client']} client)" if "client" in direct else ""
    print(f"  (the client's own floor{client}: {n} whole answers straight to the provider, p95 {floor:.3f}x)")
    return met


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", default="200", help="burst size(s), comma-separated (e.g. 50,200)")
    p.add_argument("--ttft-ms", type=float, default=TTFT_MS)
    p.add_argument("--tps", type=float, default=TPS)
    p.add_argument("--tokens", type=int, default=TOKENS)
    p.add_argument("--k", type=int, default=5, help="sequential single requests (direct and through the app)")
    p.add_argument("--processes", type=int, default=1)
    p.add_argument("--database-url", default="")
    p.add_argument("--redis-url", default="")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "coalesce.json"))
    p.add_argument(
        "--prewarm",
        action="store_true",
        help="open each burst's connections first and keep them alive, as a crowd of clients has theirs"
        " (the direct bursts too): the N requests then arrive at once instead of one connect at a time",
    )
    p.add_argument(
        "--client",
        choices=CLIENTS,
        default="aiohttp",
        help="the bursts' client (the direct ones too): aiohttp (benchmarks/loadgen.py), or lean"
        " (benchmarks/leanclient.py: requests built before, answers parsed in C; its connections always"
        " opened first), whose own cost leaves more of the 2 cores to the server",
    )
    p.add_argument("--fake-in-process", action="store_true", help="run the fake provider in a thread here")
    p.add_argument(
        "--app-dir",
        type=Path,
        default=ROOT,
        help="the checkout whose app runs (default this one; benchmarks.ab compares two)",
    )
    p.add_argument(
        "--no-contrast",
        action="store_true",
        help="skip the coalescing-off burst (half the run: for comparing two codes, benchmarks.ab)",
    )
    opts = p.parse_args(argv)
    if opts.processes > 1 and not (opts.redis_url and opts.database_url.startswith("postgres")):
        p.error("--processes > 1 needs --redis-url and a postgres --database-url")
    return opts


def main(argv: list[str] | None = None) -> None:
    opts = parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from providers.fake.server import ThreadedFakeServer

    sizes = [int(x) for x in opts.n.split(",")]
    machine = {"nproc": os.cpu_count(), "loadavg_start": os.getloadavg(), "python": platform.python_version()}
    params = {k: v for k, v in vars(opts).items() if k != "out"} | {"content": CONTENT}
    print(f"coalesce bench: {params}\nmachine: {machine}")
    direct: dict[str, Any] = {}
    runs: dict[str, dict[str, Any]] = {"on": {}, "off": {}}
    fake_cls: Any = ThreadedFakeServer if opts.fake_in_process else SubprocessFakeServer
    with fake_cls(ttft_ms=opts.ttft_ms, tps=opts.tps, tokens=opts.tokens) as fake:
        with tempfile.TemporaryDirectory(prefix="coalesce-bench-") as tmpdir:
            app = App(opts, fake.openai_base_url, Path(tmpdir))
            try:
                token = app.prepare()
                single = asyncio.run(direct_single(fake.openai_base_url, opts.k))
                prov = statistics.median(single)
                direct = {"single_s": single, "single_median_s": prov, "client": opts.client}
                fake_pids = (
                    [fake.pid] if hasattr(fake, "pid") else []
                )  # a thread of this process: not waited for
                for n in sizes:
                    for kind in ("streams", "whole"):
                        lat = asyncio.run(
                            direct_burst(
                                fake.openai_base_url,
                                n,
                                kind == "streams",
                                opts.prewarm,
                                opts.client,
                                fake_pids,
                            )
                        )
                        direct[f"{kind}{n}_p50_s"], direct[f"{kind}{n}_p95_s"] = pct(lat, 50), pct(lat, 95)
                for mode in MODES[:1] if opts.no_contrast else MODES:
                    urls = app.start(COALESCE_ENABLED="true" if mode == "on" else "false")
                    asyncio.run(sequential_sends(urls, token, "warm-up", len(urls)))
                    for n in sizes:
                        pids = [proc.pid for proc, _ in app.procs]
                        runs[mode][str(n)] = asyncio.run(
                            burst(fake, pids, urls, token, n, prov, opts.prewarm, opts.client)
                        )
                    runs[mode]["single_s"] = asyncio.run(sequential_sends(urls, token, "single", opts.k))
                    app.stop()
            finally:
                app.stop()
    targets = {n: report(n, direct, runs["on"][str(n)], runs["off"].get(str(n))) for n in sizes}
    print(f"\n== N=1: {opts.k} sequential sends through the app vs the provider directly ({prov:.3f} s) ==")
    for mode in (m for m in MODES if runs[m]):
        med = statistics.median(runs[mode]["single_s"])
        print(
            f"flag {mode:3}: median {med:.3f} s, fixed app overhead {med - prov:+.3f} s ({med / prov:.3f}x)"
        )
    machine["loadavg_end"] = os.getloadavg()
    out = Path(opts.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {"machine": machine, "params": params, "direct": direct, "runs": runs, "targets": targets}
    out.write_text(json.dumps(result, indent=2, default=str))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
