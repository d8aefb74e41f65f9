"""Flags and metrics across two real daphne processes (PostgreSQL + Redis; see tests/servers.py).

- Staff toggle each flag through the admin form on one process; both processes answer the new value
  (their own cache, and the Prometheus flag gauge) within 1 s of the POST, and admin history has it.
- A burst of requests through both processes is counted exactly once by /metrics and /api/metrics.
- The Grafana dashboard names only metrics that a deployment's /metrics exports.
"""

from __future__ import annotations

import functools
import json
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.contrib.admin.models import ADDITION, CHANGE, LogEntry

from ops.models import FeatureFlag
from tests.ops.test_metrics import grafana_metric_names
from tests.servers import DaphneServer, daphne_servers, parse_prometheus, sample_sum, wait_until
from tests.totp import fresh_code

pytestmark = [pytest.mark.services, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

METRICS_TOKEN = "metrics-token-for-tests"
AUTH = {"Authorization": f"Bearer {METRICS_TOKEN}"}
FLAGS = ["COALESCE_ENABLED", "STREAM_FANOUT_ENABLED", "PACER_ENABLED"]
# The requirement: every process follows an admin change within one second.
PROPAGATION_S = 1.0
GRAFANA = Path(__file__).resolve().parents[2] / "docs" / "grafana-dashboard.json"


@pytest.fixture(scope="module")
def servers(django_db_setup: Any, django_db_blocker: Any) -> Iterator[list[DaphneServer]]:
    # Module scope: starting daphne costs ~2 s per process; the tests commit their own rows.
    with daphne_servers(2, env={"METRICS_TOKEN": METRICS_TOKEN}) as started:
        yield started


def _summary(server: DaphneServer) -> dict[str, Any]:
    resp = httpx.get(server.url("/api/metrics"), headers=AUTH, timeout=5)
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def _csrf(html: str) -> str:
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html)
    assert match, "no CSRF token in the form"
    return match.group(1)


def _staff_client(server: DaphneServer, django_user_model: Any) -> httpx.Client:
    """An httpx client logged in to admin as staff (cookies are per host: valid on both servers)."""
    from allauth.mfa.totp.internal.auth import TOTP, generate_totp_secret

    staffer = django_user_model.objects.create_user(
        "staffer", password="pw-staff-123!", is_staff=True, is_superuser=True
    )
    # Staff need a second factor before admin opens (accounts/middleware.py), and log in through
    # allauth (admin's own log-in page sends there): the password, then an authenticator code.
    secret = generate_totp_secret()
    TOTP.activate(staffer, secret)
    client = httpx.Client(base_url=server.base_url, timeout=10)
    form = client.get("/accounts/login/?next=/admin/")
    resp = client.post(
        "/accounts/login/?next=/admin/",
        data={
            "csrfmiddlewaretoken": _csrf(form.text),
            "login": "staffer",
            "password": "pw-staff-123!",
            "next": "/admin/",
        },
    )
    assert resp.status_code == 302 and resp.headers["location"] == "/accounts/2fa/authenticate/", resp.text[
        :500
    ]
    code = fresh_code(secret)
    stage = client.get("/accounts/2fa/authenticate/")
    resp = client.post(
        "/accounts/2fa/authenticate/", data={"csrfmiddlewaretoken": _csrf(stage.text), "code": code}
    )
    assert resp.status_code == 302 and resp.headers["location"] == "/admin/", resp.text[:500]
    return client


def _submit(client: httpx.Client, url: str, **fields: Any) -> float:
    """GET the admin form at `url` and POST it back as a browser would; returns when it was sent."""
    page = client.get(url)
    assert page.status_code == 200, page.text[:500]
    data = {"csrfmiddlewaretoken": _csrf(page.text), "_save": "Save", "description": "", **fields}
    if data.pop("enabled"):
        data["enabled"] = "on"  # an unchecked checkbox is absent from the form data
    sent = time.monotonic()
    resp = client.post(url, data=data)
    assert resp.status_code == 302, _error_of(resp.text)
    return sent


def _reports(servers: list[DaphneServer], name: str) -> list[tuple[int, Any, Any]]:
    """Per process: (pid, its own cache's value, the value its Prometheus gauge shows)."""
    summaries = [_summary(s) for s in servers]
    gauges = summaries[-1]["flags_by_process"]  # the merged view: any process shows every process
    return [
        (s.pid, got["flags"][name], gauges.get(str(s.pid), {}).get(name))
        for s, got in zip(servers, summaries, strict=True)
    ]


def _error_of(html: str) -> str:
    """The exception line of Django's debug page (or the page's start)."""
    match = re.search(r'<pre class="exception_value">(.*?)</pre>', html, re.S)
    return match.group(1) if match else html[:2000]


def _all_report(servers: list[DaphneServer], name: str, value: bool) -> list[tuple[int, Any, Any]] | None:
    """None until every process reports `value` in its cache and in its gauge."""
    reports = _reports(servers, name)
    return reports if all(own is value and gauge is value for _, own, gauge in reports) else None


