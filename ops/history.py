"""The dashboard's last hour, kept server-side so its charts open with history (#22 item 9).

Each process samples the deployment-wide metrics summary every DASHBOARD_HISTORY_INTERVAL_S (30 s) and
keeps one point per sample for an hour: the requests per second, latency and time-to-first-token p95 over
the interval, and the open streams, as static/dashboard/dashboard.js draws them. A point is five
numbers, so an hour (120 points) adds about 4 KB to the page. The sampler starts with the first metrics
read or dashboard visit of a process (Prometheus scrapes /metrics: at once, in a deployment) and stops
with its event loop (core/loopres.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from django.conf import settings

from core import loopres
from ops import metrics

HISTORY_S = 3600.0
Point = list[float]  # [unix time s, requests/s, latency p95 ms, ttft p95 ms, open streams]


def _window_p95(now: list[list[Any]], before: list[list[Any]]) -> float:
    """p95 of what a cumulative histogram (as the summary gives it: [bound ms | None, count]) gained."""
    deltas = [
        (float("inf") if bound is None else float(bound), count - (before[i][1] if i < len(before) else 0))
        for i, (bound, count) in enumerate(now)
    ]
    return metrics.quantile_from_buckets(0.95, deltas)


class History:
    """Points of the last `span_s` seconds; `add` is pure arithmetic on the summaries it is given."""

    def __init__(self, span_s: float = HISTORY_S) -> None:
        self.span_s = span_s
        self.points: deque[Point] = deque()
        self._last: tuple[float, dict[str, Any]] | None = None

    def add(self, now: float, summary: dict[str, Any]) -> None:
        slim = {
            "requests": summary["requests"],
            "latency": summary["histograms"]["latency"],
            "ttft": summary["histograms"]["ttft"],
        }
        if self._last is not None and now > self._last[0]:
            then, prev = self._last
            self.points.append(
                [
                    round(now, 1),
                    round((slim["requests"] - prev["requests"]) / (now - then), 2),
                    round(_window_p95(slim["latency"], prev["latency"]), 1),
                    round(_window_p95(slim["ttft"], prev["ttft"]), 1),
                    summary["stream_subscriptions"],
                ]
            )
        self._last = (now, slim)
        while self.points and self.points[0][0] < now - self.span_s:
            self.points.popleft()

    def as_list(self) -> list[Point]:
        return list(self.points)


HISTORY = History()  # this process's (every loop of it samples into one history; one sampler at a time)
_sampler: asyncio.Task[None] | None = None


async def _sample(clock: Callable[[], float]) -> None:
    while True:
        HISTORY.add(clock(), await asyncio.to_thread(metrics.summary))
        await asyncio.sleep(settings.DASHBOARD_HISTORY_INTERVAL_S)


def ensure_sampler(clock: Callable[[], float] = time.time) -> None:
    """Start this process's sampler on the running loop unless one runs."""
    global _sampler
    if _sampler is not None and not _sampler.done():
        return
    task = asyncio.get_running_loop().create_task(_sample(clock), name="dashboard-history")
    _sampler = task

    async def stop() -> None:
        task.cancel()
        # The loop is closing: the sampler's cancellation is what we asked for.
        with contextlib.suppress(asyncio.CancelledError):
            await task

    loopres.register(stop, stage=loopres.Stage.WORKER)
