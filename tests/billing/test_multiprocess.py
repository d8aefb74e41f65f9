"""Usage and budgets across two daphne processes sharing PostgreSQL and Redis, against the fake provider:
a burst split over both is charged once; budgets hold across processes under concurrent sends."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import httpx
import pytest
from asgiref.sync import async_to_sync

from billing.models import Budget, BudgetHit, UsageRecord
from providers.fake.server import ThreadedFakeServer
from tests.servers import daphne_servers, parse_prometheus, sample_sum, wait_until
from threads.models import Thread

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]
METRICS_TOKEN = "usage-metrics-token"


def _env(fake: ThreadedFakeServer, **extra: str) -> dict[str, str]:
    return {
        "OPENAI_BASE_URL": fake.openai_base_url,
        "OPENAI_API_KEY": "sk-test",
        "OPENAI_MODEL": "fake-model",
        "MODEL_PRICES": '{"openai": ["3", "15"]}',
        "METRICS_TOKEN": METRICS_TOKEN,
        "SEND_RATE_PER_MIN": "0",
        "MAX_SOCKETS_PER_USER": "0",
        "PACER_ENABLED": "false",
        **extra,
    }


async def _post_all(sends: list[tuple[str, dict[str, Any]]], auth: dict[str, str]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=500)
    async with httpx.AsyncClient(headers=auth, timeout=120, limits=limits) as client:
        return await asyncio.gather(*[client.post(url, json=body) for url, body in sends])


def test_a_burst_split_across_two_processes_is_charged_once_to_its_leader(user: Any, token: str) -> None:
    auth = {"Authorization": f"Bearer {token}"}
    with (
        ThreadedFakeServer(ttft_ms=300, tps=100, tokens=20) as fake,
        daphne_servers(2, env=_env(fake)) as (a, b),
    ):
        tid = int(httpx.post(a.url("/api/threads"), json={"provider": "openai"}, headers=auth).json()["id"])
        sends = [
            (s.url(f"/api/threads/{tid}/messages"), {"content": "pay once"})
            for s in (a, b)
            for _ in range(50)
        ]
        resps = async_to_sync(_post_all)(sends, auth)
        assert [r.status_code for r in resps] == [200] * 100
        assert fake.stats()["calls"] == 1
        saved = wait_until(lambda: UsageRecord.objects.filter(kind="saved").count() == 99 or None, timeout=10)
        assert saved
        (charge,) = UsageRecord.objects.filter(kind="charge")
        assert charge.user_id == user.pk and charge.output_tokens == 20 and not charge.estimated
        assert charge.cost_usd == (Decimal(charge.input_tokens) * 3 + Decimal(20) * 15) / 1_000_000
        assert set(UsageRecord.objects.filter(kind="saved").values_list("message_id", flat=True)) == {
            charge.message_id
        }
        usage = httpx.get(b.url("/api/usage"), headers=auth).json()
        assert usage["totals"]["calls"] == 1 and usage["saved"]["calls"] == 99
        assert Decimal(usage["saved"]["cost_usd"]) == 99 * charge.cost_usd
        metrics = parse_prometheus(
            httpx.get(a.url("/metrics"), headers={"Authorization": f"Bearer {METRICS_TOKEN}"}).text
        )
        assert sample_sum(metrics, "chatapp_coalesce_saved_calls_total") == 99
        assert sample_sum(metrics, "chatapp_tokens_total", connection="openai", kind="output") == 20


def test_a_budget_of_50_calls_starts_at_most_51_of_400_concurrent_sends(user: Any, token: str) -> None:
    """2 processes x 200 distinct sends, each in a thread of its own. A call's prompt is one 4-character
    word (estimated 1 + 4 framing = 5 tokens, the fake counts 1) and its reply 10 tokens, reserved as 6:
    a reservation (11) is exactly what a call costs (11), and the budget is 50 of them."""
    auth = {"Authorization": f"Bearer {token}"}
    Budget.objects.create(user=user, unit="tokens", period="day", limit=Decimal(50 * 11))
    threads = Thread.objects.bulk_create(
        [Thread(owner=user, provider="openai", model="fake-model") for _ in range(400)]
    )
    with (
        ThreadedFakeServer(ttft_ms=300, tps=100, tokens=10) as fake,
        daphne_servers(2, env=_env(fake, BUDGET_RESERVE_OUTPUT_TOKENS="6")) as (a, b),
    ):
        sends = [
            ((a, b)[i % 2].url(f"/api/threads/{t.pk}/messages"), {"content": f"q{i:03d}"})
            for i, t in enumerate(threads)
        ]
        resps = async_to_sync(_post_all)(sends, auth)
        codes = [r.status_code for r in resps]
        started = fake.stats()["calls"]
        refused = [r for r in resps if r.status_code == 429]
        assert codes.count(200) == started and len(refused) == 400 - started, sorted(set(codes))
        assert 50 <= started <= 51
        assert {r.json()["error"]["code"] for r in refused} == {"budget_exceeded"}
        assert all(int(r.headers["Retry-After"]) >= 1 for r in refused)
        wait_until(lambda: UsageRecord.objects.filter(kind="charge").count() == started or None, timeout=10)
        spent = sum(r.input_tokens + r.output_tokens for r in UsageRecord.objects.filter(kind="charge"))
        assert spent <= 51 * 11
        assert BudgetHit.objects.filter(user=user).exists()
