"""The chat UI in a real browser: sign up, threads, streaming, a second tab, Stop, errors and Retry."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Locator, Page, expect

from tests.e2e.conftest import AppServer
from tests.waiting import wait_until

pytestmark = pytest.mark.browser

PASSWORD = "a-Long-pass-phrase-42"


def sign_up(page: Page, base: str = "") -> str:
    username = f"u{uuid.uuid4().hex[:10]}"
    page.goto(f"{base}/accounts/signup/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Password confirmation").fill(PASSWORD)
    page.get_by_role("button", name="Sign up").click()
    expect(page.get_by_role("heading", name="Your threads")).to_be_visible()
    return username


def new_thread(page: Page, title: str, model: str = "demo/demo-1") -> None:
    page.get_by_label("Title").fill(title)
    page.get_by_label("Model").select_option(model)  # an option's value: "<connection>/<model>"
    page.get_by_role("button", name="New thread").click()
    expect(page).to_have_url(re.compile(r"/threads/\d+/$"))
    expect(page.get_by_role("heading", level=1, name=title)).to_be_visible()
    expect(page.locator("#conn")).to_have_text("Live")


def last_reply(page: Page) -> Locator:
    return page.locator("li.msg.assistant").last


def until_true(page: Page, function: str, arg: object = None) -> None:
    """Poll a JavaScript function until it returns true. Not `wait_for_function`: Playwright compiles
    that predicate with `new Function` inside the page, which the pages' CSP (no 'unsafe-eval') refuses
    now and then (an EvalError, microsoft/playwright#36982); `evaluate` goes through the debugger."""
    wait_until(lambda: page.evaluate(function, arg) is True, timeout=15, interval=0.02)


def test_sign_up_create_thread_send_and_watch_the_stream(page: Page) -> None:
    sign_up(page)
    new_thread(page, "First steps")
    expect(page.locator(".chat-head .meta")).to_contain_text("demo")
    expect(page.locator(".chat-head .meta")).to_contain_text("demo-1")

    box = page.get_by_role("textbox", name="Message")
    box.fill("Please")
    box.press("Shift+Enter")  # a new line, not a send
    box.press_sequentially("write a python function")
    expect(box).to_have_value("Please\nwrite a python function")
    box.press("Enter")

    expect(box).to_have_value("")
    expect(page.locator("li.msg.user").last).to_have_text(re.compile("Please\\s+write a python function"))
    reply = last_reply(page)
    # While it streams: plain text growing, Send disabled, Stop offered.
    expect(reply).to_have_attribute("data-status", "streaming")
    expect(page.locator("#send")).to_be_hidden()  # Stop takes its place (#22 item 6)
    expect(page.get_by_role("button", name="Stop")).to_be_visible()
    expect(reply.locator(".body.md")).to_contain_text("python")  # formatted as it streams (#22 item 4)
    # Done: the server's Markdown (a code block with a copy button), composer back to normal.
    expect(reply).to_have_attribute("data-status", "complete", timeout=20_000)
    expect(reply.locator(".body.md .code pre code")).to_contain_text("def ")
    expect(page.get_by_role("button", name="Stop")).to_be_hidden()
    expect(page.get_by_role("button", name="Send")).to_be_enabled()
    expect(page.locator("#live")).to_contain_text("python")  # the polite live region heard the stream

    copy = reply.get_by_role("button", name="Copy code")
    copy.click()
    expect(copy).to_have_text("Copied")

    # Reloaded, the reply is rendered by the server the same way.
    page.reload()
    expect(last_reply(page).locator(".body.md .code pre code")).to_contain_text("def ")


def test_second_tab_sees_the_same_stream_stop_and_reload(browser: Browser, slow_server: AppServer) -> None:
    context = browser.new_context(base_url=slow_server.url)
    first = context.new_page()
    sign_up(first)
    new_thread(first, "Stop me")
    first.get_by_role("textbox", name="Message").fill("list ideas for a birthday party")
    first.get_by_role("textbox", name="Message").press("Enter")
    streaming = first.locator("li.msg.assistant[data-status=streaming] .body")
    expect(streaming).to_contain_text(re.compile(r"\w+ \w+"))
    seen_before = streaming.inner_text()

    # A second tab opened mid-stream resumes from the snapshot and then follows the same stream.
    second = context.new_page()
    second.goto(first.url)
    other = second.locator("li.msg.assistant[data-status=streaming] .body")
    expect(other).to_contain_text(seen_before)
    expect(second.get_by_role("button", name="Stop")).to_be_visible()
    # Still growing, live. By length: the text may switch from raw to formatted Markdown meanwhile (the
    # renderer loads with the first streamed reply), which changes its characters, not its growth.
    grown = "([sel, n]) => document.querySelector(sel).innerText.length > n"
    sel = "li.msg.assistant[data-status=streaming] .body"
    until_true(second, grown, [sel, len(other.inner_text()) + 40])

    first.get_by_role("button", name="Stop").click()
    for page in (first, second):
        reply = last_reply(page)
        expect(reply).to_have_attribute("data-status", "cancelled")
        expect(reply.locator(".status")).to_have_text("Stopped")
        expect(page.get_by_role("button", name="Stop")).to_be_hidden()
        expect(reply.locator(".body.md")).to_be_visible()
    partial = last_reply(first).locator(".body").inner_text()
    expect(last_reply(second).locator(".body")).to_have_text(partial)

    first.reload()
    saved = last_reply(first)
    expect(saved).to_have_attribute("data-status", "cancelled")
    expect(saved.locator(".status")).to_have_text("Stopped")
    expect(saved.locator(".body")).to_have_text(partial)
    context.close()


def test_error_shown_inline_with_retry(page: Page) -> None:
    sign_up(page)
    new_thread(page, "Broken provider", model="openai/gpt-4o-mini")
    page.get_by_role("textbox", name="Message").fill("hello?")
    page.get_by_role("textbox", name="Message").press("Enter")
    failed = last_reply(page)
    expect(failed).to_have_attribute("data-status", "error")
    expect(failed.locator(".status")).to_contain_text("Error")
    expect(page.get_by_role("button", name="Send")).to_be_enabled()

    # Retry answers the same question again in place (#22 item 1; tests/e2e/test_tree.py).
    failed.get_by_role("button", name="Retry").click()
    expect(page.get_by_role("group", name="Version 2 of 2")).to_be_visible()
    expect(page.locator("li.msg.user")).to_have_count(1)
    expect(page.locator("li.msg.assistant[data-status=error]")).to_have_count(1)
    expect(page.locator("li.msg.user .body").last).to_have_text("hello?")


def test_delete_thread_and_keyboard_navigation(page: Page) -> None:
    sign_up(page)
    new_thread(page, "To be deleted")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete").click()
    expect(page.get_by_role("heading", name="Your threads")).to_be_visible()
    expect(page.get_by_role("link", name="To be deleted")).to_have_count(0)

    # The first Tab reaches the skip link; following it moves focus to the main content.
    page.keyboard.press("Tab")
    skip = page.get_by_role("link", name="Skip to content")
    expect(skip).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("main")).to_be_focused()
    # Keyboard only: a new thread from the form, then a message sent with Enter.
    page.get_by_label("Title").focus()
    page.keyboard.type("Keyboard only")
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", level=1, name="Keyboard only")).to_be_visible()
    expect(page.locator("#conn")).to_have_text("Live")
    page.get_by_role("textbox", name="Message").focus()
    page.keyboard.type("hi")
    page.keyboard.press("Enter")
    expect(last_reply(page)).to_have_attribute("data-status", "complete", timeout=20_000)


