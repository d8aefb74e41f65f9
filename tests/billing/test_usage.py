"""Usage through the whole stack: who is charged, what followers saved, estimates, cancels, budgets,
GET /api/usage, the usage page and the staff report."""

from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import Group
from django.db import OperationalError
from django.db.models.signals import pre_save
from django.test import AsyncClient, Client
from redis.exceptions import ConnectionError as RedisConnectionError

from billing import budgets
from billing import views as billing_views
from billing.models import Budget, BudgetHit, UsageRecord
from billing.rules import Prices, cost_usd, estimate_prompt_tokens
from billing.store import InProcessStore
from core.outages import DATABASE_UNAVAILABLE, REDIS_UNAVAILABLE
from providers.fake.server import FakeProviderServer
from tests.waiting import wait_until_async
from threads import chat, outcomes
from threads.generation import generation_service
from threads.models import Message, Thread
from threads.validation import parse_send

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.both]


@pytest.fixture
def api(token: str) -> AsyncClient:
    return AsyncClient(AUTHORIZATION=f"Bearer {token}")


@pytest.fixture
async def fake(settings: Any) -> Any:
    async with FakeProviderServer(ttft_ms=0, tps=0, tokens=8) as server:
        settings.PROVIDERS = {
            **settings.PROVIDERS,
            "openai": {"base_url": server.openai_base_url, "api_key": "sk-test", "model": "fake-model"},
        }
        settings.PROVIDER_MAX_RETRIES = 0
        yield server


async def _thread(api: AsyncClient, **body: Any) -> int:
    resp = await api.post("/api/threads", body, content_type="application/json")
    assert resp.status_code == 201, resp.content
    return int(resp.json()["id"])


async def _send(api: AsyncClient, thread_id: int, content: str, **extra: Any) -> Any:
    return await api.post(
        f"/api/threads/{thread_id}/messages", {"content": content, **extra}, content_type="application/json"
    )


def _records(**filters: Any) -> list[UsageRecord]:
    return list(UsageRecord.objects.filter(**filters).order_by("id"))


records = sync_to_async(_records)


async def test_a_send_is_charged_to_its_user_with_the_providers_counts(api: AsyncClient, user: Any) -> None:
    thread_id = await _thread(api)
    resp = await _send(api, thread_id, "Tell me about tea")
    assert resp.status_code == 200, resp.content
    (charge,) = await records(kind="charge")
    reply = resp.json()["assistant_message"]
    assert (charge.user_id, charge.message_id, charge.provider, charge.model) == (
        user.pk,
        reply["id"],
        "demo",
        "demo-1",
    )
    row = await sync_to_async(Message.objects.get)(pk=reply["id"])
    # The demo reports its own counts (Completion), which the message row keeps too.
    assert (charge.input_tokens, charge.output_tokens) == (row.input_tokens, row.output_tokens)
    assert charge.output_tokens > 0 and not charge.estimated and charge.status == "complete"
    prices = Prices(Decimal("0.15"), Decimal("0.60"))
    assert charge.cost_usd == cost_usd(
        input_tokens=charge.input_tokens, output_tokens=charge.output_tokens, prices=prices
    )


async def test_without_a_usage_report_the_counts_are_estimated(
    api: AsyncClient, fake: FakeProviderServer
) -> None:
    fake.configure(usage=False)
    thread_id = await _thread(api, provider="openai", model="fake-model")
    resp = await _send(api, thread_id, "Say something")
    assert resp.status_code == 200, resp.content
    (charge,) = await records(kind="charge")
    text = resp.json()["assistant_message"]["content"]
    assert charge.estimated and charge.output_tokens >= len(text.split()) > 0 and charge.input_tokens > 0
    assert charge.cost_usd > 0  # openai's price: 3 and 15 USD per million
    usage = (await api.get("/api/usage")).json()
    assert usage["totals"]["estimated_calls"] == 1


