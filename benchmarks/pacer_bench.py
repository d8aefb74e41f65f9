"""Pacer benchmark: queue wait and admitted rate at 0.5x, 1x and 3x the configured limit.

    .venv/bin/python benchmarks/pacer_bench.py                      # in-process backend only
    REDIS_URL=redis://127.0.0.1:6379/0 .venv/bin/python benchmarks/pacer_bench.py
                                                                    # + Redis, with 1 and 2 OS processes

Each scenario runs in real worker processes (multiprocessing): they offer Poisson arrivals at the
scenario's rate (split evenly between the processes) for `--duration` seconds against one provider
limited to `--rps` / `--burst`, and record every request's queue wait (the value `acquire` returns)
and admission time. Prints a table, checks the targets and writes benchmarks/results/pacer.json.

Targets: at 0.5x the queue-wait p95 is <= 5 ms; at 3x the admitted rate is within 5% of the limit and
no request waits past the max wait (the excess is refused at once and counted as rejected).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import random
import statistics
import sys
import time
import uuid
import zlib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LOADS = (0.5, 1.0, 3.0)
# Timer slack allowed on top of the max wait when counting "waited past it": the reservation never
# grants more than the max wait; asyncio.sleep may overshoot by about a millisecond on a busy host.
SLACK_S = 0.010
# The admitted rate is measured from this long after the first arrival (the first burst and the
# queue's build-up excluded) to the end of the arrivals.
WARMUP_S = 1.0


def _setup_django() -> None:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatapp.settings")
    os.environ.setdefault("DEBUG", "true")  # in-process, development settings (DEBUG is off by default)
    import django

    django.setup()


async def _offer(args: dict[str, Any], barrier: Any) -> list[tuple[float, float | None, float]]:
    """Offer this process's share of the load; (arrived, admitted or None if refused, wait ms) each."""
    from core.gcra import Limit
    from core.gcra_store import RedisBackend
    from providers.pacer import Pacer, PacerRejected

    redis = RedisBackend(args["redis_url"], prefix=args["prefix"]) if args["redis_url"] else None
    pacer = Pacer(
        {"bench": Limit.per_second(args["rps"], args["burst"])},
        max_wait=args["max_wait"],
        redis=redis,
        processes=args["procs"],
        enabled=lambda: True,
    )
    # Warm up like a running server: Redis connections open, scripts loaded (on another bucket).
    await asyncio.gather(*(pacer.acquire("warm-up") for _ in range(4)))
    barrier.wait()  # every process starts offering at the same moment (nothing else runs meanwhile)
    rng = random.Random(args["seed"])
    offsets, t = [], rng.expovariate(args["offered"])
    while t < args["duration"]:
        offsets.append(t)
        t += rng.expovariate(args["offered"])
    records: list[tuple[float, float | None, float]] = []

    async def one() -> None:
        arrived = time.time()
        try:
            waited_ms = await pacer.acquire("bench")
        except PacerRejected:
            records.append((arrived, None, 0.0))
        else:
            records.append((arrived, time.time(), waited_ms))

    loop = asyncio.get_running_loop()
    start = loop.time()
    tasks = []
    for offset in offsets:
        await asyncio.sleep(max(0.0, start + offset - loop.time()))
        tasks.append(asyncio.create_task(one()))
    await asyncio.gather(*tasks)
    await pacer.aclose()
    return records


def _worker(args: dict[str, Any], barrier: Any, out: Any) -> None:
    _setup_django()
    out.put(asyncio.run(_offer(args, barrier)))


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def run_scenario(backend: str, procs: int, load: float, opts: argparse.Namespace) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(procs), ctx.Queue()
    prefix = f"bench-pacer-{uuid.uuid4().hex[:8]}"
    workers = []
    for i in range(procs):
        args = {
            "redis_url": opts.redis_url if backend == "redis" else "",
            "prefix": prefix,
            "rps": opts.rps,
            "burst": opts.burst,
            "max_wait": opts.max_wait,
            "procs": procs,
            "offered": opts.rps * load / procs,
            "duration": opts.duration,
            "seed": zlib.crc32(f"{backend}/{procs}/{load}/{i}".encode()),
        }
        worker = ctx.Process(target=_worker, args=(args, barrier, out))
        worker.start()
        workers.append(worker)
    records = [r for _ in workers for r in out.get(timeout=120)]
    for worker in workers:
        worker.join()
    if backend == "redis":
        _delete_keys(opts.redis_url, prefix)
    return _summarise(backend, procs, load, records, opts)


