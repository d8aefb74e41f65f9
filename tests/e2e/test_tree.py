"""The conversation tree in a real browser (#18, and #22 item 1): Retry answers the failed question again
in place, Regenerate and Edit make versions, ‹ › switches between them and a second tab follows,
rename in place, archive."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.e2e.conftest import AppServer
from tests.e2e.test_chat import last_reply, new_thread, sign_up
from tests.e2e.test_screens import AXE, _check_page
from tests.needs import missing

pytestmark = pytest.mark.browser


def send(page: Page, text: str) -> None:
    box = page.get_by_role("textbox", name="Message")
    box.fill(text)
    box.press("Enter")
    expect(last_reply(page)).to_have_attribute("data-status", re.compile("complete|error"), timeout=20_000)


def test_retry_replaces_the_failed_reply_leaving_one_pair(page: Page) -> None:
    """#22 item 1: Retry used to append a second question and reply under the failed pair, whose error and
    Retry button stayed (fails on the old code: two user messages, two errors)."""
    sign_up(page)
    new_thread(page, "Retry in place", model="openai/gpt-4o-mini")
    page.get_by_role("textbox", name="Message").fill("hello?")
    page.get_by_role("textbox", name="Message").press("Enter")
    failed = last_reply(page)
    expect(failed).to_have_attribute("data-status", "error")
    first_id = failed.get_attribute("data-id")

    failed.get_by_role("button", name="Retry").click()
    # The same question answered again (the provider still fails): one pair on the page.
    expect(last_reply(page)).not_to_have_attribute("data-id", first_id or "")
    expect(last_reply(page)).to_have_attribute("data-status", "error")
    expect(page.locator("li.msg.user")).to_have_count(1)
    expect(page.locator("li.msg.assistant")).to_have_count(1)
    expect(page.get_by_role("group", name="Version 2 of 2")).to_be_visible()
    page.reload()
    expect(page.locator("li.msg.user")).to_have_count(1)
    expect(page.locator("li.msg.assistant")).to_have_count(1)


def test_regenerate_edit_and_switch_versions_with_a_second_tab_following(
    browser: Browser, app_server: AppServer
) -> None:
    context = browser.new_context(base_url=app_server.url)
    page = context.new_page()
    sign_up(page)
    new_thread(page, "Versions")
    send(page, "tell me a joke")
    first_reply = last_reply(page).get_attribute("data-id")
    other = context.new_page()
    other.goto(page.url)
    expect(other.locator("#conn")).to_have_text("Live")

    # Regenerate: a second version of the reply, in place.
    last_reply(page).get_by_role("button", name="Regenerate this reply").click()
    expect(last_reply(page)).not_to_have_attribute("data-id", first_reply or "")
    expect(last_reply(page)).to_have_attribute("data-status", "complete", timeout=20_000)
    expect(page.locator("li.msg.assistant")).to_have_count(1)
    expect(page.get_by_role("group", name="Version 2 of 2")).to_be_visible()
    # The other tab follows within a second or so.
    expect(other.get_by_role("group", name="Version 2 of 2")).to_be_visible(timeout=5_000)

    # Back to the first version: saved, and the other tab follows.
    page.get_by_role("button", name="Previous version").click()
    expect(last_reply(page)).to_have_attribute("data-id", first_reply or "")
    expect(page.get_by_role("group", name="Version 1 of 2")).to_be_visible()
    expect(last_reply(other)).to_have_attribute("data-id", first_reply or "", timeout=5_000)
    page.reload()
    expect(last_reply(page)).to_have_attribute("data-id", first_reply or "")

    # Edit the question (ArrowUp in the empty composer opens the last one): a new branch.
    expect(page.locator("#conn")).to_have_text("Live")
    page.get_by_role("textbox", name="Message").press("ArrowUp")
    editor = page.get_by_role("textbox", name="Edit your message")
    expect(editor).to_be_focused()
    editor.fill("tell me a longer joke")
    editor.press("Enter")
    expect(page.locator("li.msg.user")).to_have_count(1)
    expect(page.locator("li.msg.user .body")).to_have_text("tell me a longer joke")
    expect(last_reply(page)).to_have_attribute("data-status", "complete", timeout=20_000)
    user_versions = page.locator("li.msg.user").get_by_role("group", name="Version 2 of 2")
    expect(user_versions).to_be_visible()
    expect(other.locator("li.msg.user .body")).to_have_text("tell me a longer joke", timeout=5_000)
    # The old question and its replies are still there.
    user_versions.get_by_role("button", name="Previous version").click()
    expect(page.locator("li.msg.user .body")).to_have_text("tell me a joke")
    context.close()


def test_rename_in_place_archive_and_search(page: Page) -> None:
    sign_up(page)
    new_thread(page, "Old name")
    send(page, "zebra stripes, why?")
    page.get_by_role("button", name="Rename").click()
    field = page.get_by_role("textbox", name="Thread title")
    field.fill("New name")
    field.press("Enter")
    expect(page.get_by_role("heading", level=1)).to_have_text("New name")
    expect(page).to_have_title(re.compile("^New name"))
    page.reload()
    expect(page.get_by_role("heading", level=1)).to_have_text("New name")

    page.get_by_role("button", name="Archive").click()
    expect(page.get_by_role("heading", name="Your threads")).to_be_visible()
    expect(page.get_by_role("link", name=re.compile("New name"))).to_have_count(0)

    # Archived threads leave the list and stay searchable (a GET form: no JavaScript needed).
    page.get_by_role("searchbox", name="Search your threads").fill("ZEBRA")
    page.get_by_role("searchbox", name="Search your threads").press("Enter")
    expect(page).to_have_url(re.compile(r"\?q=ZEBRA"))
    result = page.get_by_role("link", name=re.compile("New name"))
    expect(result).to_be_visible()
    expect(result.locator("mark")).to_have_text(re.compile("zebra", re.I))
    page.goto("/?archived=1")
    expect(page.get_by_role("link", name=re.compile("New name"))).to_be_visible()


def test_export_download_and_import(page: Page, tmp_path: Path) -> None:
    sign_up(page)
    new_thread(page, "Carry me over")
    send(page, "pack a suitcase")
    with page.expect_download() as md:
        page.get_by_role("link", name="Export Markdown").click()
    assert md.value.suggested_filename.endswith(".md")
    assert "pack a suitcase" in Path(md.value.path()).read_text()
    with page.expect_download() as js:
        page.get_by_role("link", name="Export JSON").click()
    saved = tmp_path / js.value.suggested_filename
    js.value.save_as(saved)

    page.goto("/")
    page.get_by_label(re.compile("Import a conversation")).set_input_files(saved)
    page.get_by_role("button", name="Import", exact=True).click()
    expect(page).to_have_url(re.compile(r"/threads/\d+/$"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Carry me over")
    expect(page.locator("li.msg.user .body")).to_have_text("pack a suitcase")
    # A broken file: the reason, by the form, and nothing imported.
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    page.goto("/")
    page.get_by_label(re.compile("Import a conversation")).set_input_files(bad)
    page.get_by_role("button", name="Import", exact=True).click()
    expect(page.get_by_role("alert")).to_contain_text("not JSON")


def test_share_link_opens_logged_out_and_revoke_makes_it_404(browser: Browser, app_server: AppServer) -> None:
    context = browser.new_context(base_url=app_server.url)
    page = context.new_page()
    sign_up(page)
    new_thread(page, "Worth sharing")
    send(page, "write a python function")
    page.get_by_role("button", name="Share").click()
    link = page.locator("#share-link")
    expect(link).to_be_visible()
    url = link.get_attribute("href") or ""

    stranger = browser.new_context(base_url=app_server.url)  # no session: logged out
    reader = stranger.new_page()
    reader.goto(url)
    expect(reader.get_by_role("heading", level=1)).to_have_text("Worth sharing")
    expect(reader.locator("li.msg.assistant .body.md .code pre code")).to_contain_text("def ")
    expect(reader.locator('meta[name="robots"]')).to_have_attribute("content", "noindex, nofollow")
    expect(reader.get_by_role("link", name="Log in")).to_be_visible()

    page.get_by_role("button", name="Stop sharing").click()
    expect(page.locator("#share-link")).to_have_count(0)
    assert reader.goto(url).status == 404  # type: ignore[union-attr]
    stranger.close()
    context.close()


def test_the_tree_controls_and_the_share_page_have_no_axe_violations(
    browser: Browser, app_server: AppServer
) -> None:
    """Versions, Edit, Regenerate, rename, search, import and the share page: labelled and reachable
    (axe-core: 0 violations, light and dark)."""
    if not AXE.exists():
        missing(f"{AXE} is missing: run `npm ci --prefix tools`")
    axe_source = AXE.read_text()
    for scheme in ("light", "dark"):
        context = browser.new_context(base_url=app_server.url, color_scheme=scheme, bypass_csp=True)
        page = context.new_page()
        sign_up(page)
        new_thread(page, "Accessible")
        send(page, "hello")
        last_reply(page).get_by_role("button", name="Regenerate this reply").click()
        expect(page.get_by_role("group", name="Version 2 of 2")).to_be_visible()
        expect(last_reply(page)).to_have_attribute("data-status", "complete", timeout=20_000)
        page.get_by_role("button", name="Share").click()
        expect(page.locator("#share-link")).to_be_visible()
        page.wait_for_load_state()
        _check_page(page, 1280, scheme, axe_source)
        url = page.locator("#share-link").get_attribute("href") or ""
        page.goto("/?q=hello")
        page.wait_for_load_state()
        _check_page(page, 1280, scheme, axe_source)
        reader = browser.new_context(base_url=app_server.url, color_scheme=scheme, bypass_csp=True)
        shared = reader.new_page()
        shared.goto(url)
        shared.wait_for_load_state()
        _check_page(shared, 1280, scheme, axe_source)
        reader.close()
        context.close()
