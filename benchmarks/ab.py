"""Two checkouts' app side by side: `benchmarks.coalesce_bench` bursts against each in turn, A B A B ...

    .venv/bin/python -m benchmarks.ab --a . --b ../other --runs 6 -- --processes 2 --ttft-ms 300 \\
        --tps 50 --tokens 50 --n 1000 --k 1 --prewarm --database-url postgres://…/bench_coalesce \\
        --redis-url redis://127.0.0.1:6379/3

This checkout's coalesce_bench (`--no-contrast`) drives every run, with the app of `--a` or `--b`
(`--app-dir`: its daphne processes and migrations run from there, on this checkout's virtualenv), one after
the other on the same machine, so the two codes share its minutes: on a shared 2-core machine one
1000-send run's follower p95 moves by up to 0.1x from the next, more than most changes, and only the mean
of several paired runs says which code is faster. Prints each run's figures,
each code's mean, and the mean of the paired differences (B - A) with its standard error; writes JSON
(--out). A report, not a test: exits 0 either way (1 if a run fails).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks.coalesce_bench import ROOT, floor_ratio


@dataclass(frozen=True, slots=True)
class Figures:
    """One burst's figures that a change to the send path moves (coalesce_bench's JSON, flag on)."""

    p95_ratio: float  # follower p95 / the provider's own time
    floor: float  # the same N whole answers straight to the provider, p95 / the provider's time
    first_call_s: float  # the provider call after the first send
    after_gen_p95_s: float  # answered after the generation ended, p95
    cpu_ms: float  # the app processes' CPU over the burst, per send (steadier than any time)
    errors: int
    calls: int


FIELDS = ("p95_ratio", "floor", "first_call_s", "after_gen_p95_s", "cpu_ms")


def figures(result: dict[str, Any], n: int) -> Figures:
    """The figures of burst `n` in a coalesce_bench result."""
    on = result["runs"]["on"][str(n)]
    breakdown = on["breakdown"]
    return Figures(
        p95_ratio=on["p95_follower_ratio"],
        floor=floor_ratio(result["direct"], n),
        first_call_s=_number(breakdown["first_call_s"]),
        after_gen_p95_s=_number(breakdown["after_gen_p95_s"]),
        cpu_ms=_number(breakdown.get("cpu_app_per_request_ms")),
        errors=on["errors"],
        calls=on["provider_calls"],
    )


def _number(value: Any) -> float:
    return float("nan") if value is None else float(value)


def paired(a: list[float], b: list[float]) -> tuple[float, float]:
    """The mean of the differences b[i] - a[i] and its standard error (NaN with fewer than two pairs)."""
    diffs = [y - x for x, y in zip(a, b, strict=True)]
    if not diffs:
        return float("nan"), float("nan")
    mean = statistics.fmean(diffs)
    if len(diffs) < 2:
        return mean, float("nan")
    return mean, statistics.stdev(diffs) / math.sqrt(len(diffs))


def bench_command(checkout: Path, bench_args: list[str], out: Path) -> list[str]:
    """One coalesce_bench run (this checkout's) against `checkout`'s app."""
    return [
        sys.executable,
        "-m",
        "benchmarks.coalesce_bench",
        *bench_args,
        "--no-contrast",
        "--app-dir",
        str(checkout),
        "--out",
        str(out),
    ]


def run_once(checkout: Path, bench_args: list[str], out: Path) -> dict[str, Any]:
    """One burst against `checkout`'s app; coalesce_bench's JSON result."""
    cmd = bench_command(checkout, bench_args, out)
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not out.exists():
        raise RuntimeError(
            f"{' '.join(cmd)} failed in {checkout}:\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
        )
    loaded: dict[str, Any] = json.loads(out.read_text())
    return loaded


def burst_size(bench_args: list[str]) -> int:
    """The one burst size the runs are compared on (--n, coalesce_bench's default 200)."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--n", default="200")
    n, _ = p.parse_known_args(bench_args)
    sizes = n.n.split(",")
    if len(sizes) != 1:
        raise SystemExit("benchmarks.ab compares one burst size: give one --n")
    return int(sizes[0])


def table(rows: list[tuple[str, Figures]]) -> list[str]:
    lines = [
        f"{'run':8}{'p95/provider':>14}{'floor':>8}{'first call':>12}{'after gen p95':>15}{'CPU/send':>10}"
        f"{'errors':>8}{'calls':>7}"
    ]
    for label, f in rows:
        lines.append(
            f"{label:8}{f.p95_ratio:>13.3f}x{f.floor:>7.3f}x{f.first_call_s:>11.3f}s{f.after_gen_p95_s:>14.3f}s"
            f"{f.cpu_ms:>8.3f}ms{f.errors:>8}{f.calls:>7}"
        )
    return lines


def summary(a: list[Figures], b: list[Figures]) -> list[str]:
    lines = [f"{'':16}{'A mean':>10}{'B mean':>10}{'B - A (paired mean +- s.e.)':>32}"]
    for name in FIELDS:
        xs, ys = [getattr(f, name) for f in a], [getattr(f, name) for f in b]
        mean, se = paired(xs, ys)
        lines.append(
            f"{name:16}{statistics.fmean(xs):>10.3f}{statistics.fmean(ys):>10.3f}{mean:>+20.3f} +- {se:.3f}"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--a", type=Path, required=True, help="a checkout whose app runs (e.g. a worktree of main)"
    )
    p.add_argument("--b", type=Path, required=True, help="the other checkout")
    p.add_argument("--runs", type=int, default=6, help="runs of each, alternating (A first)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "ab.json")
    p.add_argument("bench_args", nargs=argparse.REMAINDER, help="-- then coalesce_bench's arguments")
    opts = p.parse_args(argv)
    bench_args = [a for a in opts.bench_args if a != "--"]
    n = burst_size(bench_args)
    checkouts = {"A": opts.a.resolve(), "B": opts.b.resolve()}
    print(
        f"benchmarks.ab: A={checkouts['A']} B={checkouts['B']} runs={opts.runs} n={n}: {' '.join(bench_args)}"
    )
    results: dict[str, list[Figures]] = {"A": [], "B": []}
    print(table([])[0], flush=True)  # each run's row follows as it ends
    with tempfile.TemporaryDirectory(prefix="bench-ab-") as tmp:
        try:
            for i in range(opts.runs):
                for name, checkout in checkouts.items():
                    f = figures(run_once(checkout, bench_args, Path(tmp) / f"{name}{i}.json"), n)
                    results[name].append(f)
                    print(table([(f"{name}{i + 1}", f)])[-1], flush=True)
        except RuntimeError as exc:
            print(exc, file=sys.stderr)
            return 1
    print()
    print("\n".join(table([(f"A{i + 1}", f) for i, f in enumerate(results["A"])])))
    print("\n".join(table([(f"B{i + 1}", f) for i, f in enumerate(results["B"])])[1:]))
    print()
    print("\n".join(summary(results["A"], results["B"])))
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "checkouts": {k: str(v) for k, v in checkouts.items()},
        "bench_args": bench_args,
        "runs": {k: [asdict(f) for f in v] for k, v in results.items()},
    }
    opts.out.write_text(json.dumps(payload, indent=2))
    print(f"\nwrote {opts.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
