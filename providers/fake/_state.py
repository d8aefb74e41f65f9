"""Configuration, fault queue and statistics of the fake provider server (no I/O)."""

from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from ._formats import Fault, parse_fault


@dataclass(slots=True)
class FakeConfig:
    """Server-wide defaults; each request may override them with X-Fake-* headers."""

    ttft_ms: float = 200.0  # before the first token
    tps: float = 50.0  # tokens per second; <= 0 sends every token at once
    tokens: int = 60  # reply length (capped by the request's max_tokens, which then ends in "length")
    fault: Fault | None = None  # applied to every model call (a queued fault or header wins)
    usage: bool = True  # report token usage (OpenAI: when the request asks for it); False omits it

    def update(self, changes: dict[str, Any]) -> None:
        """Apply the JSON fields of POST /_fake/config (validated; raises ValueError)."""
        unknown = set(changes) - {"ttft_ms", "tps", "tokens", "fault", "usage", "next_faults", "clear_faults"}
        if unknown:
            raise ValueError(f"unknown config fields: {', '.join(sorted(unknown))}")
        if "ttft_ms" in changes:
            self.ttft_ms = float(changes["ttft_ms"])
        if "tps" in changes:
            self.tps = float(changes["tps"])
        if "tokens" in changes:
            self.tokens = int(changes["tokens"])
        if "fault" in changes:
            self.fault = parse_fault(changes["fault"])
        if "usage" in changes:
            if not isinstance(changes["usage"], bool):
                raise ValueError("usage must be true or false")
            self.usage = changes["usage"]

    def to_json(self) -> dict[str, Any]:
        return {
            "ttft_ms": self.ttft_ms,
            "tps": self.tps,
            "tokens": self.tokens,
            "fault": str(self.fault) if self.fault else None,
            "usage": self.usage,
        }


@dataclass(slots=True)
class FakeStats:
    """Counters of what the server saw; `GET /_fake/stats` returns `to_json()`."""

    max_call_times: int = 10_000
    max_requests: int = 50
    calls: int = 0  # model calls (chat/completions and messages), faults included
    calls_by_path: Counter[str] = field(default_factory=Counter)
    concurrent: int = 0  # responses being sent right now
    max_concurrent: int = 0
    completed: int = 0  # responses sent to their normal end
    client_disconnects: int = 0  # the client closed the connection before the end
    server_aborts: int = 0  # connections closed on purpose (drop, disconnect_after)
    faults: Counter[str] = field(default_factory=Counter)
    # time.monotonic() at each call's arrival (system-wide on Linux, so comparable across processes).
    call_times: deque[float] = field(default_factory=deque)
    requests: deque[dict[str, Any]] = field(default_factory=deque)  # the latest request bodies

    def record_call(self, path: str, headers: dict[str, str], body: Any, fault: Fault | None) -> None:
        self.calls += 1
        self.calls_by_path[path] += 1
        if fault is not None:
            self.faults[fault.kind] += 1
        self.call_times.append(time.monotonic())
        self.requests.append({"path": path, "headers": headers, "body": body})
        while len(self.call_times) > self.max_call_times:
            self.call_times.popleft()
        while len(self.requests) > self.max_requests:
            self.requests.popleft()

    def to_json(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "calls_by_path": dict(self.calls_by_path),
            "concurrent": self.concurrent,
            "max_concurrent": self.max_concurrent,
            "completed": self.completed,
            "client_disconnects": self.client_disconnects,
            "server_aborts": self.server_aborts,
            "faults": dict(self.faults),
            "call_times": list(self.call_times),
            "requests": list(self.requests),
        }


class FakeState:
    """Everything the server remembers; `reset()` returns to the startup defaults."""

    def __init__(self, defaults: FakeConfig, *, max_requests: int = 50) -> None:
        self._defaults = defaults
        self._max_requests = max_requests
        self.config = FakeConfig(
            defaults.ttft_ms, defaults.tps, defaults.tokens, defaults.fault, defaults.usage
        )
        self.next_faults: deque[Fault | None] = deque()
        self.stats = FakeStats(max_requests=max_requests)

    def reset(self) -> None:
        d = self._defaults
        self.config = FakeConfig(d.ttft_ms, d.tps, d.tokens, d.fault, d.usage)
        self.next_faults.clear()
        self.stats = FakeStats(max_requests=self._max_requests)

    def configure(self, changes: dict[str, Any]) -> dict[str, Any]:
        """POST /_fake/config: validate everything first, so a bad field changes nothing."""
        queued = [parse_fault(spec) for spec in changes.get("next_faults") or ()]
        config = FakeConfig(
            self.config.ttft_ms, self.config.tps, self.config.tokens, self.config.fault, self.config.usage
        )
        config.update(changes)
        self.config = config
        if changes.get("clear_faults"):
            self.next_faults.clear()
        self.next_faults.extend(queued)
        return self.describe()

    def describe(self) -> dict[str, Any]:
        return {**self.config.to_json(), "next_faults": [str(f) if f else None for f in self.next_faults]}

    def pick_fault(self, header: str | None) -> Fault | None:
        """The fault of one model call: X-Fake-Fault header, else the next queued one, else the default."""
        if header is not None:
            return parse_fault(header)
        if self.next_faults:
            return self.next_faults.popleft()
        return self.config.fault
