"""`make bench`: the Phase-1 requirement table, measured in one run (issue 9).

    .venv/bin/python -m benchmarks.run            # the full suite (about 4 minutes on 2 cores)
    .venv/bin/python -m benchmarks.run --quick    # smaller N: a smoke test

Starts the fake provider (TTFT 300 ms, 50 tokens/s, 200 tokens) in its own process, a fresh PostgreSQL
database (`bench_<pid>`, dropped at the end) and Redis db 8 under the key prefix `bench` (cleaned before
and after), migrates, and runs chatapp as two daphne processes. Then, each step reusing a benchmark: the
provider's own latency, the bursts (benchmarks.burst), TTFT, cancel and fan-out (benchmarks.fanout_bench),
the same burst again after switching COALESCE_ENABLED off as staff would in admin, and the pacer at half
its limit (benchmarks.pacer_bench). Prints one table with
PASS/FAIL computed from the figures (benchmarks.verdict), writes bench-results/<mode>-<time>.json and
stops everything it started, also on Ctrl-C. Exit status: 0 when every step ran (whatever the
verdicts: the machine is shared and noisy), 1 when a step crashed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # runnable as `python benchmarks/run.py` too
    sys.path.insert(0, str(ROOT))
from benchmarks import burst, fanout_bench, pacer_bench, restart_bench, usage_bench  # noqa: E402
from benchmarks._common import TOKENS, TPS, TTFT_MS, machine, pct  # noqa: E402
from benchmarks.deploy import Deployment, SubprocessFakeServer, bench_env, redis_clean, temporary_database  # noqa: E402
from benchmarks.report import rows_from, summary_lines  # noqa: E402
from benchmarks.verdict import render  # noqa: E402

PREFIX = "bench"
METRICS_TOKEN = fanout_bench.METRICS_TOKEN  # what its metrics read-back sends


@dataclass(frozen=True)
class Plan:
    name: str
    small_n: int = 50
    small_c: int = 10
    mid_n: int = 200  # the coalescing issue's burst: 200 identical sends at once
    big_n: int = 1000
    contrast_n: int = 1000
    fanout_k: int = 1000
    ttft_sends: int = 20
    cancels: int = 20
    pacer_rps: float = 50.0
    pacer_s: float = 4.0
    k: int = 5  # sequential direct provider requests (the latency denominator)
    tokens: int = TOKENS  # reply length; the quick run's shorter replies keep it under a minute


FULL = Plan("full")
QUICK = Plan(
    "quick",
    mid_n=100,
    big_n=200,
    contrast_n=50,
    fanout_k=100,
    ttft_sends=10,
    cancels=10,
    pacer_s=2.0,
    k=2,
    tokens=40,
)


def app_env(fake_url: str, db_url: str, redis_url: str) -> dict[str, str]:
    """The deployment's environment (deploy.bench_env) with the fake, the database and Redis."""
    env = bench_env(prefix=PREFIX, metrics_token=METRICS_TOKEN)
    env |= {"OPENAI_BASE_URL": fake_url, "DATABASE_URL": db_url, "REDIS_URL": redis_url}
    # Usage rows: gpt-4o-mini's list prices, and a budget reservation as long as the fake's replies.
    return env | {"MODEL_PRICES": '{"openai": ["0.15", "0.60"]}', "BUDGET_RESERVE_OUTPUT_TOKENS": str(TOKENS)}