async def test_with_a_report_the_providers_counts_are_used(
    api: AsyncClient, fake: FakeProviderServer
) -> None:
    thread_id = await _thread(api, provider="openai", model="fake-model")
    assert (await _send(api, thread_id, "Say something")).status_code == 200
    (charge,) = await records(kind="charge")
    assert not charge.estimated and charge.output_tokens == 8
    assert charge.cost_usd == cost_usd(
        input_tokens=charge.input_tokens, output_tokens=8, prices=Prices(Decimal(3), Decimal(15))
    )


async def test_a_cancelled_generation_is_charged_for_what_it_generated(
    api: AsyncClient, fake: FakeProviderServer, user: Any
) -> None:
    fake.configure(tps=20, tokens=400)
    thread_id = await _thread(api, provider="openai", model="fake-model")
    send = asyncio.create_task(_send(api, thread_id, "A long one", request_id="r-cancel"))
    # A few tokens arrive (20 a second). Polled: the generation's text has no event a test could wait on.
    await wait_until_async(
        lambda: sum(len(g.text()) for g in generation_service().running.values()) >= 10, within=5
    )
    await chat.cancel(user=user, request_id="r-cancel")
    resp = await send
    (charge,) = await records(kind="charge")
    assert charge.status == "cancelled" and charge.estimated
    text = resp.json()["assistant_message"]["content"]
    assert 0 < charge.output_tokens < 400 and text


async def test_identical_sends_are_charged_once_and_followers_record_their_saving(
    api: AsyncClient, user: Any
) -> None:
    thread_id = await _thread(api)
    answers = await asyncio.gather(*(_send(api, thread_id, "Same question") for _ in range(5)))
    assert sorted(a.json()["coalesced"] for a in answers) == ["follower"] * 4 + ["leader"]
    (charge,) = await records(kind="charge")
    saved = await records(kind="saved")
    assert len(saved) == 4 and {s.message_id for s in saved} == {charge.message_id}
    usage = (await api.get("/api/usage")).json()
    assert usage["totals"]["calls"] == 1
    assert usage["saved"] == {
        "calls": 4,
        "input_tokens": 4 * charge.input_tokens,
        "output_tokens": 4 * charge.output_tokens,
        "cost_usd": str(4 * charge.cost_usd),
    }


async def test_a_budget_refuses_the_next_generation_until_its_period_resets(
    api: AsyncClient, user: Any
) -> None:
    await sync_to_async(Budget.objects.create)(user=user, unit="tokens", period="day", limit=Decimal(1))
    thread_id = await _thread(api)
    first = await _send(api, thread_id, "One")
    assert first.status_code == 200  # nothing spent yet: below the budget
    second = await _send(api, thread_id, "Two")
    assert second.status_code == 429
    assert second.json()["error"]["code"] == "budget_exceeded"
    assert "budget" in second.json()["error"]["message"]
    now = datetime.datetime.now(datetime.UTC)
    midnight = datetime.datetime.combine(
        now.date() + datetime.timedelta(days=1), datetime.time(), tzinfo=datetime.UTC
    )
    assert abs(int(second["Retry-After"]) - (midnight - now).total_seconds()) <= 2
    # Nothing was written for the refused send, and staff see who hit it.
    assert await sync_to_async(Message.objects.filter(content="Two").count)() == 0
    hit = await sync_to_async(BudgetHit.objects.get)(user=user)
    assert (hit.unit, hit.period, hit.refusals) == ("tokens", "day", 1)


async def test_a_budget_resets_with_its_period(user: Any) -> None:
    await sync_to_async(Budget.objects.create)(user=user, unit="tokens", period="day", limit=Decimal(100))
    day1 = datetime.datetime(2026, 5, 3, 23, 0, tzinfo=datetime.UTC)
    day2 = day1 + datetime.timedelta(hours=2)
    admit = budgets.admit
    first = await admit(user_id=user.pk, provider="demo", model="demo-1", prompt_tokens=10, now=lambda: day1)
    assert first is not None
    with pytest.raises(budgets.BudgetExceeded) as refused:
        await admit(user_id=user.pk, provider="demo", model="demo-1", prompt_tokens=10, now=lambda: day1)
    assert refused.value.retry_after == 3600
    # The next UTC day has a counter of its own.
    assert await admit(user_id=user.pk, provider="demo", model="demo-1", prompt_tokens=10, now=lambda: day2)


