"""The suite's table from the figures benchmarks.run collected: one row per requirement, the verdict from
the measured figure against the bar (benchmarks.verdict). A step that crashed leaves its rows FAIL with
"not measured"."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from benchmarks.verdict import Row, row

NAN = float("nan")
NOT_MEASURED = "not measured"


def _get(results: dict[str, Any], *path: str) -> Any:
    node: Any = results
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def _num(value: Any) -> float:
    return float(value) if isinstance(value, int | float) else NAN


def _shown(text: Callable[[], str], *figures: Any) -> str:
    """How a row's figure reads: `text()` when every figure it shows was measured (neither None nor NaN),
    else "not measured". `text` runs only then, so it may read fields that a crashed step left out."""
    if any(f is None or (isinstance(f, float) and math.isnan(f)) for f in figures):
        return NOT_MEASURED
    return text()


def _burst_rows(b: dict[str, Any] | None, what: str) -> list[Row]:
    got = b or {}
    rate = _num(got.get("success_rate"))
    calls, rows = got.get("provider_calls"), got.get("rows")
    shown = _shown(lambda: f"{got['ok']}/{got['n']} ({rate * 100:.1f} %)", b)
    return [
        row(f"burst: {what}", "100 % success", ">=", 1.0, rate, shown),
        row(
            f"provider calls for one burst ({what})", "1", "==", 1, _num(calls), _shown(lambda: str(calls), b)
        ),
        row(f"DB rows for one burst ({what})", "2", "==", 2, _num(rows), _shown(lambda: str(rows), b)),
    ]


def _follower_row(b: dict[str, Any], prov: float | None, what: str, *, front: bool = False) -> Row:
    """A burst's followers' end-to-end p95 over the provider's own latency. Through the front (nginx) the
    row also shows, and rests on, every send succeeding with one provider call."""
    ratio = _num(b.get("p95_follower_ratio"))

    def text() -> str:
        shown = f"{ratio:.3f}x ({b['p95_follower_s']:.3f} s / {prov:.3f} s)"
        return shown + f"; {b['ok']}/{b['n']} ok, {b.get('provider_calls')} call" if front else shown

    complete = not front or (b.get("ok") == b.get("n") and b.get("provider_calls") == 1)
    return row(
        f"end-to-end p95, followers, over the provider's own latency ({what})",
        "<= 1.05 x",
        "<=",
        1.05,
        ratio,
        _shown(text, prov or None, ratio),
        complete=complete,
    )


def _fanout_row(fan: dict[str, Any], fanout_k: int, label: str) -> Row:
    lag = _num(fan.get("lag_p99_ms"))
    connected, delivered, expected = fan.get("connected"), fan.get("delivered"), fan.get("expected")
    complete = bool(fan) and delivered == expected and connected == fanout_k
    shown = _shown(lambda: f"{lag:.1f} ms ({connected} connected, {delivered}/{expected} deltas)", lag)
    return row(label, "<= 250 ms", "<=", 250.0, lag, shown, complete=complete)


def rows_from(results: dict[str, Any], plan: Any, opts: Any) -> list[Row]:
    """The table; `plan` gives the sizes for the labels."""
    big_res = _get(results, "coalesce_on", "big")
    bursts = [
        ("small", f"{plan.small_n} identical sends, {plan.small_c} concurrent"),
        ("mid", f"{plan.mid_n} identical sends, all at once, {opts.processes} processes"),
        ("big", f"{plan.big_n} identical sends, all at once, {opts.processes} processes"),
    ]
    measured = {name: _get(results, "coalesce_on", name, "burst") for name, _ in bursts}
    out: list[Row] = []
    for name, what in bursts:
        out += _burst_rows(measured[name], what)

    done = [b for b in measured.values() if b is not None]
    sends, errors = sum(b["n"] for b in done), sum(b["errors"] for b in done)
    rate = errors / sends if sends else NAN
    out.append(
        row(
            "error rate",
            "0 %",
            "==",
            0.0,
            rate,
            _shown(lambda: f"{rate * 100:.2f} % ({errors} of {sends} sends)", rate),
        )
    )

    sequential = _get(results, "provider", "sequential_s")
    prov = _get(big_res or {}, "provider", "sequential_median_s") or (
        statistics.median(sequential) if sequential else None
    )
    out += [_follower_row(measured[name] or {}, prov, what) for name, what in bursts]

    found = results.get("search") or {}
    p95 = _num(found.get("p95_ms"))
    shown = _shown(
        lambda: (
            f"{p95:.1f} ms (p50 {found['p50_ms']:.1f} ms; {found['threads']} threads, {found['messages']} "
            f"messages, {found['queries']} queries of 1-2 words, PostgreSQL"
            + (
                f"; as 3-letter prefixes p95 {found['prefix3_p95_ms']:.1f} ms)"
                if "prefix3_p95_ms" in found
                else ")"
            )
        ),
        p95,
    )
    out.append(row("search p95 (GET /api/threads?q=)", "<= 50 ms", "<=", 50.0, p95, shown))

    pacer = results.get("pacer") or {}
    wait = _num(pacer.get("wait_p95_ms"))
    shown = _shown(
        lambda: (
            f"{wait:.2f} ms ({pacer['offered_rps']:g} rps offered, limit {pacer['offered_rps'] * 2:g}; "
            f"Redis, {pacer['processes']} processes, {pacer['admitted']} requests)"
        ),
        wait,
    )
    out.append(row("queue wait p95 at half the pacer limit", "<= 5 ms", "<=", 5.0, wait, shown))

    s = _get(results, "streaming", "summary") or {}
    ttft = _num(s.get("ttft_overhead_p95_ms"))
    shown = _shown(
        lambda: f"+{ttft:.1f} ms (p50 +{_num(s.get('ttft_overhead_p50_ms')):.1f} ms, n={plan.ttft_sends})",
        ttft,
    )
    out.append(row("TTFT p95 over the provider's TTFT", "<= +20 ms", "<=", 20.0, ttft, shown))

    cancel = _num(s.get("cancel_p95_ms"))
    closed = _get(results, "streaming", "cancel_client_disconnects")
    complete = s.get("cancelled") == plan.cancels and closed == plan.cancels
    shown = _shown(
        lambda: (
            f"{cancel:.1f} ms ({s.get('cancelled')}/{plan.cancels} cancelled, "
            f"{closed}/{plan.cancels} upstream closed)"
        ),
        cancel,
    )
    out.append(row("cancel p95", "<= 50 ms", "<=", 50.0, cancel, shown, complete=complete))

    runs = _get(results, "streaming", "runs") or [{}]
    out.append(_fanout_row(runs[0], plan.fanout_k, f"fan-out {plan.fanout_k} clients, p99 lag"))

    contrast = _get(results, "coalesce_off", "contrast", "burst")
    n = contrast["n"] if contrast else (opts.contrast_n or plan.contrast_n)
    calls = contrast.get("provider_calls") if contrast else None
    shown = _shown(
        lambda: (
            f"{calls} calls, {contrast['rows']} rows, {contrast['ok']}/{n} ok, p95 {contrast['p95_s']:.2f} s"
        ),
        contrast or None,
    )
    label = f"same burst ({n} sends) with COALESCE_ENABLED off, for contrast"
    out.append(row(label, "calls = N", "==", n, _num(calls), shown))
    return out + front_rows(results, plan, opts) + _usage_rows(results, plan)


def front_rows(results: dict[str, Any], plan: Any, opts: Any) -> list[Row]:
    """#21's deployment rows: the burst and the fan-out through nginx, and the rolling restart."""
    from benchmarks.restart_bench import restart_row_figure

    where = f"through nginx, {opts.processes} processes"
    prov = _get(results, "provider", "sequential_median_s")
    out = [
        _follower_row(
            _get(results, "front_bursts", name, "burst") or {},
            prov,
            f"{n} identical sends, {where}",
            front=True,
        )
        for name, n in (("mid", plan.mid_n), ("big", plan.big_n))
    ]
    fan = _get(results, "front_fanout") or {}
    out.append(_fanout_row(fan, plan.fanout_k, f"fan-out {plan.fanout_k} clients, p99 lag ({where})"))
    res = _get(results, "rolling_restart")
    if res and "crashed" not in res:
        bad, shown = restart_row_figure(res)
        n_viewers = res["viewers"]
    else:
        bad, shown, n_viewers = NAN, NOT_MEASURED, 100
    out.append(
        row(
            f"rolling restart ({n_viewers} viewers, each process restarted in turn {where})",
            "0 lost, 0 repeated, all equal",
            "==",
            0,
            bad,
            shown,
        )
    )
    return out


