"""A burst of sends against any running deployment, with the provider and the load generator measured in
the same run (`python -m benchmarks.burst`).

    python -m benchmarks.burst --url http://127.0.0.1:8000 --token TOKEN --n 200 \\
        --provider-url http://127.0.0.1:9100/v1 --json-out bench-results/burst.json

Three measurements, one client (benchmarks.loadgen: aiohttp, unlimited connector), same N and concurrency:
1. the provider, straight: k sequential requests (median: its own latency, the ratios' denominator), and
   the N requests at the same concurrency (what the provider does under that load, printed beside it);
2. the generator's floor: a trivial server in another process answers after that same latency; what the
   client adds on top is the error bar of every latency figure below;
3. the burst: N sends (HTTP JSON, SSE or WebSocket) on one thread or many, identical or distinct.
Before each of the three, the connections the sends will use are opened and kept alive (loadgen.prewarm;
`--no-prewarm` turns it off), as a crowd of clients would have theirs open: one process opening a thousand
connections at once would otherwise measure its own handshakes.

Provider calls come from the fake provider's /_fake/stats when the provider is the fake, else from
/api/metrics deltas (the token must be staff's, or pass --metrics-token); DB rows from GET /api/threads/{id}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks import loadgen
from benchmarks._common import machine, pct, quiet

CONTENT = "Summarise the plot of Hamlet in three sentences."
MODES = ("http", "sse", "ws")


@dataclass
class BurstConfig:
    urls: list[str]  # sends are spread round-robin over these (the processes of one deployment)
    token: str
    n: int = 50
    concurrency: int = 0  # 0: all at once
    threads: int = 1  # sends spread round-robin over this many new threads
    mode: str = "http"
    identical: bool = True
    provider_url: str = ""  # OpenAI-compatible base URL (…/v1); "" skips the direct measurement
    provider_model: str = "fake-model"
    provider_key: str = ""
    thread_provider: str = ""  # "provider" of the new threads; "" = the deployment's default
    k: int = 5  # sequential direct requests
    measure_provider: bool = True  # False: provider_url only for the fake's call counter
    prewarm: bool = True  # open the burst's connections before it starts (loadgen.prewarm)
    floor: bool = True
    metrics_token: str = ""
    content: str = CONTENT
    label: str = ""
    baseline_s: list[float] = field(default_factory=list)  # sequential direct latencies measured already
    # The app's processes, when this machine runs them: the burst waits until they are quiet after the
    # prewarm (benchmarks._common.quiet), as a crowd's connections were not all opened the instant before.
    quiet_pids: list[int] = field(default_factory=list)


# --- the three measurements ----------------------------------------------------------------------------


async def _bounded(concurrency: int, n: int, make: Any) -> list[loadgen.Reply]:
    """`make(i)` for i < n, at most `concurrency` at a time (0: all at once)."""
    if concurrency <= 0 or concurrency >= n:
        return list(await asyncio.gather(*(make(i) for i in range(n))))
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> loadgen.Reply:
        async with sem:
            return await make(i)

    return list(await asyncio.gather(*(one(i) for i in range(n))))


def _in_flight(cfg: BurstConfig, targets: int = 1) -> int:
    """Connections one target needs at most: sends in flight at once, spread over `targets`."""
    at_once = cfg.n if cfg.concurrency <= 0 else min(cfg.n, cfg.concurrency)
    return -(-at_once // targets)


async def provider_sequential(cfg: BurstConfig) -> list[float]:
    """k requests straight to the provider, one after another (after a warm-up): its own latency."""
    kw: dict[str, Any] = {"model": cfg.provider_model, "api_key": cfg.provider_key}
    async with loadgen.session() as client:
        await loadgen.stream_openai(client, cfg.provider_url, "warm-up", max_tokens=1, **kw)  # the connection
        return [
            await loadgen.stream_openai(client, cfg.provider_url, f"direct {i}", **kw) for i in range(cfg.k)
        ]


async def provider_direct(cfg: BurstConfig) -> dict[str, Any]:
    """The same request straight to the provider: k sequential (its own latency; `baseline_s` when
    measured already), and N at the burst's concurrency."""
    seq = list(cfg.baseline_s) or await provider_sequential(cfg)
    kw: dict[str, Any] = {"model": cfg.provider_model, "api_key": cfg.provider_key}
    async with loadgen.session() as client:

        async def one(i: int) -> loadgen.Reply:
            t = time.monotonic()
            try:
                took = await loadgen.stream_openai(client, cfg.provider_url, f"{cfg.content} {i}", **kw)
                return loadgen.Reply(took, time.monotonic(), 200)
            except (aiohttp.ClientError, TimeoutError) as exc:
                return loadgen.Reply(time.monotonic() - t, time.monotonic(), 0, error=type(exc).__name__)

        if cfg.prewarm:
            await loadgen.prewarm(
                client, cfg.provider_url.rstrip("/").removesuffix("/v1") + "/", _in_flight(cfg)
            )
        burst = await _bounded(cfg.concurrency, cfg.n, one)
    lat = [r.latency for r in burst if r.status == 200]
    return {
        "sequential_s": seq,
        "sequential_median_s": statistics.median(seq),
        "concurrent_p50_s": pct(lat, 50),
        "concurrent_p95_s": pct(lat, 95),
        "concurrent_errors": sum(r.status != 200 for r in burst),
    }


