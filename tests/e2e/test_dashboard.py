"""The staff dashboard opens with the server's last hour (#22 item 9): charts drawn at once, with axes,
units and a line under each headline number; the header fits a phone (fails on the old code: the
charts started empty, history only since the page opened)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

from tests.e2e.conftest import AppServer, _serve

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def dash_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    yield from _serve(tmp_path_factory.mktemp("dash"), DASHBOARD_HISTORY_INTERVAL_S="0.3")


@pytest.mark.parametrize("size", ["phone", "desktop"])
def test_the_dashboard_opens_with_history(
    browser: Browser, dash_server: AppServer, screenshots: Path, size: str
) -> None:
    seed = dash_server.seed_demo()
    dash_server.manage(
        "shell",
        "-c",
        f"from django.contrib.auth.models import User; User.objects.filter(username='{seed['username']}').update(is_staff=True)",
    )
    width = 360 if size == "phone" else 1280
    context = browser.new_context(base_url=dash_server.url, viewport={"width": width, "height": 800})
    context.add_cookies([{"name": "sessionid", "value": seed["sessionid"], "url": dash_server.url}])
    page = context.new_page()
    page.goto("/staff/dashboard/")  # starts this process's sampler
    expect(page.get_by_role("heading", name="Deployment dashboard")).to_be_visible()

    def kept() -> int:
        page.reload()
        return len(json.loads(page.locator("#history").text_content() or "[]"))

    # The sampler's points arrive every 0.3 s: wait for three (a reload per check, no fixed sleep).
    for _ in range(100):
        if kept() >= 3:
            break
    assert kept() >= 3
    # Drawn from the server's points before this page has polled even once.
    drawn = page.locator('[data-chart="rps"] polyline').get_attribute("points") or ""
    assert len(drawn.split()) >= 3
    expect(page.locator("figcaption").first).to_contain_text("(req/s)")
    expect(page.locator(".xa").first).to_contain_text("1 h ago")
    expect(page.locator(".headline")).to_contain_text("Coalescing saved")
    top = page.locator("header.top").bounding_box()
    assert top and top["height"] < 60, "the header is one row on a phone"
    wide = page.evaluate(
        "w => [...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > w)"
        ".map(e => `${e.tagName}.${e.className.baseVal ?? e.className}`)",
        width,
    )
    assert page.evaluate("document.documentElement.scrollWidth") <= width, wide
    page.screenshot(path=str(screenshots / f"dashboard-{size}.png"), full_page=True)
    context.close()


def test_the_status_line_is_read_whole_on_a_phone(browser: Browser, dash_server: AppServer) -> None:
    """The status says why the figures stopped and what to do ("log in again as staff"): on a 360 px
    phone it wraps instead of being cut (fails on the old code: one line, the end an ellipsis), in the
    room it keeps for two lines, so an update shifts nothing below it."""
    seed = dash_server.seed_demo()
    dash_server.manage(
        "shell",
        "-c",
        f"from django.contrib.auth.models import User; User.objects.filter(username='{seed['username']}').update(is_staff=True)",
    )
    context = browser.new_context(base_url=dash_server.url, viewport={"width": 360, "height": 800})
    context.add_cookies([{"name": "sessionid", "value": seed["sessionid"], "url": dash_server.url}])
    page = context.new_page()
    page.goto("/staff/dashboard/")
    status = page.locator("#status")
    room = status.bounding_box()
    # The session ends while the page polls: every later poll is refused.
    page.route("**/api/metrics", lambda route: route.fulfill(status=403, body="{}"))
    expect(status).to_contain_text("log in again as staff", timeout=15_000)
    cut = status.evaluate("e => e.scrollWidth > e.clientWidth || e.scrollHeight > e.clientHeight")
    assert not cut, status.text_content()
    box = status.bounding_box()
    assert room and box and box["height"] == room["height"], "the status keeps its height"
    context.close()
