"""The project's Prometheus metrics (prefix `chatapp_`) and the deployment-wide summary of /api/metrics.

Recording is a few small sync functions, cheap enough for the async hot path (a dict lookup and an
increment; in multiprocess mode the increment is a write into a memory-mapped file, no syscall):

    from ops import metrics
    metrics.request("ok"); metrics.coalesce("leader"); metrics.provider_call("openai", "ok")
    metrics.provider_attempt("openai", "provider_overloaded")   # each attempt, retries included
    metrics.observe_latency_ms(812.0); metrics.observe_ttft_ms(140.0)
    metrics.observe_queue_wait_ms(0.0); metrics.observe_cancel_ms(35.0)
    metrics.stream_subscriptions.inc() ... metrics.stream_subscriptions.dec()

Several processes: when `PROMETHEUS_MULTIPROC_DIR` is set (before the process starts; one directory
shared by every daphne process of the deployment, emptied when the deployment starts), prometheus_client
writes every value to per-process files there and `registry()` merges them, so /metrics (django-prometheus)
and /api/metrics count each request of each process exactly once. Without it each process reports only
itself, which is right for the embedded single-process `make run`.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import re
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import prometheus_client
from django.conf import settings
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess
from prometheus_client.samples import Sample

PREFIX = "chatapp_"

# Bucket bounds (seconds) shared by the four latency histograms. p95 figures are interpolated linearly
# inside a bucket (as PromQL's histogram_quantile does), so the error is at most one bucket's width:
# adjacent bounds differ by at most 1.5x from 1 ms to 30 s (then 2x-2.5x up to the 300 s ceiling, where
# provider total timeouts sit). 31 buckets x 4 histograms stays a small scrape.
BUCKETS_S: tuple[float, ...] = (
    0.001, 0.0015, 0.002, 0.003, 0.0045, 0.006, 0.009, 0.0135, 0.02, 0.03, 0.045, 0.06, 0.09, 0.135,
    0.2, 0.3, 0.45, 0.6, 0.9, 1.35, 2.0, 3.0, 4.5, 6.0, 9.0, 13.5, 20.0, 30.0, 60.0, 120.0, 300.0,
)  # fmt: skip

# Label values are closed sets: a typo or a new code must not create unbounded series.
REQUEST_OUTCOMES = ("ok", "error", "cancelled", "rejected")
COALESCE_ROLES = ("leader", "follower", "bypass")
PROVIDER_OUTCOMES = ("ok", "error", "cancelled", "timeout", "rate_limited")
# ProviderError codes that get their own provider outcome; any other code counts as "error".
_PROVIDER_CODE_OUTCOME = {"provider_timeout": "timeout", "provider_rate_limited": "rate_limited"}
OTHER = "other"

REQUESTS = Counter(
    PREFIX + "requests",
    "Chat sends (HTTP and WebSocket) by outcome: ok, error, cancelled, rejected (429/queue timeout).",
    ["outcome"],
)
COALESCE = Counter(PREFIX + "coalesce", "Sends by coalescing role: leader, follower, bypass.", ["role"])
PROVIDER_CALLS = Counter(
    PREFIX + "provider_calls", "Provider stream calls by provider and outcome.", ["provider", "outcome"]
)
# Every attempt stream_with_retries makes (calls x their retries): beside PROVIDER_CALLS it shows how
# much the retries multiply the upstream's load (behind a gateway that retries too, see docs/providers.md).
PROVIDER_ATTEMPTS = Counter(
    PREFIX + "provider_attempts",
    "Provider stream attempts, retries included, by provider and outcome.",
    ["provider", "outcome"],
)
LATENCY = Histogram(
    PREFIX + "request_latency_seconds", "Send to terminal event (done/cancelled/error).", buckets=BUCKETS_S
)
TTFT = Histogram(PREFIX + "ttft_seconds", "Send to first token from the provider.", buckets=BUCKETS_S)
QUEUE_WAIT = Histogram(
    PREFIX + "queue_wait_seconds", "Time a send waited for the pacer before its call.", buckets=BUCKETS_S
)
CANCEL = Histogram(PREFIX + "cancel_seconds", "Cancel request to the generation stopping.", buckets=BUCKETS_S)
# A burst's leader stops its process's reading of requests while on its way (core/intake.py).
INTAKE_HOLDS = Counter(
    PREFIX + "intake_holds",
    "Times a process stopped reading requests for a burst's leader, by how it ended: released, expired.",
    ["ended"],
)
INTAKE_HELD = Histogram(
    PREFIX + "intake_held_seconds", "How long each hold stopped a process's reading.", buckets=BUCKETS_S
)
# livesum: the open subscriptions of live processes (files of dead ones are dropped, see below).
stream_subscriptions = Gauge(
    PREFIX + "stream_subscriptions",
    "Open stream subscriptions (WebSocket viewers and SSE streams).",
    multiprocess_mode="livesum",
)
# liveall: one series per process (a `pid` label in multiprocess mode), so a process that has not
# picked up a change shows up instead of being averaged away.
FLAG_STATE = Gauge(
    PREFIX + "flag_enabled", "Effective value of each feature flag (1 on, 0 off).", ["flag"],
    multiprocess_mode="liveall",
)  # fmt: skip

# The histograms by their short name in the summary.
HISTOGRAMS = {
    "latency": "request_latency_seconds",
    "ttft": "ttft_seconds",
    "queue_wait": "queue_wait_seconds",
    "cancel": "cancel_seconds",
}

# Children created up front: every series exists (at 0) from the first scrape, so dashboards and rate()
# work before the first event, and the hot path skips the labels() lock.
_REQUESTS = {o: REQUESTS.labels(o) for o in (*REQUEST_OUTCOMES, OTHER)}
_COALESCE = {r: COALESCE.labels(r) for r in (*COALESCE_ROLES, OTHER)}
_INTAKE_HOLDS = {False: INTAKE_HOLDS.labels("released"), True: INTAKE_HOLDS.labels("expired")}
_PROVIDER_CALLS: dict[tuple[str, str], Any] = {}
_PROVIDER_ATTEMPTS: dict[tuple[str, str], Any] = {}


def _provider_child(provider: str, outcome: str, *, attempts: bool = False) -> Any:
    children, counter = (
        (_PROVIDER_ATTEMPTS, PROVIDER_ATTEMPTS) if attempts else (_PROVIDER_CALLS, PROVIDER_CALLS)
    )
    key = (provider, outcome)
    child = children.get(key)
    if child is None:
        child = children[key] = counter.labels(provider, outcome)
    return child


for _name in settings.PROVIDERS:
    for _outcome in PROVIDER_OUTCOMES:
        _provider_child(_name, _outcome)
        _provider_child(_name, _outcome, attempts=True)


# --- recording (hot path) ----------------------------------------------------------------------------


def request(outcome: str) -> None:
    """Count one finished send: 'ok', 'error', 'cancelled' or 'rejected'."""
    (_REQUESTS.get(outcome) or _REQUESTS[OTHER]).inc()


def coalesce(role: str) -> None:
    """Count one send by its coalescing role: 'leader', 'follower' or 'bypass'."""
    (_COALESCE.get(role) or _COALESCE[OTHER]).inc()


def _provider_labels(provider: str, outcome: str) -> tuple[str, str]:
    if provider not in settings.PROVIDERS:
        provider = OTHER
    if outcome not in PROVIDER_OUTCOMES:
        outcome = _PROVIDER_CODE_OUTCOME.get(outcome, "error")
    return provider, outcome


def provider_call(provider: str, outcome: str) -> None:
    """Count one provider call. `outcome`: 'ok', 'cancelled', or a ProviderError `code`."""
    _provider_child(*_provider_labels(provider, outcome)).inc()


def provider_attempt(provider: str, outcome: str) -> None:
    """Count one attempt of a provider call (each retry is one more), with `provider_call`'s outcomes."""
    _provider_child(*_provider_labels(provider, outcome), attempts=True).inc()