async def test_group_and_default_budgets(user: Any, other_user: Any, settings: Any) -> None:
    settings.BUDGET_RESERVE_OUTPUT_TOKENS = 10

    def setup() -> None:
        group = Group.objects.create(name="power")
        group.user_set.add(user)
        Budget.objects.create(group=group, unit="tokens", period="month", limit=Decimal(1000))
        Budget.objects.create(unit="tokens", period="month", limit=Decimal(15))

    await sync_to_async(setup)()

    async def admit(user_id: int) -> budgets.Reservation | None:
        return await budgets.admit(user_id=user_id, provider="demo", model="demo-1", prompt_tokens=5)

    assert await admit(other_user.pk)  # 15 tokens of the default's 15
    with pytest.raises(budgets.BudgetExceeded):
        await admit(other_user.pk)
    for _ in range(10):  # the group's 1000
        assert await admit(user.pk)


async def test_a_reservation_is_settled_with_the_real_usage() -> None:
    from billing.store import Check

    store = InProcessStore()
    assert await store.reserve([Check("k", limit=100, reserve=60, ttl_s=10, start=0)]) == (1, 0)
    assert await store.reserve([Check("k", limit=100, reserve=60, ttl_s=10)]) == (1, 0)  # 60 < 100
    assert await store.reserve([Check("k", limit=100, reserve=60, ttl_s=10)]) == (0, 1)  # 120: refused
    await store.settle([("k", -50), ("k", -50)])  # both calls cost 10
    assert store.counters["k"] == 20
    assert await store.reserve([Check("gone", limit=1, reserve=1, ttl_s=10)]) == (-1, 1)


async def test_followers_of_another_users_call_are_not_refused_by_their_budget(
    user: Any, other_user: Any, token: str
) -> None:
    from accounts.tokens import api_token_create

    def setup() -> tuple[str, int]:
        other_user.is_staff = True  # staff may send in another user's thread
        other_user.save()
        Budget.objects.create(user=other_user, unit="tokens", period="day", limit=Decimal(0))
        thread = Thread.objects.create(owner=user, provider="demo", model="demo-1")
        return api_token_create(user=other_user)[1], thread.pk

    other_token, thread_id = await sync_to_async(setup)()
    alice, bob = (
        AsyncClient(AUTHORIZATION=f"Bearer {token}"),
        AsyncClient(AUTHORIZATION=f"Bearer {other_token}"),
    )
    # Bob alone is refused (a zero budget)...
    alone = await _send(bob, thread_id, "Bob alone")
    assert alone.status_code == 429 and alone.json()["error"]["code"] == "budget_exceeded"
    # ...but following Alice's call costs him nothing.
    lead, follow = await asyncio.gather(
        _send(alice, thread_id, "Shared question"), _send(bob, thread_id, "Shared question")
    )
    roles = {lead.json()["coalesced"], follow.json()["coalesced"]}
    assert lead.status_code == follow.status_code == 200 and roles == {"leader", "follower"}
    (charge,) = await records(kind="charge")
    (saved,) = await records(kind="saved")
    leader, follower = (user, other_user) if lead.json()["coalesced"] == "leader" else (other_user, user)
    assert charge.user_id == leader.pk and saved.user_id == follower.pk


