"""The pacer's pure arithmetic: tables for each step, hypothesis for the queue's guarantees."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from core.gcra import (
    Bucket,
    Decision,
    Limit,
    bucket_reserve,
    extra_wait,
    give_back,
    pause,
    reserve,
)

# Times are multiples of 1/8 s below, so the float arithmetic is exact and the tables compare with ==.


@pytest.mark.parametrize(
    ("tat", "now", "interval", "burst", "max_wait", "paused", "expected"),
    [
        # idle bucket: admitted at once, tat one interval after now
        (0.0, 10.0, 0.25, 1, 5.0, 0.0, Decision(True, 0.0, 10.25, None)),
        # one reservation ahead: wait for it
        (10.25, 10.0, 0.25, 1, 5.0, 0.0, Decision(True, 0.25, 10.5, None)),
        # burst 3 (tolerance 0.5): the third at once, the fourth waits one interval
        (10.5, 10.0, 0.25, 3, 5.0, 0.0, Decision(True, 0.0, 10.75, None)),
        (10.75, 10.0, 0.25, 3, 5.0, 0.0, Decision(True, 0.25, 11.0, None)),
        # a wait of exactly max_wait is admitted; one beyond is refused, the bucket unchanged
        (15.0, 10.0, 0.25, 1, 5.0, 0.0, Decision(True, 5.0, 15.25, None)),
        (20.0, 10.0, 0.25, 1, 5.0, 0.0, Decision(False, 10.0, 20.0, 5.0)),
        (10.25, 10.0, 0.25, 1, 0.0, 0.0, Decision(False, 0.25, 10.25, 0.25)),
        # paused until 12: start at 12, spaced from there without burst (tat = 12 + tolerance + interval)
        (0.0, 10.0, 0.25, 3, 5.0, 12.0, Decision(True, 2.0, 12.75, None)),
        (12.75, 10.0, 0.25, 3, 5.0, 12.0, Decision(True, 2.25, 13.0, None)),
        (0.0, 10.0, 0.25, 1, 1.0, 12.0, Decision(False, 2.0, 0.0, 1.0)),
        # a pause in the past changes nothing
        (0.0, 10.0, 0.25, 1, 5.0, 9.0, Decision(True, 0.0, 10.25, None)),
        # unlimited (interval 0): always at once, except during a pause
        (10.0, 10.0, 0.0, 1, 0.0, 0.0, Decision(True, 0.0, 10.0, None)),
        (10.0, 10.0, 0.0, 1, 5.0, 11.0, Decision(True, 1.0, 11.0, None)),
    ],
)
def test_reserve(
    tat: float, now: float, interval: float, burst: int, max_wait: float, paused: float, expected: Decision
) -> None:
    got = reserve(tat, now, interval=interval, burst=burst, max_wait=max_wait, paused_until=paused)
    assert got == expected


@pytest.mark.parametrize(
    ("rps", "burst", "expected"),
    [
        (4.0, 2, Limit(0.25, 2)),
        (0.0, 1, Limit(0.0, 1)),
        (math.inf, 3, Limit(0.0, 3)),
        (0.5, 1, Limit(2.0, 1)),
    ],
)
def test_limit_per_second(rps: float, burst: int, expected: Limit) -> None:
    assert Limit.per_second(rps, burst) == expected


@pytest.mark.parametrize(("rps", "burst"), [(-1.0, 1), (1.0, 0), (math.nan, 1)])
def test_limit_rejects_nonsense(rps: float, burst: int) -> None:
    with pytest.raises(ValueError, match="use rps >= 0"):
        Limit.per_second(rps, burst)


@pytest.mark.parametrize(
    ("limit", "processes", "expected"),
    [
        (Limit(0.25, 10), 1, Limit(0.25, 10)),
        (Limit(0.25, 10), 2, Limit(0.5, 5)),
        (Limit(0.25, 10), 3, Limit(0.75, 3)),
        (Limit(0.25, 1), 4, Limit(1.0, 1)),
        (Limit(0.0, 1), 4, Limit(0.0, 1)),
    ],
)
def test_limit_divided(limit: Limit, processes: int, expected: Limit) -> None:
    assert limit.divided(processes) == expected


@pytest.mark.parametrize(
    ("bucket", "now", "retry_after", "expected"),
    [
        # nothing waiting: only the pause is recorded
        (Bucket(tat=5.0, seq=3), 10.0, 2.0, Bucket(tat=5.0, paused_until=12.0, seq=3)),
        # slots waiting: they and tat move by the pause (2 s)
        (Bucket(tat=11.0, seq=4), 10.0, 2.0, Bucket(tat=13.0, paused_until=12.0, shift=2.0, seq=4)),
        # extending a pause (12 -> 13) moves them by the extension only
        (
            Bucket(tat=13.0, paused_until=12.0, shift=2.0, seq=4),
            10.0,
            3.0,
            Bucket(tat=14.0, paused_until=13.0, shift=3.0, seq=4),
        ),
        # a shorter pause than the current one, or none at all, changes nothing
        (
            Bucket(tat=13.0, paused_until=12.0, shift=2.0),
            10.0,
            1.0,
            Bucket(tat=13.0, paused_until=12.0, shift=2.0),
        ),
        (Bucket(tat=11.0), 10.0, 0.0, Bucket(tat=11.0)),
    ],
)
def test_pause(bucket: Bucket, now: float, retry_after: float, expected: Bucket) -> None:
    assert pause(bucket, now, retry_after) == expected


@pytest.mark.parametrize(
    ("bucket", "seq", "expected"),
    [
        (Bucket(tat=11.0, seq=4), 4, Bucket(tat=10.75, seq=3)),  # the latest: its slot returns
        (Bucket(tat=11.0, seq=4), 3, Bucket(tat=11.0, seq=4)),  # an earlier one: no-op
    ],
)
def test_give_back(bucket: Bucket, seq: int, expected: Bucket) -> None:
    assert give_back(bucket, seq=seq, interval=0.25) == expected


@pytest.mark.parametrize(
    ("granted", "current", "expected"), [(0.0, 0.0, 0.0), (1.0, 3.5, 2.5), (2.0, 1.0, 0.0)]
)
def test_extra_wait(granted: float, current: float, expected: float) -> None:
    assert extra_wait(granted, current) == expected


def test_bucket_reserve_numbers_reservations_and_refusals_change_nothing() -> None:
    limit = Limit(0.25, 1)
    g1, b = bucket_reserve(Bucket(), 10.0, limit=limit, max_wait=0.25)
    g2, b = bucket_reserve(b, 10.0, limit=limit, max_wait=0.25)
    g3, b3 = bucket_reserve(b, 10.0, limit=limit, max_wait=0.25)
    assert (g1.seq, g1.wait_s, g2.seq, g2.wait_s) == (1, 0.0, 2, 0.25)
    assert not g3.admitted and g3.retry_after_s == 0.25 and g3.seq == 0 and b3 == b


def test_a_tail_cancelled_from_its_end_backwards_is_freed_whole() -> None:
    limit = Limit(0.25, 1)
    b = Bucket()
    grants = []
    for _ in range(4):
        g, b = bucket_reserve(b, 10.0, limit=limit, max_wait=5.0)
        grants.append(g)
    for g in reversed(grants[1:]):
        b = give_back(b, seq=g.seq, interval=limit.interval)
    again, _ = bucket_reserve(b, 10.0, limit=limit, max_wait=5.0)
    assert again.wait_s == grants[1].wait_s == 0.25


# --- properties: a simulated queue of waiters driven by random arrivals, cancels and pauses ----------

EIGHTHS = st.integers(0, 8).map(lambda k: k / 8)
# Half of the steps take no time: simultaneous arrivals, cancels and pauses are where queues go wrong.
STEP = st.one_of(st.just(0.0), EIGHTHS)
ARRIVE = st.tuples(st.just("arrive"), STEP, st.just(0.0))
OPS = st.lists(
    st.one_of(
        ARRIVE,
        ARRIVE,  # twice as likely as the others: queues need arrivals
        st.tuples(st.just("cancel"), STEP, st.integers(0, 50).map(float)),
        st.tuples(st.just("pause"), STEP, st.integers(1, 16).map(lambda k: k / 4)),
    ),
    min_size=4,
    max_size=60,
)
LIMITS = st.builds(Limit, st.sampled_from([0.0, 0.125, 0.25, 1.0]), st.integers(1, 4))


@dataclass
class Waiter:
    order: int
    arrived: float
    seq: int
    start: float  # the slot, moved by the pauses the waiter has seen
    shift: float


@dataclass
class Run:
    admitted: list[tuple[int, float, float]] = field(default_factory=list)  # (order, arrived, time)
    # Slot at reservation, by arrival order (cancelled waiters removed).
    granted_starts: dict[int, float] = field(default_factory=dict)
    pauses: list[tuple[float, float]] = field(default_factory=list)


def simulate(ops: list[tuple[str, float, float]], limit: Limit, max_wait: float) -> Run:
    """What `Pacer.acquire` does, on a simulated clock: waiters sleep to their slot, then as long
    as the bucket's `shift` grew meanwhile; a cancel gives the slot back."""
    run, bucket, now, order = Run(), Bucket(), 0.0, 0
    pending: list[Waiter] = []

    def wake_until(t: float) -> None:
        nonlocal bucket
        while pending and (w := min(pending, key=lambda w: (w.start, w.order))).start <= t:
            extra = extra_wait(w.shift, bucket.shift)
            if extra == 0:
                pending.remove(w)
                run.admitted.append((w.order, w.arrived, w.start))
            elif w.start + extra - w.arrived > max_wait:
                pending.remove(w)  # the pause pushed it past max_wait: refused, slot given back
                del run.granted_starts[w.order]
                bucket = give_back(bucket, seq=w.seq, interval=limit.interval)
            else:
                w.start, w.shift = w.start + extra, bucket.shift

    for kind, dt, arg in ops:
        now += dt
        wake_until(now)  # a waiter whose slot is now wakes before what happens at the same instant
        if kind == "arrive":
            grant, bucket = bucket_reserve(bucket, now, limit=limit, max_wait=max_wait)
            if grant.admitted:
                assert grant.wait_s <= max_wait
                run.granted_starts[order] = now + grant.wait_s
                if grant.wait_s == 0:
                    run.admitted.append((order, now, now))
                else:
                    pending.append(Waiter(order, now, grant.seq, now + grant.wait_s, grant.shift))
            else:
                assert grant.retry_after_s is not None and grant.retry_after_s > 0
            order += 1
        elif kind == "cancel" and pending:
            w = pending.pop(int(arg) % len(pending))
            del run.granted_starts[w.order]
            bucket = give_back(bucket, seq=w.seq, interval=limit.interval)
        elif kind == "pause":
            bucket = pause(bucket, now, arg)
            run.pauses.append((now, now + arg))
    wake_until(math.inf)
    return run