async def generator_floor(delay_s: float, cfg: BurstConfig) -> dict[str, Any]:
    """N POSTs at the burst's concurrency, through this client, to a server answering after `delay_s`."""
    with loadgen.fixed_delay_server(delay_s) as url:
        async with loadgen.session() as client:
            await loadgen.prewarm(client, url, _in_flight(cfg) if cfg.prewarm else 1)
            replies = await _bounded(
                cfg.concurrency, cfg.n, lambda i: loadgen.post_json(client, url, {"i": i})
            )
    lat = [r.latency for r in replies if r.status == 200]
    return {
        "delay_s": delay_s,
        "p50_s": pct(lat, 50),
        "p95_s": pct(lat, 95),
        "p50_over_ms": (pct(lat, 50) - delay_s) * 1000,
        "p95_over_ms": (pct(lat, 95) - delay_s) * 1000,
        "p95_ratio": pct(lat, 95) / delay_s if delay_s else float("nan"),
        "errors": sum(r.status != 200 for r in replies),
    }


async def _get_json(client: aiohttp.ClientSession, url: str, token: str = "") -> dict[str, Any] | None:
    headers = {"Authorization": f"Bearer {token}"} if token else None
    try:
        async with client.get(url, headers=headers) as resp:
            return dict(await resp.json()) if resp.status == 200 else None
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None


async def _provider_calls(client: aiohttp.ClientSession, cfg: BurstConfig) -> dict[str, int | None]:
    """Provider calls so far, by source: the fake's own counter (when the provider is the fake) and the
    deployment's /api/metrics (when this token may read it)."""
    fake = None
    if cfg.provider_url:  # a session of its own: the app's token is not the provider's business
        root = cfg.provider_url.rstrip("/").removesuffix("/v1")
        async with loadgen.session() as bare:
            fake = await _get_json(bare, f"{root}/_fake/stats")
    metrics = await _get_json(client, f"{cfg.urls[0]}/api/metrics", cfg.metrics_token or cfg.token)
    return {
        "fake": int(fake["calls"]) if fake else None,
        "metrics": int(metrics["provider_calls"]) if metrics else None,
    }


async def app_burst(cfg: BurstConfig) -> dict[str, Any]:
    """The N sends, then what they left behind: provider calls and rows."""
    async with loadgen.session(cfg.token) as client:
        body = {"provider": cfg.thread_provider} if cfg.thread_provider else {}
        tids = []
        for _ in range(cfg.threads):
            reply = await loadgen.post_json(client, f"{cfg.urls[0]}/api/threads", body)
            if reply.status != 201:
                raise RuntimeError(f"creating a thread failed: {reply.status} {reply.body or reply.error}")
            tids.append(int(reply.body["id"]))
        if cfg.prewarm:  # an unknown path: a 404 from the URL router, no database, no provider
            per_url = _in_flight(cfg, len(cfg.urls))
            await asyncio.gather(*(loadgen.prewarm(client, f"{u}/_burst/prewarm", per_url) for u in cfg.urls))
        quiet_s = await quiet(cfg.quiet_pids)
        calls0 = await _provider_calls(client, cfg)
        tag = uuid.uuid4().hex[:8]

        def send(i: int) -> Any:
            url, tid = cfg.urls[i % len(cfg.urls)], tids[i % len(tids)]
            content = cfg.content if cfg.identical else f"{cfg.content} ({tag} #{i})"
            rid = f"burst-{tag}-{i}"
            if cfg.mode == "ws":
                return loadgen.send_ws(client, url, tid, content, rid)
            payload = {"content": content, "request_id": rid}
            post = loadgen.send_sse if cfg.mode == "sse" else loadgen.post_json
            return post(client, f"{url}/api/threads/{tid}/messages", payload)

        t0 = time.monotonic()
        replies = await _bounded(cfg.concurrency, cfg.n, send)
        wall = time.monotonic() - t0
        calls1 = await _provider_calls(client, cfg)
        rows = 0
        for tid in tids:
            rows += await loadgen.count_messages(client, f"{cfg.urls[0]}/api/threads/{tid}", cfg.token) or 0
    return _burst_figures(cfg, replies, wall, calls0, calls1, rows) | {"quiet_wait_s": quiet_s}


