"""Audit retention runs by itself (accounts/retention.py): once per UTC day, by the one process that
claims the day, the clock injected so days pass without waiting."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from asgiref.sync import sync_to_async

from accounts.audit import audit_record
from accounts.models import AuditEvent
from accounts.retention import DAY_S, AuditRetention, MemoryClaims, RedisClaims, prune_day

pytestmark = pytest.mark.django_db(transaction=True)

START = 20_000 * DAY_S + 3600.0  # 01:00 UTC on some day


class Clock:
    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("now_s", "day"), [(0.0, 0), (DAY_S - 0.001, 0), (DAY_S, 1), (START, 20_000), (START + DAY_S, 20_001)]
)
def test_prune_day(now_s: float, day: int) -> None:
    assert prune_day(now_s) == day


async def _row_aged(days: float, clock: Clock) -> None:
    at = datetime.fromtimestamp(clock(), tz=UTC) - timedelta(days=days)
    await sync_to_async(audit_record)(kind=AuditEvent.LOGIN, username="alice", at=at)


async def _left() -> int:
    return int(await sync_to_async(AuditEvent.objects.count)())


async def test_prunes_once_a_day_then_again_the_next(settings: Any) -> None:
    settings.AUDIT_RETENTION_DAYS = 30
    clock = Clock()
    retention = AuditRetention(claims=MemoryClaims(), clock=clock)
    await _row_aged(31, clock)
    await _row_aged(29.5, clock)
    assert await retention.prune_if_due() == 1
    assert await _left() == 1

    await _row_aged(40, clock)
    clock.now += DAY_S - 3601  # 23:59:59 the same day: already done
    assert await retention.prune_if_due() is None
    assert await _left() == 2

    clock.now += 2  # the next day
    assert await retention.prune_if_due() == 2  # the 40-day row, and the one now 30.5 days old
    assert await _left() == 0


async def test_a_failed_prune_gives_the_day_back(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from accounts import audit

    settings.AUDIT_RETENTION_DAYS = 30
    clock = Clock()
    retention = AuditRetention(claims=MemoryClaims(), clock=clock)
    await _row_aged(31, clock)

    def down(**kwargs: Any) -> int:
        raise RuntimeError("database away")

    monkeypatch.setattr(audit, "audit_prune", down)
    with pytest.raises(RuntimeError):
        await retention.prune_if_due()
    monkeypatch.undo()
    assert await retention.prune_if_due() == 1


@pytest.mark.services
async def test_one_process_of_several_prunes_each_day_through_redis(settings: Any) -> None:
    from core.redisconn import redis_for_loop

    settings.AUDIT_RETENTION_DAYS = 30
    prefix = f"test-retention-{uuid.uuid4().hex}"
    clock = Clock()
    processes = [AuditRetention(claims=RedisClaims(redis_for_loop(), prefix), clock=clock) for _ in range(3)]
    for _ in range(2):
        await _row_aged(31, clock)
        results = await asyncio.gather(*(p.prune_if_due() for p in processes))
        assert sorted(results, key=str) == [1, None, None]
        assert await _left() == 0
        clock.now += DAY_S
    await redis_for_loop().delete(*[f"{prefix}:audit-prune:{prune_day(START) + d}" for d in range(2)])


class _ReleaseFails(MemoryClaims):
    async def release(self, day: int) -> None:
        raise ConnectionError("Redis went away")


async def test_a_cancelled_prune_stays_cancelled_when_the_release_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The sweep catches Exception and loops on: had the release's error replaced the cancel, the
    sweeper would never stop (a service's close then waited forever: a 120 s timeout in pass 2)."""
    started = asyncio.Event()
    loop = asyncio.get_running_loop()

    def slow_prune(*, now: datetime) -> int:
        loop.call_soon_threadsafe(started.set)
        import time

        time.sleep(0.5)  # the database's work, on a worker thread, while the cancel arrives
        return 0

    monkeypatch.setattr("accounts.audit.audit_prune", slow_prune)
    retention = AuditRetention(claims=_ReleaseFails(), clock=Clock())
    task = asyncio.create_task(retention.prune_if_due())
    await asyncio.wait_for(started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