async def test_api_usage_own_staff_and_errors(api: AsyncClient, user: Any, other_user: Any) -> None:
    thread_id = await _thread(api)
    assert (await _send(api, thread_id, "Hello")).status_code == 200
    today = datetime.datetime.now(datetime.UTC).date().isoformat()
    body = (await api.get(f"/api/usage?from={today}&to={today}")).json()
    assert set(body) >= {"totals", "by_model", "by_day", "saved"}
    assert body["totals"]["calls"] == 1 and list(body["by_model"]) == ["demo/demo-1"]
    assert [d["date"] for d in body["by_day"]] == [today]
    assert set(body["totals"]) >= {"input_tokens", "output_tokens", "cost_usd"}
    # Someone else's: staff only.
    assert (await api.get(f"/api/usage?user={other_user.pk}")).status_code == 403

    def make_staff() -> str:
        from accounts.tokens import api_token_create

        other_user.is_staff = True
        other_user.save()
        return api_token_create(user=other_user)[1]

    staff = AsyncClient(AUTHORIZATION=f"Bearer {await sync_to_async(make_staff)()}")
    theirs = (await staff.get("/api/usage?user=alice")).json()
    assert theirs["user_id"] == user.pk and theirs["totals"]["calls"] == 1
    assert (await staff.get("/api/usage?user=nobody")).status_code == 404
    for query, code in [
        ("from=2026-13-01", "invalid_date"),
        ("from=2026-05-02&to=2026-05-01", "invalid_range"),
        ("from=2020-01-01&to=2026-01-01", "invalid_range"),
        ("bogus=1", "unknown_field"),
    ]:
        resp = await api.get(f"/api/usage?{query}")
        assert resp.status_code == 400 and resp.json()["error"]["code"] == code, query
    assert (await AsyncClient().get("/api/usage")).status_code == 401
    assert (await api.post("/api/usage")).status_code == 405


@pytest.mark.parametrize(
    ("down", "told"),
    [(OperationalError("gone"), DATABASE_UNAVAILABLE), (RedisConnectionError("gone"), REDIS_UNAVAILABLE)],
)
async def test_api_usage_answers_an_outage_as_every_route_does(
    api: AsyncClient, monkeypatch: pytest.MonkeyPatch, down: Exception, told: tuple[str, str]
) -> None:
    """core/outages.py says what a client is told when the database or Redis is down, for every route."""

    def report(*args: Any) -> Any:
        raise down

    monkeypatch.setattr(billing_views, "_report", report)
    resp = await api.get("/api/usage")
    assert resp.status_code == 503 and resp["Retry-After"] == "5"
    assert resp.json()["error"] == {"code": told[0], "message": told[1]}


def test_usage_page_and_staff_report(user: Any, admin_user: Any) -> None:
    for i, (u, inp) in enumerate([(user, 100), (user, 50), (admin_user, 7)]):
        UsageRecord.objects.create(
            user=u, kind="charge", message_id=i + 1, provider="demo", model="demo-1",
            input_tokens=inp, output_tokens=10, cost_usd=Decimal("0.0001"),
        )  # fmt: skip
    UsageRecord.objects.create(user=admin_user, kind="saved", message_id=1, provider="demo", model="demo-1")
    client = Client()
    client.force_login(user)
    page = client.get("/usage/")
    html = page.content.decode()
    assert page.status_code == 200 and "<svg" in html and 'id="u-calls">2<' in html
    assert 'id="u-input">150<' in html and "demo/demo-1" in html
    client.force_login(admin_user)
    report = client.get("/admin/billing/usagerecord/report/")
    text = report.content.decode()
    assert report.status_code == 200 and "alice" in text and 'id="usage-report"' in text
    csv = client.get("/admin/billing/usagerecord/report/?format=csv")
    lines = csv.content.decode().strip().splitlines()
    assert csv["Content-Type"].startswith("text/csv") and lines[0].startswith("date,user,user_id,model")
    assert len(lines) == 3 and any(",alice," in line and ",150," in line for line in lines)
    # The dashboard lists who reached a budget.
    BudgetHit.objects.create(
        user=user, unit="usd", period="month", period_start=datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC),
        limit=Decimal(5),
    )  # fmt: skip
    dash = client.get("/staff/dashboard/").content.decode()
    assert "Budgets reached" in dash and "alice" in dash