# Known traps, always tried: a cancel in the middle of the queue followed by an arrival (the hole must
# not go to the newcomer), and a pause while slots wait (they move with the queue's tail).
QUEUE_3 = [("arrive", 0.0, 0.0)] * 3
MIDDLE_CANCEL = [*QUEUE_3, ("cancel", 0.0, 0.0), ("arrive", 0.0, 0.0)]
PAUSE_WHILE_QUEUED = [*QUEUE_3, ("pause", 0.5, 1.0), ("arrive", 0.0, 0.0)]


@settings(max_examples=300, deadline=None)
@given(OPS, LIMITS, st.sampled_from([0.0, 0.5, 2.0, 5.0]))
@example(MIDDLE_CANCEL, Limit(1.0, 1), 5.0)
@example(PAUSE_WHILE_QUEUED, Limit(1.0, 1), 5.0)
def test_admissions_never_exceed_burst_plus_rate_times_window(
    ops: list[tuple[str, float, float]], limit: Limit, max_wait: float
) -> None:
    times = sorted(t for _, _, t in simulate(ops, limit, max_wait).admitted)
    if limit.interval == 0:
        return
    for i, first in enumerate(times):
        for j in range(i, len(times)):
            # j - i + 1 admissions in the closed window [times[i], times[j]]
            assert j - i + 1 <= limit.burst + (times[j] - first) / limit.interval + 1e-9