def _burst_figures(
    cfg: BurstConfig,
    replies: list[loadgen.Reply],
    wall: float,
    calls0: dict[str, int | None],
    calls1: dict[str, int | None],
    rows: int,
) -> dict[str, Any]:
    ok = [r for r in replies if r.status == 200]
    lat = [r.latency for r in ok]
    followers = [r.latency for r in ok if r.body.get("coalesced") == "follower"]
    deltas: dict[str, int | None] = {}
    for key, before in calls0.items():
        after = calls1[key]
        deltas[key] = after - before if after is not None and before is not None else None
    source = "fake" if deltas["fake"] is not None else "metrics"
    waits = [
        r.body["timings"]["queue_wait_ms"] for r in ok if (r.body.get("timings") or {}).get("queue_wait_ms")
    ]
    return {
        "n": cfg.n,
        "ok": len(ok),
        "errors": cfg.n - len(ok),
        "success_rate": len(ok) / cfg.n if cfg.n else float("nan"),
        "statuses": dict(Counter(str(r.status) for r in replies)),
        "error_kinds": dict(Counter(r.error for r in replies if r.error and r.status != 200)),
        "roles": dict(Counter(r.body.get("coalesced", "-") for r in ok)),
        "p50_s": pct(lat, 50),
        "p95_s": pct(lat, 95),
        "p99_s": pct(lat, 99),
        "max_s": max(lat, default=float("nan")),
        "p50_follower_s": pct(followers, 50),
        "p95_follower_s": pct(followers, 95),
        "ttft_p50_s": pct([r.ttft for r in ok if r.ttft is not None], 50),
        "ttft_p95_s": pct([r.ttft for r in ok if r.ttft is not None], 95),
        "server_queue_wait_p95_ms": pct(waits, 95) if waits else 0.0,
        "wall_s": wall,
        "provider_calls": deltas[source],
        "provider_calls_source": source if deltas[source] is not None else None,
        "provider_calls_by_source": deltas,
        "rows": rows,
        "expected_rows": 2 * cfg.threads if cfg.identical else 2 * cfg.n,
    }


async def run_burst(cfg: BurstConfig) -> dict[str, Any]:
    """Provider, floor, then the burst; one result dict (what --json-out writes)."""
    if cfg.mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}")
    started = time.monotonic()
    out: dict[str, Any] = {
        "label": cfg.label,
        "config": {
            k: v for k, v in asdict(cfg).items() if k not in ("token", "metrics_token", "provider_key")
        },
        "machine": machine(),
    }
    if cfg.provider_url and cfg.measure_provider:
        out["provider"] = await provider_direct(cfg)
    prov = out.get("provider", {}).get("sequential_median_s")
    if prov is None and cfg.baseline_s:
        prov = statistics.median(cfg.baseline_s)
    if cfg.floor:
        out["floor"] = await generator_floor(prov or 1.0, cfg)
    out["burst"] = burst = await app_burst(cfg)
    if prov:
        for key in ("p50_s", "p95_s", "p50_follower_s", "p95_follower_s"):
            burst[key.replace("_s", "_ratio")] = burst[key] / prov
    out["machine"]["loadavg_end"] = os.getloadavg()
    out["elapsed_s"] = time.monotonic() - started
    return out


# --- report ---------------------------------------------------------------------------------------------


def _s(value: Any, unit: str = "s") -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    if unit == "ms":
        return f"{value * 1000:.1f} ms"
    if unit == "x":
        return f"{value:.3f}x"
    return f"{value:.3f} s" if isinstance(value, float) else str(value)