async def test_a_regenerate_is_charged_and_refused_like_a_send(api: AsyncClient, user: Any) -> None:
    """A regenerate is a new call (#18 + #19): charged to the user who asked, and past their budget
    refused with 429 budget_exceeded before any row is written."""
    thread_id = await _thread(api)
    first = await _send(api, thread_id, "One")
    assert first.status_code == 200
    reply_id = first.json()["assistant_message"]["id"]
    again = await api.post(
        f"/api/threads/{thread_id}/messages/{reply_id}/regenerate", {}, content_type="application/json"
    )
    assert again.status_code == 200, again.content
    charges = await sync_to_async(UsageRecord.objects.filter(user=user, kind="charge").count)()
    assert charges == 2
    await sync_to_async(Budget.objects.create)(user=user, unit="tokens", period="day", limit=Decimal(1))
    budgets.forget_rules()  # as a save in admin does in its own process
    refused = await api.post(
        f"/api/threads/{thread_id}/messages/{reply_id}/regenerate", {}, content_type="application/json"
    )
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "budget_exceeded"
    replies = await sync_to_async(Message.objects.filter(thread_id=thread_id, role="assistant").count)()
    assert replies == 2


@pytest.fixture
def slow_usage_writes() -> Iterator[None]:
    """Each usage row saved on its own takes 0.3 s more (on the database thread, as on a slow
    database): a write still under way after the answer it belongs to is caught every time."""

    def slow_write(**kwargs: Any) -> None:
        time.sleep(0.3)

    pre_save.connect(slow_write, sender=UsageRecord, dispatch_uid="slow-usage-write")
    yield
    pre_save.disconnect(sender=UsageRecord, dispatch_uid="slow-usage-write")


@pytest.mark.usefixtures("slow_usage_writes")
async def test_the_charge_and_the_saving_are_written_before_the_answer_is_told(
    api: AsyncClient, user: Any
) -> None:
    """A client that reads its usage as soon as it hears `done` finds its charge, and a follower, as
    soon as it is answered, finds its saving: both are written before, not in the background after."""
    thread = await sync_to_async(Thread.objects.get)(pk=await _thread(api))

    def req() -> Any:
        return parse_send({"content": "Same question"}, max_chars=1000)

    first, second = await asyncio.gather(
        chat.send(user=user, thread=thread, req=req()), chat.send(user=user, thread=thread, req=req())
    )
    leader, follower = (first, second) if first.coalesced == "leader" else (second, first)
    assert follower.coalesced == "follower"
    (saved,) = await records(kind="saved")  # the follower is answered: its saving is written
    assert saved.message_id == follower.assistant_message["id"]
    done = await asyncio.wait_for(outcomes.wait_terminal(leader, thread_id=thread.pk), 10)
    assert done["type"] == "message.done"
    (charge,) = await records(kind="charge")  # `done` is out: the call is charged
    assert charge.message_id == leader.assistant_message["id"] and charge.status == "complete"


@pytest.mark.usefixtures("slow_usage_writes")
async def test_a_streamed_send_is_charged_before_its_done_event(api: AsyncClient) -> None:
    thread_id = await _thread(api)
    resp = await _send(api, thread_id, "Stream it", stream=True)
    body = b"".join([chunk async for chunk in resp.streaming_content]).decode()
    assert body.rstrip().splitlines()[-1].startswith("data:") and "event: message.done" in body
    usage = (await api.get("/api/usage")).json()
    assert usage["totals"]["calls"] == 1 and usage["totals"]["output_tokens"] > 0