def observe_latency_ms(ms: float) -> None:
    LATENCY.observe(max(ms, 0.0) / 1000)


def intake_held(seconds: float, expired: bool) -> None:
    """One hold of the reading ended (core/intake.py's observer): by its leader, or by MAX_HOLD_S."""
    _INTAKE_HOLDS[expired].inc()
    INTAKE_HELD.observe(max(seconds, 0.0))


def observe_ttft_ms(ms: float) -> None:
    TTFT.observe(max(ms, 0.0) / 1000)


def observe_queue_wait_ms(ms: float) -> None:
    QUEUE_WAIT.observe(max(ms, 0.0) / 1000)


def observe_cancel_ms(ms: float) -> None:
    CANCEL.observe(max(ms, 0.0) / 1000)


def flag_states(values: Mapping[str, bool]) -> None:
    """Publish this process's effective flags (called by ops.flags when they change)."""
    for name, on in values.items():
        FLAG_STATE.labels(name).set(1 if on else 0)


# --- usage and cost (billing/) ----------------------------------------------------------------------

TOKENS = Counter(
    PREFIX + "tokens", "Tokens of provider calls by connection, model and kind (input, output).",
    ["connection", "model", "kind"],
)  # fmt: skip
COST_USD = Counter(
    PREFIX + "cost_usd", "Cost of provider calls in USD by connection and model.", ["connection", "model"]
)
SAVED_CALLS = Counter(PREFIX + "coalesce_saved_calls", "Provider calls coalescing saved (one per follower).")
SAVED_COST_USD = Counter(PREFIX + "coalesce_saved_cost_usd", "USD coalescing saved (the calls followed).")