def test_reconnects_and_resumes_the_stream(browser: Browser, slow_server: AppServer) -> None:
    context = browser.new_context(base_url=slow_server.url)
    page = context.new_page()
    sign_up(page)
    new_thread(page, "Flaky network")
    page.get_by_role("textbox", name="Message").fill("list ideas for a birthday party")
    page.get_by_role("textbox", name="Message").press("Enter")
    body = page.locator("li.msg.assistant[data-status=streaming] .body")
    expect(body).to_contain_text(re.compile(r"\w+ \w+"))

    context.set_offline(True)  # the page drops its socket; the generation goes on on the server
    expect(page.locator("#conn")).to_have_text(re.compile("Offline"))
    # The streamed Markdown so far (the page shows it formatted: its text is not a prefix of the next).
    raw = "() => { const li = [...document.querySelectorAll('#messages > li.assistant')].pop();"
    raw += " return li.dataset.status === 'streaming' && li.stream ? li.stream.raw : null; }"
    before = page.evaluate(raw) or ""
    context.set_offline(False)
    expect(page.locator("#conn")).to_have_text("Live")
    # Resumed from the snapshot: the text caught up with what was streamed meanwhile, and goes on.
    until_true(
        page,
        f"before => {{ const t = ({raw})(); return t === null || (t.startsWith(before) && t.length > before.length); }}",
        before,
    )
    streamed = page.evaluate(raw)
    reply = last_reply(page)
    expect(reply).to_have_attribute("data-status", "complete", timeout=30_000)
    expect(page.locator("li.msg.assistant")).to_have_count(1)
    saved = page.evaluate(
        "id => fetch(`/api/threads/${id}`).then(r => r.json()).then(t => t.messages.at(-1).content)",
        page.locator(".chat").get_attribute("data-thread-id"),
    )
    assert streamed is None or saved.startswith(streamed), "no text lost or repeated while reconnecting"
    context.close()


@pytest.fixture(scope="module")
def paged_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    """Pages of 4 messages and instant replies: a thread longer than one page in a few sends."""
    from tests.e2e.conftest import _serve

    yield from _serve(
        tmp_path_factory.mktemp("paged"), HISTORY_PAGE_SIZE="4", DEMO_TTFT_MS="0", DEMO_TOKENS_PER_S="2000"
    )


