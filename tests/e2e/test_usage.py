"""The usage page, a budget's refusal on the thread page, and the staff usage report, in a real browser."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from allauth.mfa.totp.internal.auth import generate_totp_secret
from playwright.sync_api import Browser, Page, expect

from tests.e2e.conftest import AppServer, _serve
from tests.e2e.test_chat import PASSWORD, last_reply, new_thread, sign_up
from tests.totp import fresh_code

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def priced_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    """The demo model at a price, fast replies."""
    yield from _serve(
        tmp_path_factory.mktemp("usage"),
        MODEL_PRICES='{"demo": ["0.15", "0.60"]}',
        DEMO_TTFT_MS="0",
        DEMO_TOKENS_PER_S="400",
    )


def send(page: Page, text: str) -> None:
    box = page.get_by_role("textbox", name="Message")
    box.fill(text)
    box.press("Enter")


def test_usage_page_budget_refusal_and_staff_report(
    page: Page, browser: Browser, priced_server: AppServer
) -> None:
    base = priced_server.url
    username = sign_up(page, base)
    new_thread(page, "Costs")
    send(page, "write a python function")
    expect(last_reply(page)).to_have_attribute("data-status", "complete", timeout=20_000)

    # This month's usage: one call, its tokens and cost, the chart and the model.
    page.get_by_role("link", name="Usage").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Your usage in")
    expect(page.locator("#u-calls")).to_have_text("1")
    expect(page.locator("#u-output")).not_to_have_text("0")
    expect(page.locator("#u-cost")).to_have_text(re.compile(r"^\$0\.\d{4}$"))
    expect(page.get_by_role("img", name=re.compile("Tokens per day"))).to_be_visible()
    expect(page.locator("svg.usage-chart rect.bar")).not_to_have_count(0)
    expect(page.get_by_role("row", name="demo/demo-1", exact=False)).to_be_visible()

    # A budget of 1 token a day, now spent: the next send is refused with a message saying why.
    priced_server.manage(
        "shell",
        "-c",
        "from billing.models import Budget; from django.contrib.auth import get_user_model; "
        f"Budget.objects.create(user=get_user_model().objects.get(username={username!r}), "
        "unit='tokens', period='day', limit=1)",
    )
    page.go_back()
    expect(page.locator("#conn")).to_have_text("Live")
    page.wait_for_timeout(10_500)  # budget rules are cached per process for BUDGET_RULES_TTL_S (10 s)
    send(page, "and another one")
    error = page.locator("#composer-error")
    expect(error).to_contain_text("budget of 1 tokens per day")
    expect(error).to_contain_text("resets tomorrow")

    # Staff: the report by user, model and day, and its CSV.
    # Staff need a second factor before admin opens (accounts/middleware.py): an authenticator app.
    secret = generate_totp_secret()
    priced_server.manage(
        "shell",
        "-c",
        "from django.contrib.auth import get_user_model; "
        "from allauth.mfa.totp.internal.auth import TOTP; "
        f"TOTP.activate(get_user_model().objects.create_superuser('boss', 'boss@example.com', {PASSWORD!r}), "
        f"{secret!r})",
    )
    staff = browser.new_page()
    staff.goto(f"{base}/admin/login/")
    staff.get_by_label("Username").fill("boss")
    staff.get_by_label("Password").fill(PASSWORD)
    staff.get_by_role("button", name="Log in").click()
    staff.get_by_label("Code").fill(fresh_code(secret))
    staff.get_by_role("button", name="Sign In").click()
    staff.goto(f"{base}/admin/billing/usagerecord/")
    staff.get_by_role("link", name="Usage report").click()
    report = staff.locator("#usage-report")
    expect(report.get_by_role("row", name=re.compile(username))).to_contain_text("demo/demo-1")
    with staff.expect_download() as download:
        staff.get_by_role("link", name="Download CSV").click()
    text = download.value.path().read_text()
    assert text.startswith("date,user,user_id,model") and username in text
    # The dashboard shows who reached a budget.
    staff.goto(f"{base}/staff/dashboard/")
    expect(staff.locator("#budget-hits")).to_contain_text(username)
    staff.close()