# Every configured connection's model at 0 from the first scrape (rate() and the dashboards work before
# the first call).
for _name, _config in settings.PROVIDERS.items():
    _model = str(_config.get("model", ""))
    COST_USD.labels(_name, _model)
    for _kind in ("input", "output"):
        TOKENS.labels(_name, _model, _kind)


def usage(connection: str, model: str, *, input_tokens: int, output_tokens: int, cost_usd: float) -> None:
    """Count one charged call's tokens and cost (models are the operator's, a bounded set)."""
    TOKENS.labels(connection, model, "input").inc(input_tokens)
    TOKENS.labels(connection, model, "output").inc(output_tokens)
    COST_USD.labels(connection, model).inc(cost_usd)


def coalesce_saved(*, calls: int = 0, cost_usd: float = 0.0) -> None:
    """Count calls saved by coalescing (when a follower joins) and their cost (once the call's is known)."""
    if calls:
        SAVED_CALLS.inc(calls)
    if cost_usd:
        SAVED_COST_USD.inc(cost_usd)


# --- reading ---------------------------------------------------------------------------------------


def multiprocess_dir() -> str:
    """The shared directory of multiprocess mode, or '' (each process reports only itself)."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")


def registry() -> CollectorRegistry:
    """What /metrics and /api/metrics read: the merge of every process's files, or this process."""
    path = multiprocess_dir()
    if not path:
        return prometheus_client.REGISTRY
    merged = CollectorRegistry()
    multiprocess.MultiProcessCollector(merged, path=path)
    return merged


def samples(reg: CollectorRegistry) -> list[Sample]:
    """Every sample of `reg` (reads files in multiprocess mode: call from a thread, not the loop)."""
    return [s for family in reg.collect() for s in family.samples]


def quantile_from_buckets(q: float, buckets: Sequence[tuple[float, float]]) -> float:
    """The q-quantile estimated from cumulative (upper bound, count) buckets ending with +Inf.

    Linear interpolation inside the bucket holding the rank, as PromQL's histogram_quantile; a rank in
    the +Inf bucket answers the highest finite bound. 0.0 when there are no observations."""
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return 0.0
    rank = q * ordered[-1][1]
    lower, below = 0.0, 0.0
    for bound, cumulative in ordered:
        if cumulative >= rank and cumulative > below:
            if bound == float("inf"):
                return lower
            return lower + (bound - lower) * (rank - below) / (cumulative - below)
        lower, below = bound, cumulative
    return lower


def _histogram_buckets(all_samples: Iterable[Sample], name: str) -> list[tuple[float, float]]:
    sums: dict[float, float] = defaultdict(float)
    for s in all_samples:
        if s.name == name + "_bucket":
            sums[float(s.labels["le"])] += s.value
    return list(sums.items())


def _by_label(all_samples: Iterable[Sample], name: str, *labels: str) -> dict[tuple[str, ...], float]:
    out: dict[tuple[str, ...], float] = defaultdict(float)
    for s in all_samples:
        if s.name == name:
            out[tuple(s.labels.get(label, "") for label in labels)] += s.value
    return out


def _buckets_ms(buckets: list[tuple[float, float]]) -> list[list[float | None]]:
    return [
        [None if bound == float("inf") else round(bound * 1000, 3), count] for bound, count in sorted(buckets)
    ]