@settings(max_examples=300, deadline=None)
@given(OPS, LIMITS, st.sampled_from([0.0, 0.5, 2.0, 5.0]))
@example(MIDDLE_CANCEL, Limit(1.0, 1), 5.0)
@example(PAUSE_WHILE_QUEUED, Limit(1.0, 1), 5.0)
def test_first_come_first_served_and_waits_bounded(
    ops: list[tuple[str, float, float]], limit: Limit, max_wait: float
) -> None:
    run = simulate(ops, limit, max_wait)
    starts = [run.granted_starts[order] for order in sorted(run.granted_starts)]
    assert starts == sorted(starts)  # slots never decrease in arrival order
    in_order = sorted(run.admitted)
    assert [t for _, _, t in in_order] == sorted(t for _, _, t in in_order)  # nor do admissions
    assert all(t - arrived <= max_wait for _, arrived, t in run.admitted)


@settings(max_examples=300, deadline=None)
@given(OPS, LIMITS, st.sampled_from([0.5, 5.0]))
@example(PAUSE_WHILE_QUEUED, Limit(1.0, 1), 5.0)
def test_nobody_is_admitted_during_a_pause(
    ops: list[tuple[str, float, float]], limit: Limit, max_wait: float
) -> None:
    run = simulate(ops, limit, max_wait)
    for set_at, until in run.pauses:
        assert not [t for _, _, t in run.admitted if set_at < t < until]