@contextlib.contextmanager
def environ(**values: str) -> Iterator[None]:
    """Set os.environ entries for child processes started meanwhile (pacer_bench's workers set up
    Django from it), restored afterwards."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class Suite:
    """The steps, in order; each records its figures (or its crash) in `self.results`."""

    def __init__(self, plan: Plan, opts: argparse.Namespace, fake: SubprocessFakeServer, tmp: Path) -> None:
        self.plan, self.opts, self.fake, self.tmp = plan, opts, fake, tmp
        self.results: dict[str, Any] = {}
        self.crashed: list[str] = []
        self.env: dict[str, str] = {}
        self.token = ""

    def step(self, name: str, fn: Any, *args: Any) -> Any:
        print(f"-- {name} ...", flush=True)
        t = time.monotonic()
        try:
            self.results[name] = fn(*args)
        except Exception as exc:
            self.crashed.append(name)
            self.results[name] = {"crashed": f"{type(exc).__name__}: {exc}"}
            traceback.print_exc()
        print(f"   {name}: {time.monotonic() - t:.1f} s", flush=True)
        return self.results[name]

    def burst(self, urls: list[str], label: str, n: int, c: int, **kw: Any) -> dict[str, Any]:
        cfg = burst.BurstConfig(urls=urls, token=self.token, n=n, concurrency=c, label=label, **kw)
        cfg.provider_url, cfg.k = self.fake.openai_base_url, self.plan.k
        res = asyncio.run(burst.run_burst(cfg))
        print(burst.report(res), flush=True)
        return res

    def start(self, dep: Deployment, coalesce: bool) -> list[str]:
        """Start the deployment with the flag on or off, and warm it up: every process imports, connects
        to the database, Redis and the provider once (short replies: their length does not matter)."""
        urls = dep.start(COALESCE_ENABLED="true" if coalesce else "false")
        self.fake.configure(tps=0, tokens=5)
        try:
            self.burst(urls, "warm-up", len(urls), 0, identical=False, floor=False, measure_provider=False)
        finally:
            self.fake.reset()
        return urls

    def on_deployment(self, coalesce: bool, steps: Sequence[tuple[str, Callable[[Deployment], Any]]]) -> None:
        dep = Deployment(self.env, self.tmp, processes=self.opts.processes, label=f"coalesce-{coalesce}")
        try:
            self.step(f"start_{'on' if coalesce else 'off'}", self.start, dep, coalesce)
            if dep.urls:
                for name, fn in steps:
                    self.step(name, fn, dep)
        finally:
            dep.stop()

    def bursts_on(self, dep: Deployment) -> dict[str, Any]:
        # The provider's own latency is measured once (sequential), before; the floor and the provider at
        # the burst's concurrency are measured with the all-at-once burst, where they matter.
        plan, base = self.plan, self.results["provider"]["sequential_s"]
        quiet = {"floor": False, "measure_provider": False, "baseline_s": base, "quiet_pids": dep.pids}
        return {
            "small": self.burst(dep.urls, "small", plan.small_n, plan.small_c, **quiet),
            "mid": self.burst(dep.urls, "mid", plan.mid_n, 0, **quiet),
            "big": self.burst(dep.urls, "big", plan.big_n, 0, baseline_s=base, quiet_pids=dep.pids),
        }

    def set_flag(self, dep: Deployment, name: str, enabled: bool) -> float:
        """Save the flag as staff would in admin (a FeatureFlag row, then `flags_changed()`), and wait until
        every process answers with it; how long that took after the save (seconds)."""
        code = (
            "from ops.models import FeatureFlag; from ops.flags import flags_changed; "
            f"FeatureFlag.objects.update_or_create(name={name!r}, defaults={{'enabled': {enabled}}}); "
            "flags_changed()"
        )
        dep.manage("shell", "-c", code)
        saved, deadline = time.monotonic(), time.monotonic() + 10
        auth = {"Authorization": f"Bearer {METRICS_TOKEN}"}
        for url in dep.urls:  # one URL per process
            while (
                httpx.get(f"{url}/api/metrics", headers=auth, timeout=10).json()["flags"].get(name) != enabled
            ):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{url} still has {name}={not enabled} 10 s after the change")
                time.sleep(0.1)
        return time.monotonic() - saved

    def bursts_off(self, dep: Deployment) -> dict[str, Any]:
        """The contrast: the same deployment with COALESCE_ENABLED switched off (as in admin)."""
        took = self.set_flag(dep, "COALESCE_ENABLED", False)
        print(f"   COALESCE_ENABLED=false on every process {took:.2f} s after the save", flush=True)
        base = self.results["provider"]["sequential_s"]
        n = self.opts.contrast_n or self.plan.contrast_n
        quiet = {"floor": False, "measure_provider": False, "baseline_s": base, "quiet_pids": dep.pids}
        return {"flag_applied_s": took, "contrast": self.burst(dep.urls, "contrast", n, 0, **quiet)}

    def cost(self, dep: Deployment) -> dict[str, Any]:
        """What a mid-size burst costs (and saves) with the deployment's COALESCE_ENABLED as it is."""
        label = f"cost-{dep.label}-{len(self.results)}"
        return usage_bench.cost_burst(
            dep.urls, self.token, self.fake.openai_base_url, n=self.plan.mid_n, label=label
        )

    def budget(self, dep: Deployment) -> dict[str, Any]:
        return usage_bench.budget_overrun(dep, dep.urls, self.token, self.fake.openai_base_url)

    def provider(self) -> dict[str, Any]:
        """The provider's own latency: k sequential streams straight to it, after a warm-up."""
        cfg = burst.BurstConfig(urls=[], token="", n=0, provider_url=self.fake.openai_base_url, k=self.plan.k)
        seq = asyncio.run(burst.provider_sequential(cfg))
        return {"sequential_s": seq, "sequential_median_s": statistics.median(seq)}

    def pacer(self) -> dict[str, Any]:
        """pacer_bench's scenario at half the limit: Redis backend, two processes, Poisson arrivals."""
        ns = argparse.Namespace(
            rps=self.plan.pacer_rps,
            burst=5,
            max_wait=1.0,
            duration=self.plan.pacer_s,
            redis_url=self.opts.redis_url,
        )
        with environ(DEBUG="true", DJANGO_SETTINGS_MODULE="chatapp.settings"):
            return pacer_bench.run_scenario("redis", 2, 0.5, ns)

    def fanout_opts(self) -> argparse.Namespace:
        return argparse.Namespace(
            app="chatapp.asgi:application",
            ks=[self.plan.fanout_k],
            ttft_ms=TTFT_MS,
            tps=TPS,
            tokens=self.plan.tokens,
            sends=1,
            client_procs=4,
            clients_per_proc=250,
            ttft_sends=self.plan.ttft_sends,
            cancels=self.plan.cancels,
        )

    def streaming(self, dep: Deployment) -> dict[str, Any]:
        """fanout_bench's measurements on the deployment: K-viewer fan-out, TTFT, cancel."""
        ns = self.fanout_opts()
        # The provider's own TTFT, as the app's probes see it (short replies: only the first token counts).
        self.fake.configure(ttft_ms=TTFT_MS, tps=0, tokens=20)
        direct = asyncio.run(fanout_bench.direct_ttft(self.fake, self.plan.ttft_sends))
        self.fake.reset()
        fanout_bench.raise_nofile()
        try:
            res = fanout_bench.measure_streaming(dep, "streaming", self.token, self.fake, ns)
        finally:
            self.fake.reset()
        res["direct_ttft_s"] = direct
        res["summary"] = fanout_bench.summarise_mode(res, pct(direct, 50))
        for run in res.get("runs", []):  # raw samples are large: keep the figures
            for send in run["sends"]:
                send["lag_ms_count"] = len(send.pop("lag_ms"))
                send["e2e_ms_count"] = len(send.pop("e2e_ms"))
        return res

    def run(self, db_url: str) -> None:
        self.env = app_env(self.fake.openai_base_url, db_url, self.opts.redis_url)
        self.token = Deployment(self.env, self.tmp).prepare()
        if "crashed" in self.step("provider", self.provider):
            return
        steps = [
            ("coalesce_on", self.bursts_on),
            ("cost_on", self.cost),
            ("streaming", self.streaming),
            ("coalesce_off", self.bursts_off),
            ("cost_off", self.cost),
            ("budget", self.budget),
        ]
        self.on_deployment(True, steps)
        self.on_front()
        self.step("pacer", self.pacer)
        self.step("search", self.search, db_url)

    def search(self, db_url: str) -> dict[str, Any]:
        """Search p95 (#18) on this run's database, in its own process (benchmarks/search_bench.py)."""
        import subprocess

        size = ["--threads", "1000", "--messages", "20000"] if self.opts.quick else []
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.search_bench", "--database-url", db_url, *size],
            cwd=ROOT,
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=900,
            check=True,
        )
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"   search: {result}", flush=True)
        return result

    # --- through nginx (#21) ------------------------------------------------------------------------------

    def on_front(self) -> None:
        """The deployment rows: nginx in front of the processes (benchmarks/restart_bench.py)."""
        front = restart_bench.Front(self.env, self.tmp, processes=self.opts.processes)
        try:
            self.step("front_start", self.start_front, front)
            if front.nginx.process is not None:
                self.step("front_bursts", self.bursts_front, front)
                self.step("front_fanout", self.fanout_front, front)
                self.step("rolling_restart", self.rolling_restart, front)
        finally:
            front.stop()

    def start_front(self, front: restart_bench.Front) -> list[str]:
        # The contrast step switched coalescing off in the database: on again before the processes start.
        code = (
            "from ops.models import FeatureFlag; FeatureFlag.objects.filter(name='COALESCE_ENABLED').delete()"
        )
        Deployment(self.env, self.tmp).manage("shell", "-c", code)
        urls = front.start(COALESCE_ENABLED="true")
        self.fake.configure(tps=0, tokens=5)
        try:
            for _ in front.apps:  # nginx spreads them: each process connects once
                self.burst(urls, "warm-up", 2, 0, identical=False, floor=False, measure_provider=False)
        finally:
            self.fake.reset()
        return urls

    def bursts_front(self, front: restart_bench.Front) -> dict[str, Any]:
        base = self.results["provider"]["sequential_s"]
        quiet = {"floor": False, "measure_provider": False, "baseline_s": base, "quiet_pids": front.pids}
        return {
            "mid": self.burst(front.urls, "nginx-mid", self.plan.mid_n, 0, **quiet),
            "big": self.burst(front.urls, "nginx-big", self.plan.big_n, 0, **quiet),
        }

    def fanout_front(self, front: restart_bench.Front) -> dict[str, Any]:
        fanout_bench.raise_nofile()
        try:
            app: Any = front  # looks like a Deployment where fanout_run looks (urls, pids)
            run = fanout_bench.fanout_run(app, self.fake, self.token, self.plan.fanout_k, self.fanout_opts())
        finally:
            self.fake.reset()
        for send in run["sends"]:
            send["lag_ms_count"] = len(send.pop("lag_ms"))
            send["e2e_ms_count"] = len(send.pop("e2e_ms"))
        return run

    def rolling_restart(self, front: restart_bench.Front) -> dict[str, Any]:
        # A reply long enough to outlast two restarts (12 s at 50 tokens/s).
        self.fake.configure(tokens=600)
        try:
            res = asyncio.run(restart_bench.rolling_restart(front, self.token))
        finally:
            self.fake.reset()
        print(f"   rolling restart: {restart_bench.restart_row_figure(res)[1]}", flush=True)
        return res


