"""The dashboard's last hour is kept server-side (#22 item 9): its charts opened empty, with history only
since the page opened, no axes or units, and unexplained headline numbers (fails on the old code)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from django.test import Client

from ops import history
from ops.history import History

BOUNDS = [10.0, 100.0, 1000.0, None]


def summary(requests: int, latency: list[int], streams: int = 0) -> dict[str, Any]:
    hist = [[b, c] for b, c in zip(BOUNDS, latency, strict=True)]
    return {
        "requests": requests,
        "stream_subscriptions": streams,
        "histograms": {"latency": hist, "ttft": hist},
    }


def test_a_point_per_sample_with_rates_and_window_percentiles() -> None:
    h = History(span_s=3600)
    h.add(1000.0, summary(0, [0, 0, 0, 0]))
    assert h.as_list() == []  # a baseline only
    h.add(1030.0, summary(60, [0, 60, 60, 60], streams=3))  # 60 sends in 30 s, all 10-100 ms
    [(t, rps, latency, ttft, streams)] = h.as_list()
    assert (t, rps, streams) == (1030.0, 2.0, 3)
    assert 10 < latency <= 100 and ttft == latency
    h.add(1060.0, summary(60, [0, 60, 60, 60]))  # nothing new: rate 0, no latency in this window
    assert h.as_list()[-1][1:4] == [0.0, 0.0, 0.0]


def test_points_older_than_the_span_go() -> None:
    h = History(span_s=100)
    for i in range(10):
        h.add(i * 30.0, summary(i, [0, 0, 0, 0]))
    assert [p[0] for p in h.as_list()] == [180.0, 210.0, 240.0, 270.0]


@pytest.fixture
def staff(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user(username="ops", password="pw-ops-123!", is_staff=True)


@pytest.mark.django_db
def test_the_dashboard_opens_with_the_servers_history(
    client: Client, staff: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    kept = History()
    kept.add(1000.0, summary(0, [0, 0, 0, 0]))
    kept.add(1030.0, summary(30, [0, 30, 30, 30], streams=2))
    monkeypatch.setattr(history, "HISTORY", kept)
    # No sampler: its first point, on the real clock, would age the test's points out of the hour
    # (a race with the page's rendering, lost in CI).
    monkeypatch.setattr(history, "ensure_sampler", lambda *a, **k: None)
    client.force_login(staff)
    html = client.get("/staff/dashboard/").content.decode()
    data = re.search(r'<script id="history" type="application/json">(.*?)</script>', html)
    assert data and json.loads(data[1]) == kept.as_list()
    assert "Coalescing saved" in html and "provider calls" in html
    assert "(req/s)" in html and "(ms)" in html and "1 h ago" in html  # units and a time axis
    assert html.count('class="x"') >= 10  # a line under every headline number
    assert len(html.encode()) < 12_000 + 120 * 40  # an hour of points (120) fits the page budget
