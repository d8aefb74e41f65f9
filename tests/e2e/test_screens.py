"""Screenshots of the three audited pages at phone and desktop width, light and dark, written to
artifacts/screenshots/ (git-ignored; CI keeps them as artifacts), with the checks that go with them:
nothing wider than a 360 px phone, the dark colour scheme applied, and no axe-core violation (the
engine of Lighthouse's accessibility audit, which only sees the light scheme at phone size)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.e2e.conftest import ROOT, AppServer
from tests.needs import missing

pytestmark = pytest.mark.browser

VIEWPORTS = {"phone": {"width": 360, "height": 780}, "desktop": {"width": 1280, "height": 800}}
# axe-core as pinned by tools/package-lock.json (a dependency of lighthouse): `npm ci --prefix tools`.
AXE = ROOT / "tools" / "node_modules" / "axe-core" / "axe.min.js"


@pytest.fixture(scope="module")
def axe_source() -> str:
    if not AXE.exists():
        missing(f"{AXE} is missing: run `npm ci --prefix tools`")
    return AXE.read_text()


@pytest.fixture(scope="module")
def demo(app_server: AppServer) -> dict[str, Any]:
    """The demo user and its long thread (seeding again would end this session: it resets the password)."""
    return app_server.seed_demo()


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("size", list(VIEWPORTS))
def test_screenshots_of_the_three_pages(
    browser: Browser,
    app_server: AppServer,
    demo: dict[str, Any],
    screenshots: Path,
    axe_source: str,
    size: str,
    scheme: str,
) -> None:
    viewport = VIEWPORTS[size]
    context = browser.new_context(
        base_url=app_server.url,
        viewport={"width": viewport["width"], "height": viewport["height"]},
        color_scheme="dark" if scheme == "dark" else "light",
        # The pages' CSP (script-src 'self') rightly refuses the inline axe-core this test injects;
        # tests/e2e/test_security.py checks the policy itself, with no bypass.
        bypass_csp=True,
    )
    page = context.new_page()
    name = size if scheme == "light" else f"{size}-dark"

    page.goto("/accounts/login/")
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    _check_page(page, viewport["width"], scheme, axe_source)
    page.screenshot(path=str(screenshots / f"login-{name}.png"))

    context.add_cookies([{"name": "sessionid", "value": demo["sessionid"], "url": app_server.url}])
    page.goto("/")
    expect(page.get_by_role("link", name="A long conversation about code")).to_be_visible()
    _check_page(page, viewport["width"], scheme, axe_source)
    page.screenshot(path=str(screenshots / f"list-{name}.png"))

    page.goto(f"/threads/{demo['thread_id']}/")
    expect(page.locator("#conn")).to_have_text("Live")
    expect(page.locator("li.msg")).to_have_count(48)
    expect(page.get_by_role("button", name="Copy code").first).to_be_attached()
    _check_page(page, viewport["width"], scheme, axe_source)
    page.screenshot(path=str(screenshots / f"thread-{name}.png"))
    context.close()


def _check_page(page: Page, width: int, scheme: str, axe_source: str) -> None:
    scroll_width = page.evaluate("document.documentElement.scrollWidth")
    assert scroll_width <= width, f"{page.url} is {scroll_width}px wide in a {width}px viewport"
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert (background == "rgb(255, 255, 255)") == (scheme == "light"), f"{scheme} scheme: {background}"
    page.add_script_tag(content=axe_source)
    result = page.evaluate(
        "axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21aa', 'best-practice']}})"
    )
    violations = [
        f"{v['id']} ({v['impact']}): {v['help']} -> {[n['target'] for n in v['nodes']][:3]}"
        for v in result["violations"]
    ]
    assert not violations, f"{page.url} in {scheme} at {width}px:\n" + "\n".join(violations)
