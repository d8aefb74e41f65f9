"""#21 in a browser: a page streaming a reply through nginx (two daphne processes, PostgreSQL + Redis)
survives a rolling restart of both processes (SIGTERM, start again, one after the other) without the
person doing anything: the reply completes on the page with the text that was saved."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from playwright.sync_api import Browser, expect

from benchmarks.deploy import temporary_database
from deploy.serve import ROOT, AppProcess, Nginx, free_port
from tests.e2e.test_chat import last_reply, new_thread, sign_up
from tests.needs import missing

pytestmark = [pytest.mark.browser, pytest.mark.services, pytest.mark.slow]


@pytest.fixture(scope="module")
def stack() -> Iterator[tuple[Nginx, list[AppProcess]]]:
    if not (os.environ.get("DATABASE_URL") and os.environ.get("REDIS_URL")):
        missing("needs DATABASE_URL and REDIS_URL")  # conftest's rule for `services` tests says so first
    parts = urlsplit(os.environ["DATABASE_URL"])
    server_url = urlunsplit(parts._replace(path=""))
    work = Path(tempfile.mkdtemp(prefix="e2e-rolling-"))
    with temporary_database(server_url, f"e2e_rolling_{os.getpid()}") as db_url:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
        env.update(
            DJANGO_SETTINGS_MODULE="chatapp.settings",
            DEBUG="true",  # plain http on loopback (the WebSocket origin check needs https otherwise)
            DATABASE_URL=db_url,
            CHANNEL_LAYER_PREFIX=f"e2eroll{uuid.uuid4().hex[:8]}",
            PROMETHEUS_MULTIPROC_DIR=str(work / "prometheus"),
            PACER_PROCESSES="2",
            # A reply of about 12 s: long enough for two restarts mid-stream.
            DEMO_TTFT_MS="300",
            DEMO_TOKENS_PER_S="15",
            DEMO_MAX_TOKENS="180",
            SHUTDOWN_GRACE_S="30",
        )
        (work / "prometheus").mkdir()
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput"],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
        )
        apps = [AppProcess(free_port(), env, work / f"daphne-{i}.log") for i in range(2)]
        nginx = Nginx(free_port(), [a.port for a in apps], work / "nginx")
        try:
            for app in apps:
                app.start()
            nginx.start()
            yield nginx, apps
        finally:
            for app in apps:
                app.terminate(timeout=40)
            nginx.stop()
            shutil.rmtree(work, ignore_errors=True)


def test_a_streaming_page_survives_a_rolling_restart_of_both_processes(
    browser: Browser, stack: tuple[Nginx, list[AppProcess]]
) -> None:
    nginx, apps = stack
    context = browser.new_context(base_url=nginx.url)
    page = context.new_page()
    sign_up(page)
    new_thread(page, "Rolling restart")
    page.get_by_role("textbox", name="Message").fill("tell me about rolling restarts")
    page.get_by_role("textbox", name="Message").press("Enter")
    body = page.locator("li.msg.assistant[data-status=streaming] .body")
    expect(body).to_contain_text(re.compile(r"\w+ \w+"))

    for app in apps:  # one at a time, as `systemctl restart` of each instance does
        assert app.restart(timeout=40) == 0, app.log_tail()
        expect(page.locator("#conn")).to_have_text("Live")

    reply = last_reply(page)
    expect(reply).to_have_attribute("data-status", "complete", timeout=60_000)
    expect(page.locator("li.msg.assistant")).to_have_count(1)
    shown = reply.locator(".body").inner_text()
    saved = page.evaluate(
        "id => fetch(`/api/threads/${id}`).then(r => r.json()).then(t => t.messages.at(-1))",
        page.locator(".chat").get_attribute("data-thread-id"),
    )
    assert saved["status"] == "complete"
    # The page shows the saved reply (rendered as Markdown: compare the words).
    assert re.findall(r"\w+", shown) == re.findall(r"\w+", saved["content"])
    for app in apps:
        log = app.log_tail(50_000)
        assert "Traceback" not in log and "drained (0 generation(s) interrupted)" in log
    context.close()
