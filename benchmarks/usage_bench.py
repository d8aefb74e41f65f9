"""`make bench`'s usage rows (issue 19): what a burst costs with coalescing on and off, and how far a
budget is over-run under concurrent sends. Figures read back from `GET /api/usage` (the database's record).

    cost_burst(urls, token, fake_url, n=200)    # identical sends at once; cost and saving of the burst
    budget_overrun(dep, urls, token, fake_url)  # 400 distinct sends against a budget of 50 calls' worth

Alone, on a database and Redis of your own (two daphne processes, the fake provider as in make bench):

    DATABASE_URL=postgres://… REDIS_URL=redis://…/N .venv/bin/python -m benchmarks.usage_bench
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from decimal import Decimal
from typing import Any

import httpx

from benchmarks import burst
from benchmarks.report import _usage_rows
from benchmarks.verdict import render

BUDGET_USER = f"budget-bench-{os.getpid()}"  # a fresh user: nothing spent today
BUDGET_CALLS = 50  # the budget, in calls' worth
BUDGET_SENDS = 400


def usage(url: str, token: str) -> dict[str, Any]:
    resp = httpx.get(f"{url}/api/usage", headers={"Authorization": f"Bearer {token}"}, timeout=30)
    resp.raise_for_status()
    return dict(resp.json())


def _settled(url: str, token: str, calls: int, timeout: float = 20.0) -> dict[str, Any]:
    """The usage once `calls` charges are recorded (they are written as each generation ends)."""
    deadline = time.monotonic() + timeout
    while True:
        now = usage(url, token)
        if now["totals"]["calls"] >= calls or time.monotonic() > deadline:
            return now
        time.sleep(0.2)


def _run(cfg: burst.BurstConfig) -> dict[str, Any]:
    return asyncio.run(burst.run_burst(cfg))


def cost_burst(urls: list[str], token: str, fake_url: str, *, n: int, label: str) -> dict[str, Any]:
    """n identical sends at once to one thread: provider calls, what they cost, what followers saved."""
    before = usage(urls[0], token)
    cfg = burst.BurstConfig(urls=urls, token=token, n=n, label=label, floor=False, measure_provider=False)
    cfg.provider_url = fake_url
    res = _run(cfg)["burst"]
    calls = int(res["provider_calls"] or 0)
    after = _settled(urls[0], token, before["totals"]["calls"] + calls)
    spent = Decimal(after["totals"]["cost_usd"]) - Decimal(before["totals"]["cost_usd"])
    saved = Decimal(after["saved"]["cost_usd"]) - Decimal(before["saved"]["cost_usd"])
    return {
        "n": n,
        "ok": res["ok"],
        "provider_calls": calls,
        "charged_calls": after["totals"]["calls"] - before["totals"]["calls"],
        "cost_usd": str(spent),
        "saved_calls": after["saved"]["calls"] - before["saved"]["calls"],
        "saved_cost_usd": str(saved),
    }


def budget_overrun(dep: Any, urls: list[str], token: str, fake_url: str) -> dict[str, Any]:
    """BUDGET_SENDS distinct sends at once (each in a thread of its own) by a user whose daily token
    budget is BUDGET_CALLS calls' worth: how many generations started and how far past the budget the
    user's recorded spend went."""
    # One call of the same shape (by the main bench user), to know what a call costs.
    probe = burst.BurstConfig(urls=urls[:1], token=token, n=1, identical=False, label="budget-probe")
    probe.floor, probe.measure_provider, probe.provider_url = False, False, fake_url
    before = usage(urls[0], token)
    _run(probe)
    after = _settled(urls[0], token, before["totals"]["calls"] + 1)
    per_call = sum(after["totals"][k] - before["totals"][k] for k in ("input_tokens", "output_tokens"))
    budget = BUDGET_CALLS * per_call
    user_token = dep.manage("create_api_token", BUDGET_USER).strip().splitlines()[-1]
    dep.manage(
        "shell",
        "-c",
        "from billing.models import Budget; from django.contrib.auth import get_user_model; "
        f"u = get_user_model().objects.get(username={BUDGET_USER!r}); "
        f"Budget.objects.update_or_create(user=u, unit='tokens', period='day', defaults={{'limit': {budget}}})",
    )
    cfg = burst.BurstConfig(
        urls=urls, token=user_token, n=BUDGET_SENDS, threads=BUDGET_SENDS, identical=False, label="budget"
    )
    cfg.floor, cfg.measure_provider, cfg.provider_url = False, False, fake_url
    res = _run(cfg)["burst"]
    started = int(res["provider_calls"] or 0)
    spent_usage = _settled(urls[0], user_token, started)
    spent = spent_usage["totals"]["input_tokens"] + spent_usage["totals"]["output_tokens"]
    over = max(0, spent - budget)
    return {
        "sends": BUDGET_SENDS,
        "per_call_tokens": per_call,
        "budget_tokens": budget,
        "started": started,
        "refused": res["statuses"].get("429", 0),
        "statuses": res["statuses"],
        "spent_tokens": spent,
        "overrun_tokens": over,
        "overrun_calls": over / per_call if per_call else float("nan"),
    }


def main() -> int:
    from pathlib import Path

    from benchmarks._common import TOKENS, TPS, TTFT_MS
    from benchmarks.deploy import Deployment, SubprocessFakeServer, redis_clean
    from benchmarks.run import FULL, PREFIX, app_env

    db_url, redis_url = os.environ.get("DATABASE_URL", ""), os.environ.get("REDIS_URL", "")
    if not db_url.startswith("postgres") or not redis_url:
        print(
            "set DATABASE_URL (PostgreSQL) and REDIS_URL to a database and Redis db of your own",
            file=sys.stderr,
        )
        return 2
    results: dict[str, Any] = {}
    with (
        SubprocessFakeServer(ttft_ms=TTFT_MS, tps=TPS, tokens=TOKENS) as fake,
        tempfile.TemporaryDirectory(prefix="usage-bench-") as tmp,
    ):
        redis_clean(redis_url, PREFIX)
        env = app_env(fake.openai_base_url, db_url, redis_url)
        token = Deployment(env, Path(tmp)).prepare()
        for coalesce in (True, False):
            dep = Deployment(env, Path(tmp), processes=2, label=f"usage-{coalesce}")
            try:
                urls = dep.start(COALESCE_ENABLED=str(coalesce).lower())
                key = "cost_on" if coalesce else "cost_off"
                results[key] = cost_burst(urls, token, fake.openai_base_url, n=FULL.mid_n, label=key)
                print(key, results[key], flush=True)
                if not coalesce:
                    results["budget"] = budget_overrun(dep, urls, token, fake.openai_base_url)
                    print("budget", results["budget"], flush=True)
            finally:
                dep.stop()
        redis_clean(redis_url, PREFIX)
    print(render(_usage_rows(results, FULL)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
