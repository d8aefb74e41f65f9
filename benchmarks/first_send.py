"""The first send after a process starts, against the sends after it: what a restart costs the first
person to send to a fresh process (a rolling restart makes one per process). With --quiet S: the first
send after S seconds of quiet in a running process instead, what a person's next message usually meets
(the per-process caches of the send path live a few seconds).

    .venv/bin/python -m benchmarks.first_send [--starts 6] [--quiet 6] [--app-dir ../other] \\
        [--database-url postgres://…/bench_coalesce --redis-url redis://127.0.0.1:6379/3]

Each start: one fresh daphne process (benchmarks.deploy, as coalesce_bench starts it) and the fake
provider (a 0.5 s reply); four sends one after another to one new thread, each with new content (never
coalesced). With --quiet, one process, and before each round of four sends S seconds of quiet.
Prints each round's latencies and the first send's extra time over the median of the other three;
writes JSON (--out). A report, not a test: exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import coalesce_bench

ROOT = coalesce_bench.ROOT
SENDS = 4


def first_extra(latencies: list[float]) -> float:
    """The first send's time over the median of the ones after it."""
    return latencies[0] - statistics.median(latencies[1:])


def summary(extras: list[float]) -> dict[str, float]:
    return {
        "median_ms": statistics.median(extras) * 1000,
        "min_ms": min(extras) * 1000,
        "max_ms": max(extras) * 1000,
    }


async def quiet_rounds(
    urls: list[str], token: str, rounds: int, quiet_s: float, show: Callable[[int, list[float]], None]
) -> None:
    """In one process, on one thread: `rounds` times, `quiet_s` of quiet, then SENDS sends in a row."""
    async with coalesce_bench.app_client(token) as client:
        tid = await coalesce_bench.new_thread(client, urls[0])
        await coalesce_bench.send_one(client, urls[0], tid, "warm-up")
        for i in range(rounds):
            await asyncio.sleep(quiet_s)  # the spell measured, not a wait for a condition
            sent = [
                await coalesce_bench.send_one(client, urls[0], tid, f"round {i} send {k}")
                for k in range(SENDS)
            ]
            show(i, [s.latency for s in sent])


def _sends_after_start(show: Callable[[int, list[float]], None], i: int, urls: list[str], token: str) -> None:
    show(i, asyncio.run(coalesce_bench.sequential_sends(urls, token, f"start {i}", SENDS)))


def in_fresh_app(app_opts: argparse.Namespace, fake_url: str, run: Callable[[list[str], str], None]) -> None:
    """`run(urls, token)` against a fresh deployment of the app (one daphne process), stopped after."""
    with tempfile.TemporaryDirectory(prefix="first-send-") as tmp:
        app = coalesce_bench.App(app_opts, fake_url, Path(tmp))
        try:
            token = app.prepare()
            run(app.start(), token)
        finally:
            app.stop()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--starts", type=int, default=6, help="fresh process starts, or rounds (default 6)")
    p.add_argument("--quiet", type=float, default=0.0, help="rounds after S s of quiet in one process")
    p.add_argument("--app-dir", type=Path, default=ROOT, help="the checkout whose app runs")
    p.add_argument("--database-url", default="", help="default: SQLite in a temporary directory")
    p.add_argument("--redis-url", default="")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "first_send.json"))
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    opts = parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from providers.fake.server import ThreadedFakeServer

    app_opts = coalesce_bench.parse_args(
        ["--processes", "1", "--app-dir", str(opts.app_dir), "--database-url", opts.database_url]
        + (["--redis-url", opts.redis_url] if opts.redis_url else [])
    )
    rounds: list[list[float]] = []
    after = f"{opts.quiet:g} s of quiet" if opts.quiet else "a start"

    def show(i: int, lat: list[float]) -> None:
        rounds.append(lat)
        shown = ", ".join(f"{x * 1000:.1f}" for x in lat)
        print(f"round {i + 1}: sends {shown} ms; the first {first_extra(lat) * 1000:+.1f} ms", flush=True)

    with ThreadedFakeServer(ttft_ms=300, tps=50, tokens=10) as fake:
        if opts.quiet:
            in_fresh_app(
                app_opts,
                fake.openai_base_url,
                lambda urls, token: asyncio.run(quiet_rounds(urls, token, opts.starts, opts.quiet, show)),
            )
        for i in range(0 if opts.quiet else opts.starts):
            in_fresh_app(app_opts, fake.openai_base_url, functools.partial(_sends_after_start, show, i))
    result: dict[str, Any] = {
        "app_dir": str(opts.app_dir),
        "after": after,
        "latencies_s": rounds,
        "first_extra": summary([first_extra(lat) for lat in rounds]),
    }
    figures = result["first_extra"]
    print(
        f"the first send after {after}, over the next ones: median {figures['median_ms']:+.1f} ms "
        f"({figures['min_ms']:+.1f} to {figures['max_ms']:+.1f}; {opts.starts} rounds, 0.5 s replies)"
    )
    out = Path(opts.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
