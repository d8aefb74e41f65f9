"""Flood benchmark (#16 item 1): one account floods identical sends with fresh request_ids.

    .venv/bin/python -m benchmarks.flood_bench            # PostgreSQL + Redis from --database-url/--redis-url

While one generation of the attacker runs (the fake provider's reply lasts `--reply-s`), it sends `--n`
identical messages of `--chars` CJK characters, each with a new request_id, `--concurrency` at a time.
Another user sends one ordinary message every second meanwhile. Printed (and written as JSON): Redis's
`used_memory` before and after the flood, the attacker's answers by status, the honest user's errors.
Targets: Redis grows by < 3 MB, the attacker meets 429 past the per-user budget, the honest user 0 errors.
The deployment runs with the production defaults of the per-user limits (SEND_RATE_PER_MIN and
friends are not overridden, unlike the other benchmarks).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import redis

from benchmarks.deploy import (
    ROOT,
    Deployment,
    SubprocessFakeServer,
    bench_env,
    redis_clean,
    temporary_database,
)
from benchmarks.loadgen import Reply, post_json, session

TARGET_GROWTH_BYTES = 3 * 1024 * 1024


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=300, help="identical flood sends")
    p.add_argument("--chars", type=int, default=32_000, help="CJK characters per flood message")
    p.add_argument("--concurrency", type=int, default=50)
    p.add_argument("--reply-s", type=float, default=20.0, help="how long the attacker's one generation runs")
    p.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/9")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "flood.json"))
    return p.parse_args(argv)


def used_memory(url: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        return int(client.info("memory")["used_memory"])
    finally:
        client.close()


async def _thread(client: Any, base: str) -> int:
    reply = await post_json(client, f"{base}/api/threads", {"title": "flood"})
    if reply.status != 201:
        raise RuntimeError(f"thread creation answered {reply.status}: {reply.body}")
    return int(reply.body["id"])


async def flood(base: str, token: str, opts: argparse.Namespace) -> list[Reply]:
    content = "漢" * opts.chars
    gate = asyncio.Semaphore(opts.concurrency)
    async with session(token) as client:
        url = f"{base}/api/threads/{await _thread(client, base)}/messages"

        async def one() -> Reply:
            async with gate:
                body = {"content": content, "request_id": uuid.uuid4().hex, "stream": False}
                return await post_json(client, url, body)

        return await asyncio.gather(*(one() for _ in range(opts.n)))


async def honest(base: str, token: str, stop: asyncio.Event) -> list[Reply]:
    replies: list[Reply] = []
    async with session(token) as client:
        url = f"{base}/api/threads/{await _thread(client, base)}/messages"
        while not stop.is_set():
            replies.append(await post_json(client, url, {"content": f"hello {len(replies)}"}))
            try:
                await asyncio.wait_for(stop.wait(), timeout=1.0)
            except TimeoutError:
                pass
    return replies


async def run(base: str, attacker: str, person: str, opts: argparse.Namespace) -> dict[str, Any]:
    stop = asyncio.Event()
    person_task = asyncio.create_task(honest(base, person, stop))
    started = time.monotonic()
    flood_replies = await flood(base, attacker, opts)
    flood_s = time.monotonic() - started
    stop.set()
    person_replies = await person_task
    return {
        "flood_s": flood_s,
        "attacker_status": dict(Counter(r.status for r in flood_replies)),
        "attacker_codes": dict(Counter(r.body.get("error", {}).get("code", "") for r in flood_replies)),
        "person_sends": len(person_replies),
        "person_errors": [r.status for r in person_replies if r.status != 200],
    }


def main(argv: list[str] | None = None) -> None:
    opts = parse_args(argv)
    prefix = f"flood-{secrets.token_hex(4)}:"
    print(f"flood bench: n={opts.n} x {opts.chars} CJK chars, concurrency {opts.concurrency}")
    tokens = max(1, int(opts.reply_s * 50))
    with (
        SubprocessFakeServer(ttft_ms=300, tps=50, tokens=tokens) as fake,
        tempfile.TemporaryDirectory(prefix="flood-bench-") as tmp,
        temporary_database(opts.database_url, f"flood_{secrets.token_hex(4)}") as db_url,
    ):
        env = bench_env(prefix=prefix, metrics_token=secrets.token_urlsafe(16))
        for limit in ("SEND_RATE_PER_MIN", "MAX_SOCKETS_PER_USER"):
            env.pop(limit)  # the production defaults
        env |= {"DATABASE_URL": db_url, "REDIS_URL": opts.redis_url, "OPENAI_BASE_URL": fake.openai_base_url}
        app = Deployment(env, Path(tmp))
        try:
            attacker = app.prepare("attacker")
            person = app.manage("create_api_token", "person").strip().splitlines()[-1]
            base = app.start()[0]
            before = used_memory(opts.redis_url)
            result = asyncio.run(run(base, attacker, person, opts))
            result["redis_growth_bytes"] = used_memory(opts.redis_url) - before
        finally:
            app.stop()
            redis_clean(opts.redis_url, prefix)
    growth = result["redis_growth_bytes"]
    print(f"reply length: {opts.reply_s:.0f} s (one generation of the attacker runs through the flood)")
    print(f"flood took {result['flood_s']:.1f} s; attacker answers by status: {result['attacker_status']}")
    print(f"attacker error codes: {result['attacker_codes']}")
    verdict = "MET" if growth < TARGET_GROWTH_BYTES else "MISSED"
    print(f"Redis used_memory grew by {growth / 1e6:.2f} MB (target < 3 MB: {verdict})")
    print(f"honest user: {result['person_sends']} sends, errors: {result['person_errors'] or 0}")
    out = Path(opts.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"params": vars(opts), "loadavg": os.getloadavg(), **result}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
