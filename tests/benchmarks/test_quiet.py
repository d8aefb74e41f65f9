"""benchmarks._common.quiet: a burst waits until the app processes have finished what came before it."""

from __future__ import annotations

from benchmarks._common import quiet


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


async def test_it_waits_while_the_processes_use_cpu_and_returns_once_a_window_passes_without() -> None:
    clock = _Clock()
    used = iter([1.0, 1.2, 1.3, 1.35, 1.35, 9.0])  # busy for three windows, then a quiet one
    seen: list[list[int]] = []

    def cpu(pids: list[int]) -> float:
        seen.append(pids)
        return next(used)

    waited = await quiet([7, 8], window_s=0.1, cpu=cpu, sleep=clock.sleep, clock=clock)
    assert round(waited, 6) == 0.4 and seen == [[7, 8]] * 5


async def test_processes_that_never_go_quiet_are_waited_for_at_most_most_s() -> None:
    clock = _Clock()
    ticks = iter(range(1000))
    waited = await quiet(
        [1], window_s=0.1, most_s=1.0, cpu=lambda _: next(ticks), sleep=clock.sleep, clock=clock
    )
    assert 1.0 <= waited < 1.1


async def test_quiet_processes_are_not_waited_for_longer_than_one_window() -> None:
    clock = _Clock()
    waited = await quiet([1], window_s=0.05, cpu=lambda _: 3.0, sleep=clock.sleep, clock=clock)
    assert round(waited, 6) == 0.05


async def test_no_processes_no_wait() -> None:
    """A deployment elsewhere, or the fake provider in a thread of the benchmark: nothing to watch."""

    def cpu(pids: list[int]) -> float:
        raise AssertionError("not read")

    assert await quiet([], cpu=cpu) == 0.0