def _summarise(
    backend: str,
    procs: int,
    load: float,
    records: list[tuple[float, float | None, float]],
    opts: argparse.Namespace,
) -> dict[str, Any]:
    first = min(arrived for arrived, _, _ in records)
    admitted = [(arrived, at, w) for arrived, at, w in records if at is not None]
    waits = [w for _, _, w in admitted]
    steady = [at for _, at, _ in admitted if first + WARMUP_S <= at <= first + opts.duration]
    admitted_rps = len(steady) / (opts.duration - WARMUP_S)
    return {
        "backend": backend,
        "processes": procs,
        "load": load,
        "offered_rps": opts.rps * load,
        "requests": len(records),
        "admitted": len(admitted),
        "rejected": len(records) - len(admitted),
        "wait_p50_ms": round(_percentile(waits, 50), 2),
        "wait_p95_ms": round(_percentile(waits, 95), 2),
        "wait_p99_ms": round(_percentile(waits, 99), 2),
        "wait_max_ms": round(max(waits, default=0.0), 2),
        "wait_mean_ms": round(statistics.fmean(waits), 2) if waits else 0.0,
        "admitted_rps": round(admitted_rps, 2),
        "admitted_vs_limit": round(admitted_rps / opts.rps, 3),
        "waited_past_max": sum((at - arrived) > opts.max_wait + SLACK_S for arrived, at, _ in admitted),
    }


def _delete_keys(url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(match=f"{prefix}:*"))
    if keys:
        client.delete(*keys)
    client.close()


def _targets(results: list[dict[str, Any]]) -> list[tuple[str, bool]]:
    checks = []
    for r in results:
        name = f"{r['backend']} x{r['processes']} at {r['load']:g}x"
        if r["load"] == 0.5:
            checks.append((f"{name}: wait p95 {r['wait_p95_ms']} ms <= 5 ms", r["wait_p95_ms"] <= 5.0))
        if r["load"] == 3.0:
            ok = abs(r["admitted_vs_limit"] - 1) <= 0.05
            checks.append((f"{name}: admitted {r['admitted_vs_limit']:.3f} x limit (within 5%)", ok))
            checks.append((f"{name}: {r['waited_past_max']} waited past max wait", r["waited_past_max"] == 0))
    return checks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rps", type=float, default=50.0, help="the provider's limit (requests/s)")
    parser.add_argument("--burst", type=int, default=5)
    parser.add_argument("--max-wait", type=float, default=1.0, help="PACER_MAX_WAIT_S for the run")
    parser.add_argument("--duration", type=float, default=4.0, help="seconds of arrivals per scenario")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", ""))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "pacer.json")
    opts = parser.parse_args()

    scenarios = [("in-process", 1)] + ([("redis", 1), ("redis", 2)] if opts.redis_url else [])
    started = time.monotonic()
    results = [run_scenario(b, p, load, opts) for b, p in scenarios for load in LOADS]
    elapsed = time.monotonic() - started

    cols = ["backend", "processes", "load", "offered_rps", "requests", "admitted", "rejected"]
    cols += ["wait_p50_ms", "wait_p95_ms", "wait_p99_ms", "wait_max_ms", "admitted_rps", "admitted_vs_limit"]
    cols += ["waited_past_max"]
    widths = [max(len(c), *(len(str(r[c])) for r in results)) for c in cols]
    print(
        f"limit {opts.rps:g} rps, burst {opts.burst}, max wait {opts.max_wait:g} s, {opts.duration:g} s each"
    )
    print("  ".join(c.rjust(w) for c, w in zip(cols, widths, strict=True)))
    for r in results:
        print("  ".join(str(r[c]).rjust(w) for c, w in zip(cols, widths, strict=True)))
    checks = _targets(results)
    for text, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
    print(f"total {elapsed:.1f} s")

    opts.out.parent.mkdir(parents=True, exist_ok=True)
    config = {k: getattr(opts, k) for k in ("rps", "burst", "max_wait", "duration")}
    config |= {
        "redis": bool(opts.redis_url),
        "warmup_s": WARMUP_S,
        "slack_s": SLACK_S,
        "cpus": os.cpu_count(),
    }
    payload = {
        "config": config,
        "results": results,
        "targets": [{"check": text, "ok": ok} for text, ok in checks],
        "elapsed_s": round(elapsed, 1),
    }
    opts.out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {opts.out.relative_to(ROOT)}")
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