def keep_logs(tmp: Path, dest: Path) -> None:
    """The daphne logs, kept next to the JSON (the temporary directory goes): a 500 has its traceback."""
    logs = sorted(tmp.glob("*.log"))
    if logs:
        dest.mkdir(parents=True, exist_ok=True)
        for log in logs:
            shutil.copy(log, dest / log.name)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument("--quick", action="store_true", help="smaller N (a smoke test, about a minute)")
    p.add_argument("--contrast-n", type=int, default=0, help="N of the flag-off burst (default: the plan's)")
    p.add_argument("--processes", type=int, default=2, help="daphne processes")
    p.add_argument("--postgres", default="postgres://postgres@127.0.0.1:5432", help="server for the temp db")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/8")
    p.add_argument("--out-dir", default=str(ROOT / "bench-results"))
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    plan = QUICK if opts.quick else FULL
    started = time.monotonic()
    host = machine()
    print(f"make bench ({plan.name}): {asdict(plan)}\nmachine: {host}", flush=True)
    suite: Suite | None = None
    out_dir = Path(opts.out_dir)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    logs_dir = out_dir / f"{plan.name}-{stamp}-logs"
    try:
        with (
            SubprocessFakeServer(ttft_ms=TTFT_MS, tps=TPS, tokens=plan.tokens) as fake,
            tempfile.TemporaryDirectory(prefix="bench-") as tmpdir,
            temporary_database(opts.postgres, f"bench_{os.getpid()}") as db_url,
        ):
            redis_clean(opts.redis_url, PREFIX)
            try:
                suite = Suite(plan, opts, fake, Path(tmpdir))
                suite.run(db_url)
            finally:
                redis_clean(opts.redis_url, PREFIX)
                keep_logs(Path(tmpdir), logs_dir)
    except KeyboardInterrupt:
        print("interrupted: everything started was stopped", file=sys.stderr)
        return 130
    if suite is None:
        return 1
    host["loadavg_end"] = os.getloadavg()
    elapsed = time.monotonic() - started
    rows = rows_from(suite.results, plan, opts)
    print("\n" + "\n".join(summary_lines(suite.results)))
    print("\n" + render(rows))
    print(
        f"\n{plan.name} run, {elapsed:.0f} s; machine: {host['nproc']} CPUs ({host['cpu']}), "
        f"Python {host['python']}, load average {host['loadavg_start'][0]:.2f} at start, "
        f"{host['loadavg_end'][0]:.2f} at end"
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{plan.name}-{stamp}.json"
    payload = {
        "plan": asdict(plan),
        "machine": host,
        "elapsed_s": elapsed,
        "table": [asdict(r) for r in rows],
        "crashed": suite.crashed,
        "results": suite.results,
    }
    out.write_text(json.dumps(payload, indent=2, default=str))
    print(f"wrote {out}")
    if suite.crashed:
        print(f"steps that crashed: {', '.join(suite.crashed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