def _usage_rows(results: dict[str, Any], plan: Any) -> list[Row]:
    """Issue 19: the cost of a burst with coalescing on vs off, and the budget over-run."""
    on, off = results.get("cost_on") or {}, results.get("cost_off") or {}
    cost_on, cost_off = _num(_float(on.get("cost_usd"))), _num(_float(off.get("cost_usd")))
    # In Decimal: one call of 200 identical ones is exactly 1/200 of their cost, which floats miss.
    # Both must be measured: NaN, which a crashed step leaves, is truthy.
    both = not math.isnan(cost_on) and not math.isnan(cost_off) and cost_off != 0
    measured = float(Decimal(on["cost_usd"]) / Decimal(off["cost_usd"])) if both else NAN
    shown = _shown(
        lambda: (
            f"on ${cost_on:.6f} ({on['provider_calls']} call, {on['saved_calls']} saved, "
            f"${_float(on['saved_cost_usd']):.6f} saved) vs off ${cost_off:.6f} ({off['provider_calls']} calls): "
            f"{measured * 100:.2f} %"
        ),
        measured,
    )
    label = f"cost of a {plan.mid_n}-send burst, coalescing on vs off"
    out = [row(label, f"<= 1/{plan.mid_n} of off", "<=", 1 / plan.mid_n, measured, shown)]
    b = results.get("budget") or {}
    over = _num(b.get("overrun_calls"))
    shown = _shown(
        lambda: (
            f"{over:.2f} calls ({b['started']} of {b['sends']} started, {b['refused']} refused; "
            f"{b['spent_tokens']} tokens spent of {b['budget_tokens']})"
        ),
        over,
    )
    label = "budget over-run under 400 concurrent sends (budget: 50 calls)"
    out.append(row(label, "<= 1 call", "<=", 1.0, over, shown))
    return out


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def summary_lines(results: dict[str, Any]) -> list[str]:
    """What the verdicts rest on besides the table: the provider's own figures and the client's floor."""
    lines = []
    for name in ("small", "big"):
        res = _get(results, "coalesce_on", name) or {}
        p, f = res.get("provider"), res.get("floor")
        n = _get(res, "config", "n")
        if p:
            lines.append(
                f"provider direct ({n} at the burst's concurrency): sequential median {p['sequential_median_s']:.3f} s; "
                f"concurrent p50 {p['concurrent_p50_s']:.3f} s, p95 {p['concurrent_p95_s']:.3f} s"
            )
        if f:
            lines.append(
                f"load generator floor ({n} requests, fixed {f['delay_s']:.3f} s): p50 +{f['p50_over_ms']:.1f} ms, "
                f"p95 +{f['p95_over_ms']:.1f} ms ({f['p95_ratio']:.4f}x)"
            )
    direct = _get(results, "streaming", "direct_ttft_s")
    if direct:
        lines.append(
            f"provider TTFT measured directly: median {sorted(direct)[len(direct) // 2] * 1000:.1f} ms"
        )
    lines.append("Lighthouse (>= 95, mobile) is not part of this run: scripts/lighthouse.sh, in CI.")
    return lines
