"""threads/markdown.py: Markdown in, sanitized HTML out; and how the thread page exposes it."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any

import pytest
from django.test import Client

from threads.markdown import render_markdown
from threads.models import Message, Thread


class _Elements(HTMLParser):
    """Every element of an HTML fragment as (tag, {attribute: value})."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.found: list[tuple[str, dict[str, str | None]]] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.append((tag, dict(attrs)))


ALLOWED_TAGS = set(
    "a blockquote br code del div em h2 h3 h4 h5 h6 hr li ol p pre span strong table tbody td th thead tr ul".split()
)


@pytest.mark.parametrize(
    "source",
    [
        "<script>alert(1)</script>",
        "text <script>alert(1)</script> text",
        "<div>\n<script>alert(1)</script>\n</div>",
        "[click](javascript:alert(1))",
        "[click](JaVaScRiPt:alert(1))",
        "[click](  javascript:alert(1) )",
        "[click](java&#115;cript:alert(1))",
        "[x](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
        "[ref][1]\n\n[1]: javascript:alert(1)",
        "<a href='javascript:alert(1)'>x</a>",
        '<img src="x" onerror="alert(1)">',
        '<p onclick="alert(1)">hi</p>',
        '<svg onload="alert(1)"></svg>',
        "<iframe src='https://evil.example'></iframe>",
        "<style>body{display:none}</style>",
        '[x](https://example.com "t" onmouseover="alert(1)")',
        "```\n</code></pre><script>alert(1)</script>\n```",
        "```html onload=alert(1)\nx\n```",
        '```"><script>alert(1)</script>\nx\n```',
        "![x](javascript:alert(1))",
    ],
)
def test_dangerous_markup_is_neutralised(source: str) -> None:
    html = render_markdown(source)
    for tag, attrs in _Elements(html).found:
        assert tag in ALLOWED_TAGS, html
        assert not [name for name in attrs if name.startswith("on") or name in ("style", "src")], html
        href = (attrs.get("href") or "").strip().lower()
        assert not href or href.startswith(("http://", "https://", "mailto:")), html
    assert "<script" not in html.lower()


def test_raw_html_is_shown_as_text() -> None:
    assert render_markdown("a <b>bold</b> claim") == "<p>a &lt;b&gt;bold&lt;/b&gt; claim</p>"


def test_safe_links_keep_their_href_with_a_protective_rel() -> None:
    html = render_markdown("[docs](https://example.com/a?b=1) and <mailto:me@example.com>")
    assert '<a href="https://example.com/a?b=1" rel="noopener noreferrer nofollow">docs</a>' in html
    assert 'href="mailto:' in html


def test_code_blocks_are_kept_escaped_with_their_language() -> None:
    html = render_markdown('```python\nprint("<b>hi</b>")\nif a < b and c > d: pass\n```')
    assert '<div class="code"><div class="code-bar"><span>python</span></div>' in html
    assert '<pre tabindex="0"><code class="language-python">' in html
    assert "print(&quot;&lt;b&gt;hi&lt;/b&gt;&quot;)" in html or 'print("&lt;b&gt;hi&lt;/b&gt;")' in html
    assert "if a &lt; b and c &gt; d: pass" in html
    assert html.endswith("</code></pre></div>")


def test_indented_code_and_inline_code() -> None:
    html = render_markdown("Use `x < y`:\n\n    indented()\n")
    assert "<code>x &lt; y</code>" in html
    assert '<span>code</span></div><pre tabindex="0"><code>indented()' in html


@pytest.mark.parametrize(
    ("source", "levels"),
    [
        ("# A\n\n## B\n\n### C", [2, 3, 4]),
        ("### A\n\n#### B\n\n### C", [2, 3, 2]),
        ("#### A\n\n## B\n\n### C\n\n###### D", [2, 2, 3, 4]),
        ("no headings", []),
    ],
)
def test_headings_are_an_outline_under_the_page_title(source: str, levels: list[int]) -> None:
    html = render_markdown(source)
    assert [int(n) for n in re.findall(r"<h(\d)>", html)] == levels
    assert len(re.findall(r"</h\d>", html)) == len(levels)


def test_lists_tables_and_emphasis() -> None:
    html = render_markdown("**b** _i_\n\n3. three\n4. four\n\n| a | b |\n|---|---|\n| 1 | 2 |")
    assert "<strong>b</strong> <em>i</em>" in html
    assert '<ol start="3">' in html
    assert '<div class="scroll" tabindex="0"><table>' in html and "</table></div>" in html
    assert "style=" not in html


def _thread_with_reply(owner: Any, content: str, status: str = "complete") -> tuple[Thread, Message]:
    thread = Thread.objects.create(owner=owner, title="t", provider="demo", model="demo-1")
    question = Message.objects.create(thread=thread, role="user", content="q", request_id="r1")
    reply = Message.objects.create(
        thread=thread, role="assistant", content=content, status=status, request_id="r1", parent=question
    )
    return thread, reply


@pytest.mark.django_db
def test_thread_page_renders_finished_replies_as_sanitized_markdown(client: Client, user: Any) -> None:
    thread, _ = _thread_with_reply(user, "**hi** <script>alert(1)</script>\n\n```js\nx()\n```")
    client.force_login(user)
    page = client.get(f"/threads/{thread.pk}/").content.decode()
    assert '<div class="body md"><p><strong>hi</strong> &lt;script&gt;' in page
    assert "<script>alert(1)" not in page
    assert '<code class="language-js">x()' in page


@pytest.mark.django_db
def test_streaming_reply_is_plain_text_on_the_page(client: Client, user: Any) -> None:
    thread, _ = _thread_with_reply(user, "**partial", status="streaming")
    client.force_login(user)
    page = client.get(f"/threads/{thread.pk}/").content.decode()
    assert '<div class="body plain">**partial</div>' in page


@pytest.mark.django_db
def test_html_of_one_message_for_the_page_script(client: Client, user: Any, other_user: Any) -> None:
    thread, reply = _thread_with_reply(user, "*done*")
    client.force_login(user)
    answer = client.get(f"/threads/{thread.pk}/?html={reply.pk}")
    assert answer.status_code == 200
    assert answer.json() == {"id": reply.pk, "status": "complete", "html": "<p><em>done</em></p>"}
    assert answer["Cache-Control"] == "private, no-store"
    assert client.get(f"/threads/{thread.pk}/?html=999999").status_code == 404
    assert client.get(f"/threads/{thread.pk}/?html=abc").status_code == 404

    Message.objects.filter(pk=reply.pk).update(status="streaming")
    assert client.get(f"/threads/{thread.pk}/?html={reply.pk}").json()["html"] is None

    client.force_login(other_user)  # someone else's thread: not found, like the API
    assert client.get(f"/threads/{thread.pk}/?html={reply.pk}").status_code == 404
