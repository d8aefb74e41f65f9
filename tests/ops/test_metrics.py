"""Metrics: recording, percentiles, multiprocess aggregation, /metrics, /api/metrics, the dashboard, docs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import prometheus_client
import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient, Client
from prometheus_client import CollectorRegistry, multiprocess

from core import later
from ops import metrics
from ops.views import peer_allowed
from tests.servers import parse_prometheus, sample_sum

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "metrics.md").read_text()
GRAFANA = ROOT / "docs" / "grafana-dashboard.json"
METRICS_TOKEN = "m-token-123"
SCRAPER = {"Authorization": f"Bearer {METRICS_TOKEN}"}


def grafana_metric_names(text: str) -> set[str]:
    """Every metric name the dashboard JSON mentions (panel targets and template queries)."""
    return set(re.findall(r"\b((?:chatapp|django)_[a-z0-9_]+)", text))


# --- percentiles -------------------------------------------------------------------------------------

INF = float("inf")


@pytest.mark.parametrize(
    ("q", "buckets", "expected"),
    [
        (0.95, [], 0.0),
        (0.95, [(0.1, 0), (INF, 0)], 0.0),
        (0.5, [(0.1, 10), (INF, 10)], 0.05),  # all in the first bucket: interpolate from 0
        (0.95, [(0.1, 0), (0.2, 100), (INF, 100)], 0.195),
        (0.5, [(0.1, 50), (0.2, 100), (INF, 100)], 0.1),
        (0.95, [(0.1, 50), (0.2, 90), (INF, 100)], 0.2),  # the rank is in +Inf: the last finite bound
        (0.95, [(INF, 100), (0.2, 100), (0.1, 0)], 0.195),  # order does not matter
        (0.25, [(1.0, 0), (2.0, 4), (4.0, 4), (INF, 4)], 1.25),
    ],
)
def test_quantile_from_buckets(q: float, buckets: list[tuple[float, float]], expected: float) -> None:
    assert metrics.quantile_from_buckets(q, buckets) == pytest.approx(expected)


def test_buckets_are_fine_enough_for_p95() -> None:
    """Interpolation error is bounded by the bucket width: at most 1.5x between bounds up to 30 s."""
    bounds = [b for b in metrics.BUCKETS_S if b <= 30]
    assert all(hi / lo <= 1.5 + 1e-9 for lo, hi in zip(bounds, bounds[1:], strict=False))
    assert metrics.BUCKETS_S[0] == 0.001 and metrics.BUCKETS_S[-1] >= 300


# --- recording and the summary (this process's registry) ------------------------------------------------


def _delta(before: dict[str, Any], after: dict[str, Any], *path: str) -> float:
    a: Any = after
    b: Any = before
    for key in path:
        a, b = a.get(key, 0), b.get(key, 0)
    return float(a) - float(b)


def test_recording_shows_in_the_summary() -> None:
    before = metrics.summary()
    metrics.request("ok")
    metrics.request("error")
    metrics.request("made-up")  # unknown values never create new series
    metrics.coalesce("leader")
    metrics.coalesce("follower")
    metrics.provider_call("demo", "ok")
    metrics.provider_call("demo", "provider_timeout")
    metrics.provider_call("demo", "provider_auth_failed")
    metrics.provider_call("nope", "ok")
    metrics.stream_subscriptions.inc()
    after = metrics.summary()
    metrics.stream_subscriptions.dec()
    assert _delta(before, after, "requests") == 3
    assert _delta(before, after, "requests_by_outcome", "other") == 1
    assert _delta(before, after, "coalesce", "leaders") == 1
    assert _delta(before, after, "coalesce", "followers") == 1
    assert _delta(before, after, "provider_calls") == 4
    by = after["provider_calls_by_provider"]
    assert by["demo"]["timeout"] >= 1 and by["demo"]["error"] >= 1 and by["other"]["ok"] >= 1
    assert _delta(before, after, "stream_subscriptions") == 1
    assert set(after) >= {
        "coalesce", "provider_calls", "requests", "error_rate", "latency_p95_ms", "ttft_p95_ms",
        "queue_wait_p95_ms", "cancel_p95_ms",
    }  # fmt: skip


def test_an_ended_hold_of_the_reading_is_counted_by_how_it_ended_and_timed() -> None:
    def value(name: str, **labels: str) -> float:
        found = prometheus_client.REGISTRY.get_sample_value(name, labels)
        return found or 0.0

    before = [value("chatapp_intake_holds_total", ended=e) for e in ("released", "expired")]
    held_before = value("chatapp_intake_held_seconds_sum")
    metrics.intake_held(0.025, False)
    metrics.intake_held(0.1, True)
    after = [value("chatapp_intake_holds_total", ended=e) for e in ("released", "expired")]
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 1]
    assert value("chatapp_intake_held_seconds_sum") - held_before == pytest.approx(0.125)


def test_histograms_give_p95_in_ms() -> None:
    reg = CollectorRegistry()
    from prometheus_client import Histogram

    hist = Histogram("chatapp_request_latency_seconds", "x", buckets=metrics.BUCKETS_S, registry=reg)
    for ms in [100.0] * 19 + [1000.0]:
        hist.observe(ms / 1000)
    summary = metrics.summary(reg)
    assert 90 < summary["latency_p95_ms"] <= 135  # 19 of 20 are 100 ms: p95 is in their bucket (90, 135]
    assert summary["ttft_p95_ms"] == 0.0
    assert summary["histograms"]["latency"][-1] == [None, 20.0]


# --- several processes: the multiprocess directory -------------------------------------------------------

_CHILD = textwrap.dedent(
    """
    import os, django
    os.environ["DJANGO_SETTINGS_MODULE"] = "chatapp.settings"
    django.setup()
    from ops import metrics
    for _ in range(3):
        metrics.request("ok")
    metrics.coalesce("leader")
    metrics.observe_latency_ms(120)
    metrics.stream_subscriptions.inc()
    if os.environ.get("DIE"):
        os._exit(0)  # killed: no atexit clean-up of its live gauges
    """
)


def _child(metrics_dir: Path, *, die: bool = False) -> int:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), "DIE": "1" if die else ""}
    env.pop("DATABASE_URL", None)
    env.pop("REDIS_URL", None)
    proc = subprocess.run([sys.executable, "-c", _CHILD], cwd=ROOT, env=env, capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    return 0


def test_multiprocess_summary_counts_every_process_once(tmp_path: Path) -> None:
    _child(tmp_path)
    _child(tmp_path, die=True)
    reg = CollectorRegistry()
    multiprocess.MultiProcessCollector(reg, path=str(tmp_path))
    summary = metrics.summary(reg)
    assert summary["requests"] == 6 and summary["coalesce"]["leaders"] == 2
    assert summary["latency_p95_ms"] > 0
    # The clean exit removed its live gauge; the killed process's one stays until a process starts.
    assert summary["stream_subscriptions"] == 1
    _child(tmp_path)  # starts (dropping the dead one's live gauges), records, exits cleanly
    summary = metrics.summary(reg)
    assert summary["requests"] == 9 and summary["stream_subscriptions"] == 0


# --- HTTP: /metrics, /api/metrics, dashboard, access ------------------------------------------------------


@pytest.fixture
def staff(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user("staffer", password="pw-staff-123!", is_staff=True)


@pytest.mark.django_db
def test_prometheus_endpoint_exports_project_and_django_metrics(client: Client, settings: Any) -> None:
    settings.METRICS_TOKEN = METRICS_TOKEN
    metrics.request("ok")
    client.get("/healthz")
    samples = parse_prometheus(client.get("/metrics", headers=SCRAPER).content.decode())
    assert sample_sum(samples, "chatapp_requests_total", outcome="ok") >= 1
    assert sample_sum(samples, "chatapp_flag_enabled", flag="PACER_ENABLED") == 1
    assert sample_sum(samples, "django_http_responses_total_by_status_view_method_total", view="healthz") >= 1
    assert "django_db_execute_total" in samples


@pytest.mark.django_db
def test_grafana_dashboard_names_only_exported_metrics(client: Client, user: Any, settings: Any) -> None:
    settings.METRICS_TOKEN = METRICS_TOKEN
    dashboard = json.loads(GRAFANA.read_text())
    assert dashboard["panels"] and all("gridPos" in p for p in dashboard["panels"])
    client.force_login(user)
    client.get("/api/threads")  # a view and a query: the labelled django_* series exist
    exported = set(parse_prometheus(client.get("/metrics", headers=SCRAPER).content.decode()))
    named = grafana_metric_names(GRAFANA.read_text())
    assert named and named <= exported, sorted(named - exported)


def test_prometheus_scrape_config_targets_metrics() -> None:
    text = (ROOT / "docs" / "prometheus.yml").read_text()
    assert "scrape_configs:" in text and "metrics_path: /metrics" in text and "\t" not in text
    # /metrics needs the token (or a listed address): the example scrapes with it.
    assert "authorization:" in text and "type: Bearer" in text and "credentials_file:" in text


@pytest.mark.django_db(transaction=True)
@pytest.mark.both
@pytest.mark.parametrize("path", ["/metrics", "/api/metrics"])
async def test_metrics_endpoints_share_one_access_rule(
    path: str, user: Any, staff: Any, settings: Any
) -> None:
    """Request and error counts, provider names, flag states: staff, the metrics token or a listed
    address only, on both endpoints."""
    settings.METRICS_TOKEN = METRICS_TOKEN
    settings.METRICS_ALLOWED_IPS = ["10.0.0.0/8"]
    # /metrics refuses everyone else with 403 (docs/api.md, Operations); /api/metrics says 401 to the anonymous.
    anonymous = 403 if path == "/metrics" else 401
    anon = await AsyncClient().get(path)  # the test client's address is 127.0.0.1
    code = "forbidden" if path == "/metrics" else "unauthenticated"
    assert anon.status_code == anonymous and anon.json()["error"]["code"] == code
    wrong = await AsyncClient(AUTHORIZATION="Bearer wrong-token").get(path)
    assert wrong.status_code == anonymous
    # A forwarded header is not the connection's address.
    forwarded = await AsyncClient().get(path, headers={"X-Forwarded-For": "10.1.2.3"})
    assert forwarded.status_code == anonymous
    session = AsyncClient()
    await session.aforce_login(user)
    assert (await session.get(path)).status_code == 403
    await session.aforce_login(staff)
    assert (await session.get(path)).status_code == 200
    scraper = await AsyncClient(AUTHORIZATION=f"Bearer {METRICS_TOKEN}").get(path)
    assert scraper.status_code == 200 and scraper["Cache-Control"] == "no-store"
    settings.METRICS_ALLOWED_IPS = ["::1", "127.0.0.1"]
    assert (await AsyncClient().get(path)).status_code == 200


@pytest.mark.parametrize(
    ("remote_addr", "allowed", "expected"),
    [
        ("10.1.2.3", ["10.0.0.0/8"], True),
        ("10.1.2.3", ["10.1.2.3"], True),
        ("11.1.2.3", ["10.0.0.0/8"], False),
        ("2001:db8::5", ["2001:db8::/32"], True),
        ("::1", ["127.0.0.1"], False),
        ("10.1.2.3", [], False),
        ("", ["0.0.0.0/0"], False),
        (None, ["0.0.0.0/0"], False),
        ("not-an-address", ["0.0.0.0/0"], False),
    ],
)
def test_peer_allowed(remote_addr: str | None, allowed: list[str], expected: bool) -> None:
    assert peer_allowed(remote_addr, allowed) is expected


@pytest.mark.django_db(transaction=True)
@pytest.mark.both
async def test_api_metrics_access(user: Any, token: str, settings: Any) -> None:
    settings.METRICS_TOKEN = METRICS_TOKEN
    anon = AsyncClient()
    resp = await anon.get("/api/metrics")
    assert resp.status_code == 401 and resp.json()["error"]["code"] == "unauthenticated"
    resp = await AsyncClient(AUTHORIZATION="Bearer wrong-token").get("/api/metrics")
    assert resp.status_code == 401
    resp = await AsyncClient(AUTHORIZATION=f"Bearer {token}").get("/api/metrics")  # a non-staff API token
    assert resp.status_code == 403 and set(resp.json()["error"]) == {"code", "message"}
    session = AsyncClient()
    await session.aforce_login(user)
    assert (await session.get("/api/metrics")).status_code == 403
    resp = await AsyncClient(AUTHORIZATION=f"Bearer {METRICS_TOKEN}").get("/api/metrics")
    assert resp.status_code == 200 and resp["Cache-Control"] == "no-store"
    body = resp.json()
    assert body["flags"] == {"COALESCE_ENABLED": True, "PACER_ENABLED": True, "STREAM_FANOUT_ENABLED": True}
    assert (
        await AsyncClient(AUTHORIZATION=f"Bearer {METRICS_TOKEN}").post("/api/metrics")
    ).status_code == 405


@pytest.mark.django_db(transaction=True)
@pytest.mark.both
async def test_staff_read_api_metrics_and_the_async_path_counts_once(staff: Any) -> None:
    session = AsyncClient()
    await session.aforce_login(staff)
    first = (await session.get("/api/metrics")).json()
    later.run_now()  # its counters wait for their batch (core/later.py): due now
    second = (await session.get("/api/metrics")).json()
    # The first request's response was counted by the async middleware, exactly once.
    assert _delta(first, second, "http_responses_by_view", "api-metrics") == 1
    assert second["aggregation"] == "process" and str(second["pid"]) in second["flags_by_process"]


@pytest.mark.django_db
def test_dashboard_is_for_staff_only(client: Client, user: Any, staff: Any) -> None:
    resp = client.get("/staff/dashboard/")
    assert resp.status_code == 302 and resp["Location"].startswith("/accounts/login/")
    client.force_login(user)
    assert client.get("/staff/dashboard/").status_code == 403
    client.force_login(staff)
    page = client.get("/staff/dashboard/")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'id="initial"' in html and "dashboard/dashboard.js" in html and "<svg" in html
    assert "COALESCE_ENABLED" in html


@pytest.mark.django_db
def test_dashboard_stays_light(client: Client, staff: Any) -> None:
    """A Lighthouse mobile budget proxy: our own small files, nothing from another origin."""
    client.force_login(staff)
    html = client.get("/staff/dashboard/").content.decode()
    assert not re.search(r'(src|href)="(https?:)?//', html)
    assert len(html.encode()) < 12_000
    assert (ROOT / "static" / "dashboard" / "dashboard.js").stat().st_size < 8_000
    assert (ROOT / "static" / "dashboard" / "dashboard.css").stat().st_size < 4_000


# --- docs -----------------------------------------------------------------------------------------------


def _families() -> list[str]:
    names = [
        m._name
        for m in vars(metrics).values()
        if hasattr(m, "_name") and str(getattr(m, "_name", "")).startswith(metrics.PREFIX)
    ]
    counters = {"chatapp_requests", "chatapp_coalesce", "chatapp_provider_calls", "chatapp_intake_holds"}
    counters |= {
        "chatapp_tokens",
        "chatapp_cost_usd",
        "chatapp_coalesce_saved_calls",
        "chatapp_coalesce_saved_cost_usd",
    }
    return sorted({n + "_total" if n in counters else n for n in names})


@pytest.mark.parametrize("name", _families())
def test_metric_documented(name: str) -> None:
    assert f"`{name}`" in DOC


@pytest.mark.parametrize("name", ["COALESCE_ENABLED", "STREAM_FANOUT_ENABLED", "PACER_ENABLED"])
def test_flag_documented(name: str) -> None:
    assert f"`{name}`" in DOC


@pytest.mark.parametrize("name", ["PROMETHEUS_MULTIPROC_DIR", "FLAG_CACHE_TTL_S", "METRICS_TOKEN"])
def test_setting_documented(name: str) -> None:
    assert f"`{name}`" in DOC


async def test_summary_runs_off_the_loop() -> None:
    """The view reads the registry in a thread (files in multiprocess mode)."""
    data = await sync_to_async(metrics.summary, thread_sensitive=False)()
    assert data["aggregation"] == "process"


@pytest.mark.django_db
def test_database_cursors_share_one_instrumented_class_and_are_still_counted() -> None:
    """django-prometheus builds a cursor class per cursor (SQLite) or per connection checkout
    (PostgreSQL); ops.prometheus.cache_cursor_wrappers keeps one per (class, alias, vendor)."""
    from django.db import connection
    from django_prometheus.db.metrics import execute_total

    def executed() -> float:
        return execute_total.labels(connection.alias, connection.vendor)._value.get()

    before = executed()
    with connection.cursor() as first, connection.cursor() as second:
        first.execute("SELECT 1")
        second.execute("SELECT 1")
        assert type(first.cursor) is type(second.cursor)
    assert executed() == before + 2
    # PostgreSQL's backend builds its class in get_connection_params, on every checkout from the pool.
    from django_prometheus.db.backends.postgresql import base as postgresql

    build = postgresql.ExportingCursorWrapper
    assert build(object, "default", "postgresql") is build(object, "default", "postgresql")
