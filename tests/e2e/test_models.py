"""The model picker in a real browser (#17): pick a model, send, switch model, send again; each reply
shows the model that answered it, live and after a reload."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Browser, expect

from tests.e2e.conftest import AppServer
from tests.e2e.test_chat import last_reply, sign_up

pytestmark = pytest.mark.browser

ADD_LAB = (
    "from providers.models import Connection, ModelOffer; "
    "c, _ = Connection.objects.get_or_create(name='lab', defaults={'kind': 'demo', 'rps': 0}); "
    "ModelOffer.objects.get_or_create(connection=c, model='quick', defaults={'label': 'Lab quick'})"
)


def test_pick_send_switch_send_each_reply_shows_its_model(browser: Browser, models_server: AppServer) -> None:
    models_server.manage("shell", "-c", ADD_LAB)
    page = browser.new_page(base_url=models_server.url)
    sign_up(page)
    picker = page.get_by_label("Model")
    expect(picker.locator("option")).to_have_text(["demo-1", "Lab quick"])
    picker.select_option(label="Lab quick")
    page.get_by_label("Title").fill("Two models")
    page.get_by_role("button", name="New thread").click()
    expect(page).to_have_url(re.compile(r"/threads/\d+/$"))
    expect(page.locator("#conn")).to_have_text("Live")

    thread_picker = page.get_by_label("Model", exact=True)
    expect(thread_picker).to_have_value("lab/quick")
    box = page.get_by_role("textbox", name="Message")
    box.fill("first question")
    box.press("Enter")
    first = page.locator("li.msg.assistant").first
    expect(first).to_have_attribute("data-status", "complete")
    expect(first.locator(".model-tag")).to_have_text("Lab quick")

    thread_picker.select_option(label="demo-1")  # keyboard users: focus, arrows, the change applies
    expect(thread_picker).to_have_attribute("data-current", "demo/demo-1")
    expect(box).to_have_attribute("placeholder", "Message demo-1")
    box.fill("second question")
    box.press("Enter")
    expect(page.locator("li.msg.assistant")).to_have_count(2)
    second = last_reply(page)
    expect(second).to_have_attribute("data-status", "complete")
    expect(second.locator(".model-tag")).to_have_text("demo-1")
    expect(first.locator(".model-tag")).to_have_text("Lab quick")

    page.locator("summary", has_text="System prompt").click()
    page.get_by_role("textbox", name="System prompt").fill("Answer briefly.")
    page.get_by_role("button", name="Save prompt").click()
    expect(page.locator("#system-saved")).to_have_text("Saved: the next reply uses it.")

    page.reload()
    expect(page.locator("#system-prompt")).to_have_value("Answer briefly.")  # in the closed <details>
    tags = page.locator("li.msg.assistant .model-tag")
    expect(tags).to_have_text(["Lab quick", "demo-1"])
    expect(page.get_by_label("Model", exact=True)).to_have_value("demo/demo-1")
    page.close()
