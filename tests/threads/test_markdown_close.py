"""Unfinished Markdown is closed (#22 item 4): a stopped reply kept stray `**`, and streamed text showed
raw stars until the end. One table for the server (threads/markdown.close_unfinished) and the page
(static/chat/markdown.js closeUnfinished, run under node)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.needs import program
from threads.markdown import close_unfinished, render_markdown

ROOT = Path(__file__).resolve().parents[2]
CASES = [
    ("Here is **bold te", "Here is **bold te**"),
    ("a *b", "a *b*"),
    ("snake_case and **x", "snake_case and **x**"),
    ("code `x = 1", "code `x = 1`"),
    ("```python\nprint(1)", "```python\nprint(1)\n```"),
    ("```python\nprint(1)\n", "```python\nprint(1)\n```"),
    ("~~~\nx", "~~~\nx\n~~~"),
    ("done **bold** ok", "done **bold** ok"),
    ("* item one\n* item **two", "* item one\n* item **two**"),
    ("end **", "end"),
    ("end *", "end"),
    ("a * b", "a * b"),
    ("x ~~gone", "x ~~gone~~"),
    ("a **b *c", "a **b *c***"),
    ("**bold **", "**bold**"),
    ("ok\n\n```\nx\n```\n\nthen **b", "ok\n\n```\nx\n```\n\nthen **b**"),
    ("a `code with ** inside", "a `code with ** inside`"),
    ("an \\*escaped star", "an \\*escaped star"),
    ("first **para**\n\nsecond __u", "first **para**\n\nsecond __u__"),
    ("", ""),
]


@pytest.mark.parametrize(("text", "closed"), CASES)
def test_close_unfinished(text: str, closed: str) -> None:
    assert close_unfinished(text) == closed
    assert close_unfinished(closed) == closed  # finished Markdown is left as it is


def test_the_page_closes_markdown_the_same_way() -> None:
    node = program("node", "apt-get install nodejs")
    script = (
        "const {closeUnfinished} = require(process.argv[1]);"
        "const cases = JSON.parse(require('fs').readFileSync(0, 'utf8'));"
        "console.log(JSON.stringify(cases.map(([t]) => closeUnfinished(t))));"
    )
    done = subprocess.run(
        [node, "-e", script, str(ROOT / "static" / "chat" / "markdown.js")],
        input=json.dumps(CASES),
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    assert json.loads(done.stdout) == [closed for _, closed in CASES]


def test_a_stopped_reply_is_rendered_without_stray_stars() -> None:
    assert "**" not in render_markdown(close_unfinished("Here is **bold te"))
    assert "<strong>bold te</strong>" in render_markdown(close_unfinished("Here is **bold te"))


@pytest.mark.parametrize("status", ["cancelled", "error"])
def test_a_stopped_reply_on_the_page_keeps_no_stray_stars(status: str) -> None:
    """The page's HTML of a stopped reply (fails on the old code: `**bold te` showed its stars)."""
    from threads.views import _message_html

    html = _message_html({"role": "assistant", "status": status, "content": "Here is **bold te"})
    assert html is not None and "**" not in html and "<strong>bold te</strong>" in html
    complete = _message_html({"role": "assistant", "status": "complete", "content": "a ** b"})
    assert complete is not None and "a ** b" in complete  # finished text is rendered as it is
