"""The pacer service on the in-process backend, driven by a virtual clock: no test sleeps for real."""

from __future__ import annotations

import asyncio
import logging
import re
import selectors
import socket
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar, cast

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from redis.exceptions import ConnectionError as RedisConnectionError

from core.gcra import Grant, Limit
from core.gcra_store import InProcessBackend, RedisBackend
from core.loopres import aclose_all
from ops import flags
from providers import ProviderError
from providers.pacer import REDIS_RETRY_S, Pacer, PacerRejected, pacer_for_loop

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]


class _JumpingSelector:
    """A selector that, when nothing is ready, jumps the loop's clock to the next timer instead of
    blocking (what the `looptime` pytest plugin does)."""

    def __init__(self, selector: selectors.BaseSelector, loop: VirtualTimeLoop) -> None:
        self._selector, self._loop = selector, loop

    def select(self, timeout: float | None = None) -> list[Any]:
        events = self._selector.select(0)
        if events or timeout is None or timeout <= 0:
            return events if events or timeout is not None else self._selector.select(None)
        self._loop.now += timeout
        return []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._selector, name)


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop whose `time()` starts at 0 and advances only to due timers: `asyncio.sleep(5)`
    returns at once with `loop.time()` 5 s later, and timers fire in exactly their order."""

    def __init__(self) -> None:
        self.now = 0.0
        super().__init__(cast(selectors.BaseSelector, _JumpingSelector(selectors.DefaultSelector(), self)))

    def time(self) -> float:
        return self.now


def run_virtual(main: Callable[[VirtualTimeLoop], Coroutine[Any, Any, T]]) -> T:
    loop = VirtualTimeLoop()
    try:
        return loop.run_until_complete(main(loop))
    finally:
        loop.close()


def make_pacer(
    loop: asyncio.AbstractEventLoop, rps: float = 5.0, burst: int = 1, max_wait: float = 10.0
) -> Pacer:
    return Pacer(
        {"p": Limit.per_second(rps, burst)}, max_wait=max_wait, clock=loop.time, enabled=lambda: True
    )


async def until_queued(pacer: Pacer, seq: int) -> None:
    """Let the tasks just created take their slots: each reserves in its first step, and those steps
    run before this coroutine resumes (the ready queue is FIFO)."""
    await asyncio.sleep(0)
    assert pacer.local.bucket("p").seq == seq


# --- order, waits, cancel, max wait, pause ---------------------------------------------------------


def test_thirty_concurrent_acquires_are_admitted_in_arrival_order_at_the_rate() -> None:
    async def main(loop: VirtualTimeLoop) -> None:
        pacer = make_pacer(loop, rps=5.0, burst=1)
        admitted: list[tuple[int, float, float]] = []

        async def one(i: int) -> None:
            waited_ms = await pacer.acquire("p")
            admitted.append((i, loop.time(), waited_ms))

        await asyncio.gather(*(one(i) for i in range(30)))
        assert [i for i, _, _ in admitted] == list(range(30))
        assert [t for _, t, _ in admitted] == pytest.approx([i * 0.2 for i in range(30)])
        # the wait returned is the wait that happened
        assert [w for _, _, w in admitted] == pytest.approx([t * 1000 for _, t, _ in admitted])

    run_virtual(main)


def test_burst_is_admitted_at_once_then_the_rate_applies() -> None:
    async def main(loop: VirtualTimeLoop) -> list[float]:
        pacer = make_pacer(loop, rps=4.0, burst=3)
        return list(await asyncio.gather(*(pacer.acquire("p") for _ in range(5))))

    assert run_virtual(main) == pytest.approx([0.0, 0.0, 0.0, 250.0, 500.0])


def test_a_cancelled_waiter_gives_its_slot_back_and_sees_its_cancellation() -> None:
    async def main(loop: VirtualTimeLoop) -> None:
        pacer = make_pacer(loop, rps=1.0, burst=1)
        tasks = [asyncio.create_task(pacer.acquire("p")) for _ in range(3)]  # slots 0, 1, 2
        await until_queued(pacer, 3)
        await asyncio.sleep(0.5)
        tasks[2].cancel()
        with pytest.raises(asyncio.CancelledError):
            await tasks[2]
        assert pacer.local.bucket("p").seq == 2  # given back: it was the latest reservation
        newcomer = asyncio.create_task(pacer.acquire("p"))
        assert await newcomer == pytest.approx(1500.0)  # takes the freed slot at t=2
        assert [await t for t in tasks[:2]] == pytest.approx([0.0, 1000.0])

    run_virtual(main)


def test_a_cancelled_waiter_in_the_middle_leaves_its_slot_unused() -> None:
    async def main(loop: VirtualTimeLoop) -> None:
        pacer = make_pacer(loop, rps=1.0, burst=1)
        tasks = [asyncio.create_task(pacer.acquire("p")) for _ in range(3)]  # slots 0, 1, 2
        await until_queued(pacer, 3)
        tasks[1].cancel()
        await asyncio.gather(tasks[1], return_exceptions=True)
        # The newcomer queues after slot 2: taking slot 1 would jump the queue.
        assert await pacer.acquire("p") == pytest.approx(3000.0)
        assert tasks[1].cancelled()

    run_virtual(main)


def test_a_wait_beyond_max_wait_is_refused_at_once_with_retry_after() -> None:
    async def main(loop: VirtualTimeLoop) -> None:
        pacer = make_pacer(loop, rps=1.0, burst=1, max_wait=2.0)
        tasks = [asyncio.create_task(pacer.acquire("p")) for _ in range(3)]  # waits 0, 1, 2
        await until_queued(pacer, 3)
        with pytest.raises(PacerRejected) as caught:
            await pacer.acquire("p")
        assert loop.time() == 0.0  # refused without waiting
        exc = caught.value
        assert isinstance(exc, ProviderError)
        assert (exc.http_status, exc.code, exc.retry_after, exc.provider) == (429, "queue_timeout", 1.0, "p")
        assert "Retry after 1.0 s" in exc.message
        assert pacer.local.bucket("p").seq == 3  # the refusal reserved nothing
        await asyncio.sleep(1.0)  # after Retry-After the same request fits
        assert await pacer.acquire("p") == pytest.approx(2000.0)
        await asyncio.gather(*tasks)

    run_virtual(main)


def test_a_pause_holds_new_and_queued_requests_and_keeps_their_order() -> None:
    async def main(loop: VirtualTimeLoop) -> None:
        pacer = make_pacer(loop, rps=10.0, burst=1)
        admitted: list[tuple[str, float]] = []

        async def one(name: str) -> None:
            await pacer.acquire("p")
            admitted.append((name, loop.time()))

        queued = [asyncio.create_task(one(f"q{i}")) for i in range(3)]  # slots 0, 0.1, 0.2
        await until_queued(pacer, 3)
        await asyncio.sleep(0.05)  # q0 is in; q1 and q2 wait
        await pacer.pause("p", 1.0)  # upstream 429, Retry-After 1 s: nobody before t=1.05
        await asyncio.gather(one("new"), *queued)
        assert [name for name, _ in admitted] == ["q0", "q1", "q2", "new"]
        assert [t for _, t in admitted] == pytest.approx([0.0, 1.1, 1.2, 1.3])

    run_virtual(main)


def test_a_pause_that_pushes_a_waiter_past_max_wait_refuses_it_when_its_slot_comes() -> None:
    async def main(loop: VirtualTimeLoop) -> None:
        pacer = make_pacer(loop, rps=1.0, burst=1, max_wait=2.0)
        first = await pacer.acquire("p")
        waiter = asyncio.create_task(pacer.acquire("p"))  # slot at t=1
        await until_queued(pacer, 2)
        await pacer.pause("p", 3.0)  # moves it to t=3: a 3 s wait, over the 2 s allowed
        with pytest.raises(PacerRejected) as caught:
            await waiter
        assert (first, loop.time(), caught.value.retry_after) == (0.0, 1.0, 3.0)

    run_virtual(main)


def test_a_shorter_pause_does_not_shorten_a_longer_one() -> None:
    async def main(loop: VirtualTimeLoop) -> float:
        pacer = make_pacer(loop, rps=0.0)  # unlimited, but still paused
        await pacer.pause("p", 2.0)
        await pacer.pause("p", 0.5)
        await pacer.pause("p", 0.0)
        return await pacer.acquire("p")

    assert run_virtual(main) == pytest.approx(2000.0)


def test_unlimited_and_unknown_providers_never_wait() -> None:
    async def main(loop: VirtualTimeLoop) -> set[float]:
        pacer = make_pacer(loop, rps=0.0)
        waits = await asyncio.gather(*(pacer.acquire("p") for _ in range(500)), pacer.acquire("unknown"))
        return set(waits)

    assert run_virtual(main) == {0.0}


def test_the_flag_off_skips_the_pacer(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []

    def fake_flag(name: str) -> bool:
        asked.append(name)
        return False

    monkeypatch.setattr(flags, "flag_enabled", fake_flag)

    async def main(loop: VirtualTimeLoop) -> list[float]:
        pacer = Pacer({"p": Limit.per_second(1.0, 1)}, max_wait=0.0, clock=loop.time)  # default flag
        waits = [await pacer.acquire("p") for _ in range(3)]  # would be refused if paced
        assert pacer.local.bucket("p").seq == 0
        return waits

    assert run_virtual(main) == [0.0, 0.0, 0.0]
    assert asked == ["PACER_ENABLED"] * 3


# --- concurrency: random arrivals and cancels -------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    arrivals=st.lists(st.integers(0, 20).map(lambda k: k / 20), min_size=1, max_size=25),
    cancels=st.sets(st.integers(0, 24)),
    rps=st.sampled_from([2.0, 5.0, 20.0]),
    burst=st.integers(1, 3),
    pause=st.none() | st.tuples(st.integers(0, 20).map(lambda k: k / 20), st.sampled_from([0.25, 1.0, 2.5])),
)
@example(arrivals=[0.55], cancels=set(), rps=2.0, burst=1, pause=(0.1, 2.5))  # 0.1 + 2.5 rounds down
def test_random_interleavings_stay_in_order_and_within_the_rate(
    arrivals: list[float], cancels: set[int], rps: float, burst: int, pause: tuple[float, float] | None
) -> None:
    async def main(loop: VirtualTimeLoop) -> None:
        pacer = make_pacer(loop, rps=rps, burst=burst, max_wait=3.0)
        arrived: list[int] = []
        admitted: dict[int, float] = {}

        async def one(i: int, at: float) -> None:
            await asyncio.sleep(at)
            # acquire reserves before its first suspension: this is the order of the reservations
            # (tasks due at the same instant may run in any order).
            arrived.append(i)
            try:
                waited_ms = await pacer.acquire("p")
            except PacerRejected:
                return
            admitted[i] = loop.time()
            assert waited_ms == pytest.approx((loop.time() - at) * 1000)

        async def pause_at(at: float, seconds: float) -> None:
            await asyncio.sleep(at)
            await pacer.pause("p", seconds)

        starts = sorted(arrivals)
        tasks = [asyncio.create_task(one(i, at)) for i, at in enumerate(starts)]
        for i in sorted(cancels):
            if i < len(tasks):
                loop.call_at(starts[i] + 0.01, tasks[i].cancel)  # some while queued, some after
        if pause is not None:
            tasks.append(asyncio.create_task(pause_at(*pause)))
        await asyncio.gather(*tasks, return_exceptions=True)
        assert not [t for t in tasks if not t.cancelled() and t.exception()]
        if pause is not None:
            # Nobody is admitted while paused; the pause's end is computed in another order, so the
            # last admission may land a rounding error (1e-16 s) before 0.1 + 2.5.
            assert not [t for t in admitted.values() if pause[0] < t < sum(pause) - 1e-9]
        times = [admitted[i] for i in arrived if i in admitted]
        assert times == sorted(times)  # first come, first served
        for a, first in enumerate(times):
            for b in range(a, len(times)):
                assert b - a + 1 <= burst + (times[b] - first) * rps + 1e-6

    run_virtual(main)


# --- Redis unreachable ------------------------------------------------------------------------------


class FlakyBackend(InProcessBackend):
    """A shared backend that can be made unreachable, and counts the calls it gets."""

    def __init__(self, clock: Callable[[], float]) -> None:
        super().__init__(clock)
        self.down = False
        self.calls = 0

    async def reserve(self, provider: str, limit: Limit, max_wait: float) -> Grant:
        self.calls += 1
        if self.down:
            raise RedisConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
        return await super().reserve(provider, limit, max_wait)


def test_redis_down_falls_back_to_a_share_of_the_limit_and_comes_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="providers.pacer")

    async def main(loop: VirtualTimeLoop) -> None:
        shared = FlakyBackend(loop.time)
        pacer = Pacer(
            {"p": Limit.per_second(10.0, 4)},
            max_wait=0.0,
            redis=shared,
            processes=2,
            clock=loop.time,
            enabled=lambda: True,
        )
        shared.down = True
        assert await pacer.acquire("p") == 0.0
        assert await pacer.acquire("p") == 0.0  # fallback burst 4 // 2 = 2
        with pytest.raises(PacerRejected) as caught:
            await pacer.acquire("p")
        assert caught.value.retry_after == pytest.approx(0.2)  # fallback rate 10 / 2 = 5 rps
        assert shared.calls == 1  # one failure, then no more tries until REDIS_RETRY_S
        shared.down = False
        await asyncio.sleep(REDIS_RETRY_S)
        assert await pacer.acquire("p") == 0.0
        assert shared.calls == 2 and shared.bucket("p").seq == 1  # back on the shared buckets
        assert pacer.local.bucket("p").seq == 2

    run_virtual(main)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2, messages  # one warning per outage, one on recovery
    assert "Redis unreachable" in messages[0] and "1/2" in messages[0] and "REDIS_URL" in messages[0]
    assert "reachable again" in messages[1]


def test_a_pause_during_an_outage_holds_the_fallback() -> None:
    async def main(loop: VirtualTimeLoop) -> float:
        shared = FlakyBackend(loop.time)
        shared.down = True
        pacer = Pacer(
            {"p": Limit.per_second(10.0, 1)},
            max_wait=5.0,
            redis=shared,
            clock=loop.time,
            enabled=lambda: True,
        )
        await pacer.pause("p", 1.0)
        return await pacer.acquire("p")

    assert run_virtual(main) == pytest.approx(1000.0)


class BrokenBackend(InProcessBackend):
    """A shared backend with a bug: it raises a bare OSError, which redis-py never does for an outage."""

    async def reserve(self, name: str, limit: Limit, max_wait: float) -> Grant:
        raise OSError("not Redis: a bug in the backend")


def test_a_bare_oserror_is_a_bug_not_an_outage() -> None:
    """One definition of "Redis is down" (core/outages.py): a bare OSError propagates instead of
    sending the process to its fallback buckets and hiding the bug behind a warning."""

    async def main(loop: VirtualTimeLoop) -> None:
        pacer = Pacer(
            {"p": Limit.per_second(10.0, 1)},
            max_wait=0.0,
            redis=BrokenBackend(loop.time),
            clock=loop.time,
            enabled=lambda: True,
        )
        with pytest.raises(OSError, match="a bug in the backend"):
            await pacer.acquire("p")
        assert pacer.local.bucket("p").seq == 0  # no fallback reservation was made

    run_virtual(main)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_real_redis_backend_on_a_closed_port_falls_back_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="providers.pacer")
    redis = RedisBackend(f"redis://127.0.0.1:{_closed_port()}/0", prefix="test-pacer")
    pacer = Pacer(
        {"p": Limit.per_second(10.0, 2)}, max_wait=0.0, redis=redis, processes=2, enabled=lambda: True
    )
    try:
        assert await pacer.acquire("p") < 100  # no retries, no backoff: refused and answered locally
        with pytest.raises(PacerRejected):
            await pacer.acquire("p")  # the fallback's share: burst 2 // 2 = 1
        await pacer.pause("p", 1.0)  # not sent while Redis is known down; the fallback is paused
        assert pacer.local.bucket("p").paused_until > 0
    finally:
        await pacer.aclose()
    assert sum("Redis unreachable" in r.getMessage() for r in caplog.records) == 1


# --- wiring -----------------------------------------------------------------------------------------


async def test_pacer_for_loop_is_one_per_loop_and_reads_the_settings(settings: Any) -> None:
    settings.REDIS_URL = ""
    settings.PACER_LIMITS = {"openai": {"rps": 2.0, "burst": 3}}
    settings.PACER_MAX_WAIT_S = 1.5
    pacer = pacer_for_loop()
    try:
        assert pacer_for_loop() is pacer
        assert pacer.limit_for("openai") == Limit(0.5, 3) and pacer.max_wait == 1.5
    finally:
        await aclose_all()
    assert pacer_for_loop() is not pacer  # closed and forgotten: the next use builds a new one
    await aclose_all()
    other = await asyncio.to_thread(lambda: asyncio.run(_pacer_in_new_loop()))
    assert other is not pacer


async def _pacer_in_new_loop() -> Pacer:
    pacer = pacer_for_loop()
    await aclose_all()
    return pacer


def test_the_settings_default_to_generous_limits() -> None:
    from django.conf import settings as django_settings

    assert django_settings.PACER_LIMITS["demo"]["rps"] == 0.0  # simulated: unlimited
    assert django_settings.PACER_LIMITS["openai"]["rps"] >= 50
    assert django_settings.PACER_PROCESSES >= 1


def test_docs_cover_every_pacer_setting() -> None:
    doc = (ROOT / "docs" / "pacer.md").read_text()
    source = (ROOT / "chatapp" / "settings.py").read_text()
    names = set(re.findall(r'"(PACER_[A-Z_]+)"', source)) | {"PACER_<NAME>_RPS", "PACER_<NAME>_BURST"}
    assert {"PACER_ENABLED", "PACER_MAX_WAIT_S", "PACER_PROCESSES"} <= names
    for name in sorted(names):
        assert f"`{name}`" in doc, f"docs/pacer.md does not document {name}"
    assert "`queue_timeout`" in doc and "429" in doc
