"""Security in a real browser: the pages work under their Content-Security-Policy (no violation, no
console error: Lighthouse's best-practices audit counts both), the WebSocket passes the origin check, and
logging out in one tab signs every other tab's socket out."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import BrowserContext, ConsoleMessage, Page, expect

from tests.e2e.test_chat import last_reply, new_thread, sign_up

pytestmark = pytest.mark.browser

WATCH_CSP = "addEventListener('securitypolicyviolation', e => (window.__csp = window.__csp || []).push(e.violatedDirective + ' ' + e.blockedURI))"


@pytest.fixture
def problems(page: Page) -> Iterator[list[str]]:
    seen: list[str] = []

    def on_console(msg: ConsoleMessage) -> None:
        if msg.type == "error":
            seen.append(f"console: {msg.text}")

    page.on("console", on_console)
    page.on("pageerror", lambda exc: seen.append(f"pageerror: {exc}"))
    page.add_init_script(WATCH_CSP)
    yield seen


def _violations(page: Page) -> list[str]:
    return list(page.evaluate("window.__csp || []"))


def test_pages_run_under_their_policy(page: Page, problems: list[str]) -> None:
    sign_up(page)
    assert "script-src 'self'" in (page.context.request.get(page.url).headers["content-security-policy"])
    new_thread(page, "Under CSP")  # waits for "Live": the socket passed the origin check and connect-src
    box = page.get_by_role("textbox", name="Message")
    box.fill("Show me a code block")
    box.press("Enter")
    expect(last_reply(page)).to_have_attribute("data-status", "complete")
    expect(last_reply(page).locator(".body.md")).to_be_visible()  # the server-rendered HTML was fetched
    inline = page.evaluate(
        "[...document.scripts].filter(s => !s.src && s.type !== 'application/json').length"
    )
    assert inline == 0
    page.reload()
    expect(page.locator("#conn")).to_have_text("Live")
    assert _violations(page) == [] and problems == []


def test_logging_out_signs_the_other_tabs_out(page: Page, context: BrowserContext) -> None:
    sign_up(page)
    new_thread(page, "Two tabs")
    other = context.new_page()
    other.goto(page.url)
    expect(other.locator("#conn")).to_have_text("Live")

    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile(r"/accounts/login/$"))
    # The other tab's socket is closed (4001) and its reconnect refused (the browser sees a failed
    # handshake): the page says it is signed out instead of retrying for ever.
    expect(other.locator("#conn")).to_have_text("You are signed out.")
    expect(other.get_by_role("link", name="Log in again")).to_be_visible()
    other.close()