def _p95_ms(all_samples: Sequence[Sample], name: str) -> float:
    return round(quantile_from_buckets(0.95, _histogram_buckets(all_samples, name)) * 1000, 1)


def _provider_calls(all_samples: Sequence[Sample]) -> dict[str, dict[str, int]]:
    """Provider calls by provider, then outcome (outcomes never seen left out)."""
    calls: dict[str, dict[str, int]] = defaultdict(dict)
    for (provider, outcome), v in _by_label(
        all_samples, PREFIX + "provider_calls_total", "provider", "outcome"
    ).items():
        if v:
            calls[provider][outcome] = int(v)
    return dict(calls)


def _flags_by_process(all_samples: Sequence[Sample]) -> dict[str, dict[str, bool]]:
    flags: dict[str, dict[str, bool]] = defaultdict(dict)
    for s in all_samples:
        if s.name == PREFIX + "flag_enabled":
            flags[s.labels.get("pid", str(os.getpid()))][s.labels["flag"]] = s.value >= 1
    return dict(flags)


def summary(reg: CollectorRegistry | None = None) -> dict[str, Any]:
    """The figures of docs/api.md's metrics summary (without "flags"), for every process of the deployment.

    Sync and file-reading in multiprocess mode: async callers run it in a thread."""
    all_samples = samples(reg or registry())
    outcomes = {k[0]: int(v) for k, v in _by_label(all_samples, PREFIX + "requests_total", "outcome").items()}
    roles = {k[0]: int(v) for k, v in _by_label(all_samples, PREFIX + "coalesce_total", "role").items()}
    calls = _provider_calls(all_samples)
    total = sum(outcomes.values())
    # Failures are everything that neither completed nor was stopped on purpose by its user.
    failed = total - outcomes.get("ok", 0) - outcomes.get("cancelled", 0)
    http_by_view = {
        k[0]: int(v)
        for k, v in _by_label(
            all_samples, "django_http_responses_total_by_status_view_method_total", "view"
        ).items()
    }
    subscriptions = sum(_by_label(all_samples, PREFIX + "stream_subscriptions").values())
    return {
        "coalesce": {
            "leaders": roles.get("leader", 0),
            "followers": roles.get("follower", 0),
            "bypass": roles.get("bypass", 0),
        },
        "provider_calls": sum(sum(by.values()) for by in calls.values()),
        "requests": total,
        "error_rate": round(failed / total, 4) if total else 0.0,
        **{f"{key}_p95_ms": _p95_ms(all_samples, PREFIX + name) for key, name in HISTOGRAMS.items()},
        "requests_by_outcome": {o: n for o, n in outcomes.items() if n},
        "provider_calls_by_provider": dict(calls),
        "stream_subscriptions": int(subscriptions),
        "http_responses": sum(http_by_view.values()),
        "http_responses_by_view": http_by_view,
        "flags_by_process": _flags_by_process(all_samples),
        # Cumulative buckets [upper bound in ms (null: +Inf), count]: the dashboard derives windowed
        # percentiles from the difference of two polls.
        "histograms": {
            key: _buckets_ms(_histogram_buckets(all_samples, PREFIX + name))
            for key, name in HISTOGRAMS.items()
        },
        "aggregation": "multiprocess" if multiprocess_dir() else "process",
        "generated_at": round(time.time(), 3),
    }


# --- multiprocess bookkeeping ---------------------------------------------------------------------------

_LIVE_FILE = re.compile(r"gauge_live\w+?_(\d+)\.db$")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def _drop_dead_processes(path: str) -> None:
    """Forget the live gauges of processes that died without cleaning up (killed, crashed): otherwise a
    restarted deployment would keep adding their last subscription counts and flag states."""
    for file in glob.glob(os.path.join(path, "gauge_live*.db")):
        match = _LIVE_FILE.search(os.path.basename(file))
        if match and not _pid_alive(int(match.group(1))):
            with contextlib.suppress(OSError):  # another process starting now may remove it first
                multiprocess.mark_process_dead(int(match.group(1)), path)


if multiprocess_dir():
    _drop_dead_processes(multiprocess_dir())
    # A clean exit (daphne's SIGTERM) removes this process's live gauges right away.
    atexit.register(multiprocess.mark_process_dead, os.getpid(), multiprocess_dir())
