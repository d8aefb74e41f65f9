"""Helpers shared by the benchmarks: percentiles, free ports, process CPU time, health checks."""

from __future__ import annotations

import asyncio
import os
import platform
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

# The reference provider of the status report's table (issue 9), used by `make bench` and as the
# default of the other benchmarks: every generation takes 0.3 + 200 / 50 = 4.3 s.
TTFT_MS, TPS, TOKENS = 300.0, 50.0, 200


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank) of `values`; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def process_cpu_seconds(pids: list[int]) -> float:
    """utime + stime so far of the processes `pids` (ones that have exited count 0)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


async def quiet(
    pids: list[int],
    *,
    window_s: float = 0.1,
    most_s: float = 5.0,
    cpu: Callable[[list[int]], float] = process_cpu_seconds,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> float:
    """Wait until the processes `pids` use no CPU over `window_s` (what earlier requests left them to
    finish is done), or `most_s` has passed; the seconds waited. A burst fired right after opening its
    connections met the tail of those requests: up to 0.25 s before its first send reached a handler."""
    if not pids:
        return 0.0
    start = clock()
    last = cpu(pids)
    while clock() - start < most_s:
        await sleep(window_s)
        used = cpu(pids)
        if used == last:
            break
        last = used
    return clock() - start


def healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def machine() -> dict[str, Any]:
    """What a result depends on besides the code: CPUs, Python, the load average when it started."""
    cpu = ""
    try:
        cpu = next(
            (
                ln.split(":", 1)[1].strip()
                for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if "model name" in ln
            ),
            "",
        )
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_start": os.getloadavg(),
    }
