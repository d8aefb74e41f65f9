"""The in-process coalescer: unit behaviour, and hypothesis-driven interleavings of arrivals,
completions, failures, cancels and the passing of time."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from threads.coalesce_store import LEASE_S, CoalesceFailed, InProcessCoalescer, Ref


@dataclass
class Clock:
    now: float = 0.0

    def __call__(self) -> float:
        return self.now


async def test_first_leads_then_followers_get_the_published_info() -> None:
    co = InProcessCoalescer(clock=Clock())
    assert (await co.claim("k")).role == "leader"
    follower = await co.claim("k")
    assert follower.role == "follower" and follower.info is None
    waiter = asyncio.create_task(co.wait_info("k"))
    await co.publish("k", {"request_id": "r"})
    assert await waiter == {"request_id": "r"}
    assert (await co.claim("k")).info == {"request_id": "r"}


async def test_results_expire_after_their_ttl(settings: Any) -> None:
    settings.COALESCE_RESULT_TTL_S, settings.COALESCE_ERROR_TTL_S = 30.0, 2.0
    clock = Clock()
    co = InProcessCoalescer(clock=clock)
    for ok, ttl in ((True, 30.0), (False, 2.0)):
        key = f"k{ok}"
        await co.claim(key)
        await co.publish(key, {"request_id": key})
        await co.finish(key, ok=ok)
        clock.now += ttl - 0.01
        assert (await co.claim(key)).role == "follower"
        clock.now += 0.02
        assert (await co.claim(key)).role == "leader"


async def test_a_leader_failing_before_publishing_fails_its_followers_and_frees_the_key() -> None:
    co = InProcessCoalescer(clock=Clock())
    await co.claim("k")
    await co.claim("k")
    waiter = asyncio.create_task(co.wait_info("k"))
    await asyncio.sleep(0)
    await co.fail("k", {"code": "boom", "message": "it failed", "status": 502})
    with pytest.raises(CoalesceFailed) as err:
        await waiter
    assert err.value.error["code"] == "boom"
    assert (await co.claim("k")).role == "leader"


async def test_a_released_key_lapses_like_an_unrenewed_lease() -> None:
    # A leader that replayed rows written earlier publishes them, but no generation will `finish`.
    clock = Clock()
    co = InProcessCoalescer(clock=clock)
    await co.claim("k")
    await co.publish("k", {"request_id": "r"})
    co.release("k")
    assert (await co.claim("k")).info == {"request_id": "r"}
    clock.now += LEASE_S + 0.01
    assert (await co.claim("k")).role == "leader"
    # After a finish, a release changes nothing: the result is kept for its TTL.
    await co.publish("k", {"request_id": "s"})
    await co.finish("k", ok=True)
    co.release("k")
    clock.now += LEASE_S + 0.01
    assert (await co.claim("k")).info == {"request_id": "s"}


async def test_aliases_expire_after_a_day() -> None:
    clock = Clock()
    co = InProcessCoalescer(clock=clock)
    ref: Ref = {"request_id": "a", "user_message_id": 1, "assistant_message_id": 2}
    await co.alias_set("rid:1:a", "fp", ref)
    assert await co.alias_get("rid:1:a") == ("fp", ref)
    clock.now += 24 * 3600 + 1
    assert await co.alias_get("rid:1:a") is None


# --- interleavings ---------------------------------------------------------------------------------

Op = tuple[str, int, str]
ops = st.lists(
    st.one_of(
        st.tuples(st.just("arrive"), st.integers(0, 2), st.just("")),
        st.tuples(
            st.just("resolve"), st.integers(0, 2), st.sampled_from(["ok", "error", "fail_early", "cancel"])
        ),
        st.tuples(st.just("tick"), st.integers(1, 40), st.just("")),
    ),
    max_size=40,
)


@dataclass
class Harness:
    """Drives the coalescer the way threads/chat.py does, with a controllable provider call."""

    co: InProcessCoalescer
    in_flight: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    max_in_flight: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    gates: dict[str, list[asyncio.Future[str]]] = field(default_factory=lambda: defaultdict(list))
    answers: dict[int, list[str]] = field(default_factory=lambda: defaultdict(list))
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    n: int = 0

    async def request(self, key: str, rid: int) -> None:
        claim = await self.co.claim(key)
        if claim.role == "follower":
            try:
                info = claim.info or await self.co.wait_info(key)
                self.answers[rid].append(f"info:{info['leader']}")
            except CoalesceFailed:
                self.answers[rid].append("failed")
            return
        self.in_flight[key] += 1
        self.max_in_flight[key] = max(self.max_in_flight[key], self.in_flight[key])
        gate: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.gates[key].append(gate)
        try:
            outcome = await gate
            if outcome == "fail_early":
                await self.co.fail(key, {"code": "x", "message": "failed early"})
                self.answers[rid].append("failed")
                return
            await self.co.publish(key, {"leader": rid})
            await self.co.finish(key, ok=outcome == "ok")
            self.answers[rid].append(f"info:{rid}")
        except asyncio.CancelledError:
            # As chat.send does: a leader cancelled before publishing releases its followers.
            await self.co.fail(key, {"code": "cancelled", "message": "cancelled"})
            self.answers[rid].append("failed")
            raise
        finally:
            self.in_flight[key] -= 1


@hsettings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(script=ops)
def test_interleavings_one_call_per_key_and_every_waiter_answered_once(script: list[Op]) -> None:
    async def run() -> Harness:
        clock = Clock()
        h = Harness(InProcessCoalescer(clock=clock))
        for kind, arg, outcome in script:
            if kind == "arrive":
                h.tasks.append(asyncio.create_task(h.request(f"k{arg}", h.n)))
                h.n += 1
            elif kind == "resolve":
                pending = [g for g in h.gates[f"k{arg}"] if not g.done()]
                if pending:
                    if outcome == "cancel":
                        pending[0].cancel()
                    else:
                        pending[0].set_result(outcome)
            else:
                clock.now += arg
            for _ in range(3):
                await asyncio.sleep(0)
        # Finish whatever is still running, as providers eventually do.
        async with asyncio.timeout(5):
            while any(not t.done() for t in h.tasks):
                for gates in h.gates.values():
                    for g in gates:
                        if not g.done():
                            g.set_result("ok")
                await asyncio.sleep(0)
        return h

    h = asyncio.run(run())
    assert all(v <= 1 for v in h.max_in_flight.values()), h.max_in_flight
    assert sorted(h.answers) == list(range(h.n))
    assert all(len(a) == 1 for a in h.answers.values()), h.answers
