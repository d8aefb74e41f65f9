"""GCRA (generic cell rate algorithm) with reservations: the arithmetic of the provider pacer and the
per-user send budget. Pure: no clock, no I/O.

A bucket is one number, the theoretical arrival time `tat`: the moment the bucket would be empty again
if nobody else came. A request arriving at `now` reserves the slot

    start = max(now, tat - tolerance, paused_until)        tolerance = (burst - 1) * interval

and moves `tat` to `max(tat, now, paused_until + tolerance) + interval`. Starts never decrease in
reservation order, so reserving fixes the order (first come, first served) and the wait
(`start - now`) at once, like Go's `rate.Limiter.Reserve`; the caller then just sleeps. In any closed
window of `w` seconds at most `burst + w / interval` slots start (GCRA's guarantee).

A reservation whose wait would exceed `max_wait` is refused and changes nothing; its `retry_after_s`
is how much later the same request would be admitted with exactly `max_wait` to wait.

Pause (an upstream 429 with Retry-After): `paused_until = max(paused_until, now + retry_after)`; nobody
starts before it. New reservations start at `paused_until` or later, spaced by `interval` (no burst
at resume: the upstream just said we were too fast). Slots already reserved but not yet started
are moved later by the same `delta` as the end of the pause, together with `tat`; `shift` adds up
those deltas, so a sleeping waiter that reads a larger `shift` when it wakes sleeps the difference.
Everyone moves by the same amount: the order and the spacing of the queue are unchanged.

Give back (a waiter cancelled before its slot): only the latest reservation (`seq` still equal to
the bucket's) returns its slot: `tat -= interval`, `seq -= 1`, so the next request takes exactly that
slot, and the reservation before it becomes the latest and may give back too (a queue tail cancelled
from its end backwards is freed whole). A slot in the middle of the queue stays unused: the later
waiters are already sleeping toward fixed times, and handing the hole to a newcomer would put it
ahead of them (breaking the order) or, at the tail, double-book a slot (breaking the rate). Losing
it is the conservative error. Each reservation may be given back at most once.

`core/gcra_store.py` runs these functions in process memory and, as the same steps in Lua, inside
Redis; the two must stay identical (tests/core/test_gcra_store.py compares them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace


@dataclass(frozen=True, slots=True)
class Limit:
    """One bucket's sustained rate (as the `interval` between two slots) and burst."""

    # Seconds between two slots at the sustained rate; 0 means unlimited (the bucket can still pause).
    interval: float
    # Slots an idle bucket grants at the same instant (at least 1).
    burst: int

    @classmethod
    def per_second(cls, rps: float, burst: int) -> Limit:
        """`rps` requests per second (0 or infinity: unlimited) with `burst` at once."""
        if not rps >= 0 or burst < 1:
            raise ValueError(
                f"Invalid pacer limit rps={rps!r} burst={burst!r}: use rps >= 0 (0 = unlimited) and burst >= 1."
            )
        return cls(0.0 if rps == 0 or math.isinf(rps) else 1.0 / rps, int(burst))

    @property
    def tolerance(self) -> float:
        """How far `tat` may run ahead of now while a slot still starts at once."""
        return (self.burst - 1) * self.interval

    def divided(self, processes: int) -> Limit:
        """This limit shared by `processes` independent buckets: each gets 1/n of the rate and of the
        burst (at least one), so together they stay within it."""
        n = max(1, processes)
        return Limit(self.interval * n, max(1, self.burst // n))


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of `reserve`."""

    admitted: bool
    # Admitted: seconds until the slot starts. Refused: the wait it would have been.
    wait_s: float
    # The bucket's `tat` afterwards (unchanged when refused).
    new_tat: float
    # Refused: seconds after which the same request would wait exactly `max_wait`. Admitted: None.
    retry_after_s: float | None


def reserve(
    state_tat: float, now: float, *, interval: float, burst: int, max_wait: float, paused_until: float
) -> Decision:
    """Reserve the next slot of a bucket whose theoretical arrival time is `state_tat`."""
    tolerance = (burst - 1) * interval
    wait = max(now, state_tat - tolerance, paused_until) - now
    if wait > max_wait:
        return Decision(False, wait, state_tat, wait - max_wait)
    return Decision(True, wait, max(state_tat, now, paused_until + tolerance) + interval, None)


@dataclass(frozen=True, slots=True)
class Bucket:
    """Everything stored for one provider (a Redis hash with the same four fields)."""

    tat: float = 0.0
    # Never paused: -inf, not 0 (a pause "until 0" would deny the burst to a clock starting at 0).
    paused_until: float = -math.inf
    # Sum of the pause deltas applied to slots that were waiting (see the module docstring).
    shift: float = 0.0
    # Number of the latest reservation (see give back).
    seq: int = 0


@dataclass(frozen=True, slots=True)
class Grant:
    """A reservation as the waiter sees it."""

    admitted: bool
    wait_s: float
    retry_after_s: float | None
    # The reservation's number, to give it back (0 when refused).
    seq: int
    # The bucket's `shift` when reserved: a larger one later means a pause moved this slot.
    shift: float


def bucket_reserve(bucket: Bucket, now: float, *, limit: Limit, max_wait: float) -> tuple[Grant, Bucket]:
    """`reserve` on a whole bucket: the grant, and the bucket to store."""
    d = reserve(
        bucket.tat,
        now,
        interval=limit.interval,
        burst=limit.burst,
        max_wait=max_wait,
        paused_until=bucket.paused_until,
    )
    if not d.admitted:
        return Grant(False, d.wait_s, d.retry_after_s, 0, bucket.shift), bucket
    seq = bucket.seq + 1
    return Grant(True, d.wait_s, None, seq, bucket.shift), replace(bucket, tat=d.new_tat, seq=seq)


def give_back(bucket: Bucket, *, seq: int, interval: float) -> Bucket:
    """Return reservation `seq`'s unused slot if it is still the latest; otherwise change nothing."""
    if bucket.seq != seq:
        return bucket
    return replace(bucket, tat=bucket.tat - interval, seq=seq - 1)


def pause(bucket: Bucket, now: float, retry_after: float) -> Bucket:
    """Nobody starts before `now + retry_after`; waiting slots move later by the extension."""
    until = now + retry_after
    floor = max(now, bucket.paused_until)
    if until <= floor:
        return bucket  # an earlier pause already covers it
    if bucket.tat <= now:
        # Nothing is waiting: every reserved slot started already (start <= tat - interval).
        return replace(bucket, paused_until=until)
    delta = until - floor
    return replace(bucket, paused_until=until, tat=bucket.tat + delta, shift=bucket.shift + delta)


def extra_wait(granted_shift: float, current_shift: float) -> float:
    """How much longer a waiter reserved at `granted_shift` must wait, pauses considered."""
    return max(0.0, current_shift - granted_shift)