def tall_questions(page: Page, n: int) -> None:
    """`n` sends of questions of 40 lines each: four messages are taller than the window, so the page
    opened at its newest end is far from the top (nothing older loads by itself)."""
    box = page.get_by_role("textbox", name="Message")
    for i in range(n):
        box.fill(f"question {i}\n" + "\n".join(f"line {j}" for j in range(40)))
        box.press("Enter")
        expect(page.locator("li.msg.assistant")).to_have_count(i + 1)
        expect(last_reply(page)).to_have_attribute("data-status", "complete")


# The top of a message in the window, in CSS pixels, after scrolling to the very top (at once: nothing
# else runs between the scroll and the measure, so it is the place before an older page loads).
TOP_OF = """(id) => {
  scrollTo(0, 0);
  return document.querySelector(`li.msg[data-id="${id}"]`).getBoundingClientRect().top;
}"""
# True once that message is back at `top` (the page settles it in the frame that changed it: before paint).
STAYS = """([id, top]) => Math.abs(document.querySelector(`li.msg[data-id="${id}"]`).getBoundingClientRect().top - top) <= 1"""


def test_load_earlier_messages_by_keyboard(browser: Browser, paged_server: AppServer) -> None:
    context = browser.new_context(base_url=paged_server.url)
    page = context.new_page()
    sign_up(page)
    new_thread(page, "A long talk")
    tall_questions(page, 3)
    earlier = page.get_by_role("button", name="Load earlier messages")
    expect(earlier).to_be_hidden()  # everything shown: the page's own sends

    page.reload()  # the server renders the newest page; so does the snapshot
    expect(page.locator("#conn")).to_have_text("Live")
    expect(page.locator("#messages > li")).to_have_count(4)
    expect(page.locator("li.msg.user").first).to_have_text(re.compile("question 1"))
    earlier.focus()
    page.keyboard.press("Enter")
    expect(page.locator("#messages > li")).to_have_count(6)
    expect(page.locator("li.msg.user").first).to_have_text(re.compile("question 0"))
    expect(earlier).to_be_hidden()  # nothing older
    expect(page.locator("#messages > li").first).to_be_focused()  # the keyboard user's place
    context.close()


def test_scrolling_up_loads_older_messages_and_the_view_stays(
    browser: Browser, paged_server: AppServer
) -> None:
    """#18: older pages came only with a click on "Load earlier messages"; now scrolling near the top
    loads them (the thread page and its share page), and what the reader sees does not move."""
    context = browser.new_context(base_url=paged_server.url)
    page = context.new_page()
    sign_up(page)
    new_thread(page, "A very long talk")
    tall_questions(page, 5)  # 10 messages: pages of 4, 4 and 2
    page.get_by_role("button", name="Share").click()
    share_url = page.locator("#share-link").get_attribute("href") or ""

    page.goto(page.url.split("#")[0])  # not at #sharing (near the top): at the newest end
    expect(page.locator("#conn")).to_have_text("Live")
    messages = page.locator("#messages > li")
    expect(messages).to_have_count(4)  # nothing more loads by itself
    oldest = messages.first.get_attribute("data-id")
    top = page.evaluate(TOP_OF, oldest)
    expect(messages).to_have_count(8)  # no click
    expect(messages.first).to_contain_text("question 1")
    until_true(page, STAYS, [oldest, top])  # the view did not jump
    page.mouse.move(180, 400)
    page.mouse.wheel(0, -50_000)  # the reader scrolls up again with the wheel
    expect(messages).to_have_count(10)
    expect(messages.first).to_contain_text("question 0")
    expect(page.get_by_role("button", name="Load earlier messages")).to_be_hidden()

    reader = browser.new_context(base_url=paged_server.url).new_page()  # logged out
    reader.goto(share_url)
    shared = reader.locator("ol.messages > li.msg")
    expect(shared).to_have_count(4)
    reader.mouse.move(180, 400)
    reader.mouse.wheel(0, 50_000)  # reading on…
    until_true(reader, "() => scrollY > 0")
    reader.evaluate(
        "new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)))"
    )  # its scroll event
    oldest = shared.first.get_attribute("data-id")
    top = reader.evaluate(TOP_OF, oldest)  # …then back up
    expect(shared).to_have_count(8)
    until_true(reader, STAYS, [oldest, top])
    reader.mouse.wheel(0, -50_000)
    expect(shared).to_have_count(10)
    expect(shared.first).to_contain_text("question 0")
    expect(reader.get_by_role("link", name="Earlier messages")).to_have_count(0)
    reader.context.close()

    # Without JavaScript the button opens the page before.
    nojs = browser.new_context(
        base_url=paged_server.url, java_script_enabled=False, storage_state=context.storage_state()
    ).new_page()
    nojs.goto(page.url)
    expect(nojs.locator("#messages > li")).to_have_count(4)
    nojs.get_by_role("button", name="Load earlier messages").click()
    expect(nojs).to_have_url(re.compile(r"\?before=\d+$"))
    expect(nojs.locator("#messages > li")).to_have_count(4)
    expect(nojs.locator("#messages > li").first).to_contain_text("question 1")
    nojs.context.close()
    context.close()