@settings(max_examples=300, deadline=None)
@given(OPS, LIMITS, EIGHTHS)
def test_a_cancelled_latest_slot_is_reused(
    ops: list[tuple[str, float, float]], limit: Limit, later: float
) -> None:
    bucket, now = Bucket(), 0.0
    for kind, dt, arg in ops:  # any history of reservations and pauses
        now += dt
        if kind == "arrive":
            _, bucket = bucket_reserve(bucket, now, limit=limit, max_wait=math.inf)
        elif kind == "pause":
            bucket = pause(bucket, now, arg)
    now += later
    first, after_first = bucket_reserve(bucket, now, limit=limit, max_wait=math.inf)
    returned = give_back(after_first, seq=first.seq, interval=limit.interval)
    second, after_second = bucket_reserve(returned, now, limit=limit, max_wait=math.inf)
    assert second.wait_s == pytest.approx(first.wait_s, abs=1e-9)
    assert second.seq == first.seq
    assert after_second.tat == pytest.approx(after_first.tat, abs=1e-9)


@settings(max_examples=200, deadline=None)
@given(OPS, LIMITS, st.sampled_from([0.0, 0.5, 2.0]))
def test_a_refused_request_fits_after_retry_after(
    ops: list[tuple[str, float, float]], limit: Limit, max_wait: float
) -> None:
    bucket, now = Bucket(), 0.0
    for kind, dt, arg in ops:
        now += dt
        if kind == "arrive":
            grant, bucket = bucket_reserve(bucket, now, limit=limit, max_wait=max_wait)
            if not grant.admitted:
                assert grant.retry_after_s is not None
                retried, _ = bucket_reserve(bucket, now + grant.retry_after_s, limit=limit, max_wait=max_wait)
                assert retried.admitted and retried.wait_s == pytest.approx(max_wait, abs=1e-9)
        elif kind == "pause":
            bucket = pause(bucket, now, arg)