async def test_the_reservation_counts_the_context_sent(
    api: AsyncClient, user: Any, monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    """A budget reservation is the estimated input of the whole context (system prompt and the path's
    messages), plus the output reserve: not the new message alone."""
    settings.BUDGET_RESERVE_OUTPUT_TOKENS = 100
    await sync_to_async(Budget.objects.create)(user=user, unit="tokens", period="day", limit=Decimal(10**9))
    reserved: list[int] = []
    admit = budgets.admit

    async def spy(**kwargs: Any) -> budgets.Reservation | None:
        reservation = await admit(**kwargs)
        assert reservation is not None
        reserved.append(reservation.parts[0][2])
        return reservation

    monkeypatch.setattr(budgets, "admit", spy)
    system = "You answer in long sentences. " * 20
    thread_id = await _thread(api, system_prompt=system)
    long = "tea " * 300
    first = (await _send(api, thread_id, long)).json()
    second = (await _send(api, thread_id, "Why?")).json()
    context = [
        ("system", system),
        ("user", long),
        ("assistant", first["assistant_message"]["content"]),
        ("user", "Why?"),
    ]
    assert reserved[1] == estimate_prompt_tokens(context) + 100
    # A regenerate of the second reply is sent the same context.
    reply_id = second["assistant_message"]["id"]
    again = await api.post(
        f"/api/threads/{thread_id}/messages/{reply_id}/regenerate", {}, content_type="application/json"
    )
    assert again.status_code == 200, again.content
    assert reserved[2] == estimate_prompt_tokens(context) + 100


@pytest.mark.parametrize("reported", [True, False])
async def test_gemini_usage_metadata_is_charged(
    api: AsyncClient, fake: FakeProviderServer, settings: Any, reported: bool
) -> None:
    """Gemini's `usageMetadata` (promptTokenCount, candidatesTokenCount) is what the call is charged;
    a Gemini stream without it is charged an estimate, labelled so."""
    settings.PROVIDERS = {
        **settings.PROVIDERS,
        "gemini": {"base_url": fake.base_url, "api_key": "g-key", "model": "gemini-fake"},
    }
    settings.MODEL_PRICES = {**settings.MODEL_PRICES, "gemini": ["0.30", "2.50"]}
    fake.configure(usage=reported)
    thread_id = await _thread(api, model="gemini/gemini-fake")
    resp = await _send(api, thread_id, "Say something")
    assert resp.status_code == 200, resp.content
    (charge,) = await records(kind="charge")
    assert (charge.provider, charge.model, charge.status) == ("gemini", "gemini-fake", "complete")
    if reported:  # the fake reports the prompt's words and the reply's 8 tokens
        assert not charge.estimated and (charge.input_tokens, charge.output_tokens) == (2, 8)
    else:
        text = resp.json()["assistant_message"]["content"]
        assert charge.estimated and charge.output_tokens >= len(text.split()) > 0 and charge.input_tokens > 0
    prices = Prices(Decimal("0.30"), Decimal("2.50"))
    assert charge.cost_usd == cost_usd(
        input_tokens=charge.input_tokens, output_tokens=charge.output_tokens, prices=prices
    )
    assert resp.json()["assistant_message"]["usage"]["output_tokens"] == charge.output_tokens


# PostgreSQL only: two regenerates writing at once meet SQLite's in-memory shared-cache table lock
# (tests/threads/test_tree.py's concurrent regenerate test says the same).
@pytest.mark.services
async def test_identical_concurrent_regenerates_are_charged_once_and_the_follower_saves(
    api: AsyncClient, user: Any
) -> None:
    from threads import regenerate

    thread_id = await _thread(api)
    first = (await _send(api, thread_id, "One")).json()
    thread = await sync_to_async(Thread.objects.get)(pk=thread_id)

    def req(rid: str) -> regenerate.RegenerateRequest:
        return regenerate.RegenerateRequest(message_id=first["assistant_message"]["id"], request_id=rid)

    a, b = await asyncio.gather(
        regenerate.regenerate(user=user, thread=thread, req=req("r1")),
        regenerate.regenerate(user=user, thread=thread, req=req("r2")),
    )
    assert sorted((a.coalesced, b.coalesced)) == ["follower", "leader"]
    leader = a if a.coalesced == "leader" else b
    await asyncio.wait_for(outcomes.wait_terminal(leader, thread_id=thread_id), 10)
    charges = await records(kind="charge")
    (saved,) = await records(kind="saved")
    assert len(charges) == 2  # the send's and the regenerate's, not one per regenerate request
    assert saved.message_id == leader.assistant_message["id"] == charges[1].message_id


async def test_an_estimated_input_counts_the_system_prompt(
    api: AsyncClient, fake: FakeProviderServer
) -> None:
    fake.configure(usage=False)
    system = "Answer like a pirate, at length. " * 10
    thread_id = await _thread(api, provider="openai", model="fake-model", system_prompt=system)
    assert (await _send(api, thread_id, "Say something")).status_code == 200
    (charge,) = await records(kind="charge")
    assert charge.estimated
    assert charge.input_tokens == estimate_prompt_tokens([("system", system), ("user", "Say something")])