def report(res: dict[str, Any]) -> str:
    """The results table, as text."""
    cfg, b = res["config"], res["burst"]
    conc = cfg["concurrency"] or "all"
    kind = "identical" if cfg["identical"] else "distinct"
    lines = [
        f"burst {res['label'] or ''}: N={cfg['n']} {kind} sends, concurrency {conc}, {cfg['threads']} thread(s), "
        f"{cfg['mode']}, over {len(cfg['urls'])} URL(s)",
    ]
    if "provider" in res:
        p = res["provider"]
        lines.append(
            f"  provider direct   sequential median {_s(p['sequential_median_s'])} (k={len(p['sequential_s'])}); "
            f"at concurrency {conc}: p50 {_s(p['concurrent_p50_s'])}, p95 {_s(p['concurrent_p95_s'])}"
        )
    if "floor" in res:
        f = res["floor"]
        lines.append(
            f"  generator floor   fixed {_s(f['delay_s'])}: p50 +{f['p50_over_ms']:.1f} ms, "
            f"p95 +{f['p95_over_ms']:.1f} ms ({f['p95_ratio']:.3f}x)"
        )
    rows = [
        ("success", f"{b['ok']}/{b['n']} ({b['success_rate'] * 100:.1f} %)  statuses {b['statuses']}"),
        ("roles", str(b["roles"])),
        ("provider calls", f"{b['provider_calls']} (from {b['provider_calls_source']})"),
        ("DB rows", f"{b['rows']} (expected {b['expected_rows']})"),
        ("latency p50 / p95 / p99", f"{_s(b['p50_s'])} / {_s(b['p95_s'])} / {_s(b['p99_s'])}"),
        ("followers p50 / p95", f"{_s(b['p50_follower_s'])} / {_s(b['p95_follower_s'])}"),
    ]
    if "p95_ratio" in b:
        rows.append(
            (
                "p95 over provider",
                f"all {_s(b['p95_ratio'], 'x')}, followers {_s(b['p95_follower_ratio'], 'x')}",
            )
        )
    if b["ttft_p50_s"] == b["ttft_p50_s"]:
        rows.append(("TTFT p50 / p95", f"{_s(b['ttft_p50_s'], 'ms')} / {_s(b['ttft_p95_s'], 'ms')}"))
    rows.append(("wall", _s(b["wall_s"])))
    lines += [f"  {name:24}{value}" for name, value in rows]
    return "\n".join(lines)


# --- CLI ------------------------------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The burst's options (of `python -m benchmarks.burst`)."""
    p.add_argument(
        "--url", required=True, help="deployment base URL(s), comma-separated: sends spread over them"
    )
    p.add_argument("--token", required=True, help="API token (manage.py create_api_token USER)")
    p.add_argument("--n", type=int, default=50, help="number of sends")
    p.add_argument("--concurrency", type=int, default=0, help="sends in flight at once (0: all at once)")
    p.add_argument("--threads", type=int, default=1, help="1: one thread; more: sends spread over that many")
    p.add_argument("--mode", choices=MODES, default="http", help="HTTP JSON, HTTP SSE or WebSocket sends")
    same = p.add_mutually_exclusive_group()
    same.add_argument("--identical", dest="identical", action="store_true", default=True)
    same.add_argument("--distinct", dest="identical", action="store_false")
    p.add_argument("--provider-url", default="", help="OpenAI-compatible base URL measured directly (…/v1)")
    p.add_argument("--provider-model", default="fake-model")
    p.add_argument("--provider-key", default=os.environ.get("OPENAI_API_KEY", ""))
    p.add_argument("--thread-provider", default="", help="'provider' of the new threads (default: the app's)")
    p.add_argument("--k", type=int, default=5, help="sequential direct provider requests")
    p.add_argument("--no-floor", dest="floor", action="store_false", help="skip the generator's floor")
    p.add_argument(
        "--no-prewarm",
        dest="prewarm",
        action="store_false",
        help="open each send's connection during the burst (default: opened before it, kept alive)",
    )
    p.add_argument("--metrics-token", default="", help="METRICS_TOKEN, to read /api/metrics deltas")
    p.add_argument("--content", default=CONTENT)
    p.add_argument("--json-out", default="", help="write the results here as JSON")


def config_from(opts: dict[str, Any]) -> BurstConfig:
    names = set(BurstConfig.__dataclass_fields__)
    cfg = BurstConfig(**{k: v for k, v in opts.items() if k in names and k not in ("urls",)}, urls=[])
    cfg.urls = [u.strip().rstrip("/") for u in str(opts["url"]).split(",") if u.strip()]
    return cfg


def run_and_report(opts: dict[str, Any]) -> dict[str, Any]:
    """Run, print the table, write --json-out; the result."""
    res = asyncio.run(run_burst(config_from(opts)))
    print(report(res), flush=True)
    if opts.get("json_out"):
        out = Path(opts["json_out"])
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(res, indent=2, default=str))
        print(f"wrote {out}")
    return res


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    add_arguments(p)
    options = vars(p.parse_args(argv))
    try:
        run_and_report(options)
    except (RuntimeError, ValueError) as exc:
        p.exit(2, f"burst: {exc}\n")


if __name__ == "__main__":
    main()