def test_admin_toggles_each_flag_on_both_processes_within_1s(django_user_model: Any) -> None:
    # Its own servers: they cache ContentType ids (admin history needs them), which the flush after
    # each transactional test renumbers.
    with daphne_servers(2, env={"METRICS_TOKEN": METRICS_TOKEN}) as servers:
        a, b = servers
        client = _staff_client(a, django_user_model)
        for name in FLAGS:
            assert _all_report(servers, name, True)  # env default; each process's listener is ready
            client.base_url = httpx.URL(a.base_url)
            sent = _submit(client, f"/admin/ops/featureflag/add/?name={name}", name=name, enabled=False)
            wait_until(lambda n=name: _all_report(servers, n, False), timeout=_left(sent))  # type: ignore[misc]

            flag = FeatureFlag.objects.get(name=name)
            client.base_url = httpx.URL(b.base_url)  # the same staff session, through the other process
            url = f"/admin/ops/featureflag/{flag.pk}/change/"
            sent = _submit(client, url, name=name, enabled=True)
            wait_until(lambda n=name: _all_report(servers, n, True), timeout=_left(sent))  # type: ignore[misc]

            flag.refresh_from_db()
            assert flag.enabled and flag.updated_by is not None and flag.updated_by.username == "staffer"
            history = LogEntry.objects.filter(object_id=str(flag.pk)).order_by("action_time")
            assert [(e.action_flag, e.user.username) for e in history] == [
                (ADDITION, "staffer"),
                (CHANGE, "staffer"),
            ]
        client.close()


def _left(sent: float) -> float:
    """What remains of the 1 s budget, counted from when the form was posted."""
    return PROPAGATION_S - (time.monotonic() - sent)


def _view_count(server: DaphneServer, view: str) -> tuple[float, int]:
    """(count in /metrics, count in /api/metrics) of GET responses of `view`, all processes."""
    text = httpx.get(server.url("/metrics"), headers=AUTH, timeout=5).text
    prom = sample_sum(
        parse_prometheus(text), "django_http_responses_total_by_status_view_method_total", view=view
    )
    return prom, _summary(server)["http_responses_by_view"].get(view, 0)


def test_burst_through_two_processes_is_counted_exactly_once(
    servers: list[DaphneServer], user: Any, token: str
) -> None:
    a, b = servers
    view = "threads.api.threads_collection"
    before_a, before_b = _view_count(a, view), _view_count(b, view)
    assert before_a == before_b  # each process reports the deployment, not itself
    burst = 60

    def one(i: int) -> int:
        server = servers[i % 2]
        return httpx.get(server.url("/api/threads"), headers={"Authorization": f"Bearer {token}"}).status_code

    with ThreadPoolExecutor(12) as pool:
        assert set(pool.map(one, range(burst))) == {200}

    for server in servers:
        counted = wait_until(functools.partial(_counted, server, view, before_a, burst), timeout=10)
        assert counted is not None and (counted[0] - before_a[0], counted[1] - before_a[1]) == (burst, burst)


def _counted(server: DaphneServer, view: str, since: tuple[float, int], n: int) -> tuple[float, int] | None:
    """`view`'s counts once both have grown by `n` at least: responses are counted after the answers
    have left (core/later.py)."""
    prom, api = _view_count(server, view)
    return (prom, api) if prom - since[0] >= n and api - since[1] >= n else None


def test_send_burst_counts_requests_coalesce_and_provider_calls(
    servers: list[DaphneServer], user: Any, token: str
) -> None:
    a, b = servers
    headers = {"Authorization": f"Bearer {token}"}
    thread = httpx.post(a.url("/api/threads"), json={}, headers=headers).json()
    before = _summary(a)
    burst = 10

    def one(i: int) -> int:
        url = servers[i % 2].url(f"/api/threads/{thread['id']}/messages")
        return httpx.post(url, json={"content": f"distinct {i}"}, headers=headers, timeout=30).status_code

    with ThreadPoolExecutor(5) as pool:
        assert set(pool.map(one, range(burst))) == {200}
    # Counted once the answers have left (core/later.py): at least the burst, then exactly it.
    after = wait_until(lambda: (s := _summary(b))["requests"] - before["requests"] >= burst and s, timeout=10)
    assert after["requests"] - before["requests"] == burst
    assert after["coalesce"]["leaders"] - before["coalesce"]["leaders"] == burst
    assert after["provider_calls"] - before["provider_calls"] == burst
    samples = parse_prometheus(httpx.get(a.url("/metrics"), headers=AUTH).text)
    assert sample_sum(samples, "chatapp_requests_total") == after["requests"]


def test_grafana_names_only_metrics_the_deployment_exports(servers: list[DaphneServer], token: str) -> None:
    a, _ = servers
    httpx.get(a.url("/api/threads"), headers={"Authorization": f"Bearer {token}"})  # a DB query and a view
    exported = set(parse_prometheus(httpx.get(a.url("/metrics"), headers=AUTH).text))
    json.loads(GRAFANA.read_text())
    named = grafana_metric_names(GRAFANA.read_text())
    assert named and named <= exported, sorted(named - exported)
