"""The first ten minutes on the thread page, at phone and desktop width (#22 items 3, 4, 5, 6): where the
connection stands, shown by the composer; "Log in again"; a refused socket says why; phones type
newlines with Enter and send with the button; Stop takes Send's place; the header stays in sight on a
long thread; "Jump to latest". Screenshots of the page while streaming and after Stop, at phone and
desktop width, light and dark, go to artifacts/screenshots/."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.e2e.conftest import AppServer
from tests.e2e.test_chat import PASSWORD, last_reply, new_thread, sign_up

pytestmark = pytest.mark.browser

PHONE = {"viewport": {"width": 360, "height": 780}, "is_mobile": True, "has_touch": True}
DESKTOP = {"viewport": {"width": 1280, "height": 800}}


def _context(browser: Browser, server: AppServer, size: str, scheme: str = "light") -> BrowserContext:
    options: dict[str, Any] = PHONE if size == "phone" else DESKTOP
    return browser.new_context(base_url=server.url, color_scheme=scheme, **options)  # type: ignore[arg-type]


def _send(page: Page, text: str) -> None:
    page.get_by_role("textbox", name="Message").fill(text)
    page.get_by_role("button", name="Send").click()


def test_on_a_phone_enter_adds_a_line_and_stop_takes_sends_place(
    browser: Browser, slow_server: AppServer
) -> None:
    """Item 6: Enter always sent (no newline could be typed on a phone), the Shift+Enter hint showed, and
    Stop took a row of its own below Send, pushing the composer up (fails on the old code)."""
    context = _context(browser, slow_server, "phone")
    page = context.new_page()
    sign_up(page)
    new_thread(page, "On a phone")
    box = page.get_by_role("textbox", name="Message")
    box.fill("Two lines")
    box.press("Enter")
    box.press_sequentially("please")
    expect(box).to_have_value("Two lines\nplease")  # a newline, not a send
    expect(page.locator("#composer-hint")).to_be_hidden()
    assert box.get_attribute("enterkeyhint") == "enter"

    box.fill("Tell me about rivers")  # one line, as the box is once sent (the composer's height compares)
    send = page.get_by_role("button", name="Send")
    send_box = send.bounding_box()
    composer = page.locator("#composer").bounding_box()
    send.click()
    stop = page.get_by_role("button", name="Stop")
    expect(stop).to_be_visible()
    expect(send).to_be_hidden()
    stop_box = stop.bounding_box()
    assert send_box and stop_box and composer
    assert (
        abs(stop_box["y"] - send_box["y"]) < 2
        and abs(stop_box["x"] + stop_box["width"] - send_box["x"] - send_box["width"]) < 2
    )
    after = page.locator("#composer").bounding_box()
    assert after and abs(after["height"] - composer["height"]) < 2, "the composer keeps its height"
    stop.click()
    expect(last_reply(page)).to_have_attribute("data-status", "cancelled")
    expect(send).to_be_visible()
    expect(stop).to_be_hidden()
    context.close()


def test_on_a_desktop_enter_still_sends(page: Page) -> None:
    sign_up(page)
    new_thread(page, "At a desk")
    expect(page.locator("#composer-hint")).to_be_visible()
    box = page.get_by_role("textbox", name="Message")
    box.fill("hello")
    box.press("Enter")
    expect(box).to_have_value("")
    expect(page.locator("li.msg.user")).to_have_count(1)


@pytest.fixture(scope="module")
def long_thread(app_server: AppServer) -> dict[str, Any]:
    return app_server.seed_demo()


@pytest.mark.parametrize("size", ["phone", "desktop"])
def test_a_long_thread_keeps_its_header_and_offers_jump_to_latest(
    browser: Browser, app_server: AppServer, long_thread: dict[str, Any], size: str
) -> None:
    """Item 6: the header and connection status scrolled away, and there was no "Jump to latest" button
    (fails on the old code)."""
    context = _context(browser, app_server, size)
    context.add_cookies([{"name": "sessionid", "value": long_thread["sessionid"], "url": app_server.url}])
    page = context.new_page()
    page.goto(f"/threads/{long_thread['thread_id']}/")
    expect(page.locator("#conn")).to_have_text("Live")
    jump = page.get_by_role("button", name="Jump to latest")
    expect(jump).to_be_hidden()  # opened at the bottom
    page.mouse.wheel(0, -3000)
    page.evaluate("scrollTo(0, document.documentElement.scrollHeight / 2)")
    expect(jump).to_be_visible()
    head = page.locator(".chat-head").bounding_box()
    assert head and head["y"] >= -1 and head["y"] < 10, "the thread's header is pinned to the top"
    expect(page.locator("#conn")).to_be_in_viewport()
    jump.click()
    expect(jump).to_be_hidden()
    expect(page.locator("#messages > li").last).to_be_in_viewport()
    context.close()


def test_a_lost_connection_and_a_lost_session_are_told_by_the_composer(
    browser: Browser, app_server: AppServer
) -> None:
    """Item 5: the reason sat at the top of the thread, out of sight, and a signed-out page offered no
    way to log in again (fails on the old code). Item 3: a handshake refused for want of a session is
    told as such (GET /api/socket-check), not "Reconnecting…" forever."""
    context = _context(browser, app_server, "desktop")
    page = context.new_page()
    username = sign_up(page)
    new_thread(page, "Connection")
    note = page.locator("#composer-conn")
    expect(note).to_be_hidden()

    context.set_offline(True)
    expect(note).to_be_visible()
    expect(note).to_contain_text("Offline")
    composer = page.locator("#composer").bounding_box()
    shown = note.bounding_box()
    assert composer and shown and composer["y"] <= shown["y"] <= composer["y"] + composer["height"]
    expect(page.get_by_role("button", name="Send")).to_be_disabled()
    context.set_offline(False)
    expect(page.locator("#conn")).to_have_text("Live")
    expect(note).to_be_hidden()

    # The session ends without this page hearing of it (cookies gone): the next handshake is refused.
    context.clear_cookies()
    context.set_offline(True)
    context.set_offline(False)
    expect(note).to_contain_text("You are signed out.")
    login = note.get_by_role("link", name="Log in again")
    expect(login).to_be_visible()
    thread_url = page.url
    login.click()
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(thread_url)
    expect(page.locator("#conn")).to_have_text("Live")
    context.close()


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("size", ["phone", "desktop"])
def test_screenshots_while_streaming_and_after_stop(
    browser: Browser, slow_server: AppServer, screenshots: Path, size: str, scheme: str
) -> None:
    context = _context(browser, slow_server, size, scheme)
    page = context.new_page()
    sign_up(page)
    new_thread(page, "Screenshots")
    _send(page, "Write a python function that sorts a list, with an explanation")
    reply = last_reply(page)
    expect(reply).to_have_attribute("data-status", "streaming")
    expect(reply.locator(".body")).to_contain_text("return sorted(items)", timeout=30_000)
    name = size if scheme == "light" else f"{size}-dark"
    page.screenshot(path=str(screenshots / f"thread-streaming-{name}.png"))
    page.get_by_role("button", name="Stop").click()
    expect(reply).to_have_attribute("data-status", "cancelled")
    expect(reply.locator(".status")).to_have_text("Stopped")
    page.screenshot(path=str(screenshots / f"thread-stopped-{name}.png"))
    assert page.evaluate("document.documentElement.scrollWidth") <= page.viewport_size["width"]  # type: ignore[index]
    context.close()


HEIGHTS = """li => {
  window.__heights = [];
  const body = () => li.querySelector('.body');
  new MutationObserver(() => window.__heights.push(
    {status: li.dataset.status, md: body().classList.contains('md'), h: body().getBoundingClientRect().height}
  )).observe(li, {subtree: true, childList: true, attributes: true, characterData: true});
}"""


def test_a_reply_is_formatted_while_it_streams_and_keeps_its_height_at_the_end(page: Page) -> None:
    """Item 4: while streaming, the reply was raw Markdown (`**demo model**` with its stars), then
    switched to formatted text at the end (fails on the old code: no `strong` while streaming)."""
    sign_up(page)
    new_thread(page, "Formatted")
    _send(page, "What is the capital of France?")
    reply = last_reply(page)
    expect(reply).to_have_attribute("data-status", "streaming")
    body = reply.locator(".body")
    expect(body.locator("strong").first).to_have_text("demo model")  # formatted as it streams
    expect(reply).to_have_attribute("data-status", "streaming")
    assert "**" not in (body.inner_text()), "no raw Markdown while streaming"
    reply.evaluate(HEIGHTS)
    with page.expect_response(lambda r: "?html=" in r.url):  # the server's HTML replaces the page's own
        expect(reply).to_have_attribute("data-status", "complete", timeout=30_000)
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
    heights = page.evaluate("window.__heights")
    final = [h["h"] for h in heights if h["status"] == "complete" and h["md"]]
    assert final and max(final) - min(final) < 1, f"the reply jumped when the server's HTML came: {heights}"
    assert all(h["md"] for h in heights if h["h"] > 0), "never shown as raw text"


def test_a_stopped_reply_keeps_no_stray_markdown(page: Page, slow_server: AppServer) -> None:
    page.goto(slow_server.url)
    sign_up(page, slow_server.url)
    new_thread(page, "Stopped formatting")
    _send(page, "Write a python function that sorts a list")
    reply = last_reply(page)
    expect(reply.locator(".body strong").first).to_have_text("demo model")
    page.get_by_role("button", name="Stop").click()
    expect(reply).to_have_attribute("data-status", "cancelled")
    assert "**" not in reply.locator(".body").inner_text()
    page.reload()
    expect(last_reply(page).locator(".body.md")).to_be_visible()
    assert "**" not in last_reply(page).locator(".body").inner_text()


# Layout shifts of the page, with what moved (a buffered observer: those before the script ran too).
LAYOUT_SHIFTS = """window.__shifts = [];
new PerformanceObserver(list => { for (const e of list.getEntries()) window.__shifts.push(
  {value: e.value, moved: e.sources.map(s => s.node && (s.node.id || s.node.className || s.node.nodeName))}
); }).observe({type: 'layout-shift', buffered: true});"""


def test_on_a_phone_the_pinned_header_leaves_the_thread_most_of_the_screen(
    browser: Browser, app_server: AppServer, long_thread: dict[str, Any]
) -> None:
    """Item 6: the header stays in sight on a long thread, but on a phone it held the title, the model,
    the status, the system prompt and three rows of actions: 304 px of a 780 px screen pinned over the
    thread, more with the keyboard up (fails on the old code). Now short rows, the actions one row that
    scrolls sideways; nothing in it moves when the script shows Rename and the status turns Live."""
    context = _context(browser, app_server, "phone")
    context.add_init_script(LAYOUT_SHIFTS)
    context.add_cookies([{"name": "sessionid", "value": long_thread["sessionid"], "url": app_server.url}])
    page = context.new_page()
    page.goto(f"/threads/{long_thread['thread_id']}/")
    expect(page.locator("#conn")).to_have_text("Live")
    expect(page.locator("#rename")).to_be_visible()
    assert page.evaluate("window.__shifts") == [], "the header's parts moved after the first paint"
    page.evaluate("scrollTo(0, document.documentElement.scrollHeight / 2)")
    head = page.locator(".chat-head").bounding_box()
    assert head and head["y"] >= -1 and head["height"] <= 780 / 4, f"the pinned header is {head} on a phone"
    expect(page.locator("#conn")).to_be_in_viewport()
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    delete = page.locator(".chat-head").get_by_role("button", name="Delete")
    delete.scroll_into_view_if_needed()  # the actions' row scrolls sideways, the page does not
    expect(delete).to_be_in_viewport()
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    page.locator(".chat-head summary", has_text="System prompt").click()
    expect(page.get_by_role("textbox", name="System prompt")).to_be_visible()
    box = page.get_by_role("textbox", name="System prompt").bounding_box()
    assert box and box["width"] > 300, "an open system prompt takes a row of its own"
    context.close()
