"""Assistant Markdown -> sanitized HTML, for the thread page (server-side only; the browser never parses
model output as HTML).

Two layers, so that one mistake is not enough for an XSS:
1. Markdown is rendered with raw HTML *disabled*: `<b>` or `<script>` typed by a model shows as text,
   which is also what a reader of a chat transcript expects.
2. The result goes through nh3 (ammonia) with an allowlist of tags and attributes, and links limited
   to http(s) and mailto; `javascript:` and `data:` URLs lose their href.

Headings are renumbered from h2 (the page's h1 is the thread title). Code blocks keep a `language-*` class on `<code>` (nothing else). After cleaning, code blocks and tables
are wrapped in a keyboard-focusable box (they scroll sideways on a 360 px phone); chat.js puts a copy
button in each code box without moving the layout.
"""

from __future__ import annotations

import re
import threading

import markdown
import nh3

_TAGS = frozenset(
    {
        "a",
        "blockquote",
        "br",
        "code",
        "del",
        "em",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "hr",
        "li",
        "ol",
        "p",
        "pre",
        "strong",
        "table",
        "tbody",
        "td",
        "th",
        "thead",
        "tr",
        "ul",
    }
)
_ATTRIBUTES = {"a": {"href", "title"}, "code": {"class"}, "ol": {"start"}, "th": {"align"}, "td": {"align"}}
_URL_SCHEMES = frozenset({"http", "https", "mailto"})
_LANGUAGE_CLASS = re.compile(r"language-[A-Za-z0-9_+#.-]{1,32}")


def _attribute_filter(tag: str, attr: str, value: str) -> str | None:
    """Keep a class on <code> only when it is exactly one `language-*` name (what fenced_code emits)."""
    if attr == "class":
        return value if tag == "code" and _LANGUAGE_CLASS.fullmatch(value) else None
    return value


_CLEANER = nh3.Cleaner(
    tags=set(_TAGS),
    attributes={tag: set(attrs) for tag, attrs in _ATTRIBUTES.items()},
    attribute_filter=_attribute_filter,
    url_schemes=set(_URL_SCHEMES),
    link_rel="noopener noreferrer nofollow",
    strip_comments=True,
)

# A Markdown instance keeps state between conversions (reset() clears it) and is not thread-safe;
# page views run on several threads under ASGI, so each thread gets its own.
_local = threading.local()


def _renderer() -> markdown.Markdown:
    md: markdown.Markdown | None = getattr(_local, "md", None)
    if md is None:
        md = markdown.Markdown(extensions=["fenced_code", "tables", "sane_lists"], output_format="html")
        # Raw HTML is shown as text instead of being passed through (layer 1 above).
        md.preprocessors.deregister("html_block")
        md.inlinePatterns.deregister("html")
        _local.md = md
    return md


def render_markdown(text: str) -> str:
    """Sanitized HTML for Markdown `text` (safe to mark safe in a template)."""
    md = _renderer()
    try:
        html = md.convert(text)
    finally:
        md.reset()
    return _wrap_scrollables(_shift_headings(_CLEANER.clean(html)))


_HEADING_TAG = re.compile(r"<(/?)h([1-6])>")


def _shift_headings(html: str) -> str:
    """Renumber a message's headings as an outline starting at h2 (the page's h1 is the thread title)
    with no skipped level: "#### A / ## B / ### C" becomes "h2 A / h2 B / h3 C", so heading navigation
    in a screen reader stays sound whatever levels the model picked."""
    stack: list[tuple[int, int]] = []  # (level in the Markdown, level on the page) of open sections
    current = 2

    def renumber(m: re.Match[str]) -> str:
        nonlocal current
        if not m[1]:  # an opening tag; a closing tag reuses its level (headings do not nest)
            old = int(m[2])
            while stack and stack[-1][0] >= old:
                stack.pop()
            current = min(6, stack[-1][1] + 1) if stack else 2
            stack.append((old, current))
        return f"<{m[1]}h{current}>"

    return _HEADING_TAG.sub(renumber, html)


_CODE_BLOCK = re.compile(r'<pre><code(?: class="language-([^"]+)")?>')


def _code_box(m: re.Match[str]) -> str:
    language = m[1]
    code = f'<code class="language-{language}">' if language else "<code>"
    return (
        f'<div class="code"><div class="code-bar"><span>{language or "code"}</span></div>'
        f'<pre tabindex="0">{code}'
    )


def _wrap_scrollables(html: str) -> str:
    """Code blocks get a box with a title bar (language, and the copy button chat.js adds); code and
    tables scroll sideways in a keyboard-focusable box.

    Safe string surgery: in nh3's output a literal "<pre>" or "<table>" can only be a tag (text is
    escaped), <pre> and <table> keep no attribute, and a language name is limited to _LANGUAGE_CLASS."""
    html = _CODE_BLOCK.sub(_code_box, html)
    return (
        html.replace("<pre>", '<div class="code"><pre tabindex="0">')
        .replace("</pre>", "</pre></div>")
        .replace("<table>", '<div class="scroll" tabindex="0"><table>')
        .replace("</table>", "</table></div>")
    )


_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})", re.M)
_PAIRS = ("**", "__", "~~")


def close_unfinished(text: str) -> str:
    """Markdown cut off mid-reply (a stopped or failed stream), closed so that it renders as it was
    meant: an open code fence is closed, and so are an inline code span and `**`, `__`, `~~`, `*`, `_`
    left open in the last paragraph (an opener with nothing after it is dropped instead).
    static/chat/markdown.js does the same to streamed text (tests/threads/test_markdown_close.py)."""
    fences = list(_FENCE.finditer(text))
    open_fence = _open_fence(fences)
    if open_fence:
        return f"{text.rstrip(chr(10))}\n{open_fence}"
    # The last paragraph: after the last blank line, or after the line of the last (closing) fence.
    cut = text.rfind("\n\n") + 2 if "\n\n" in text else 0
    if fences:
        line_end = text.find("\n", fences[-1].end())
        cut = max(cut, len(text) if line_end < 0 else line_end + 1)
    head, block = text[:cut], text[cut:]
    closing = ""
    for marker, at in reversed(_open_markers(block)):
        if not block[at + len(marker) :].strip():  # nothing after the opener: drop it
            block = block[:at].rstrip(" ")
            continue
        block = block.rstrip()
        closing += marker
    return head + block + closing


def _open_fence(fences: list[re.Match[str]]) -> str:
    """The code fence left open by these fence lines, or ""."""
    open_fence = ""
    for m in fences:
        if not open_fence:
            open_fence = m[1]
        elif m[1][0] == open_fence[0] and len(m[1]) >= len(open_fence):
            open_fence = ""
    return open_fence


def _open_markers(block: str) -> list[tuple[str, int]]:
    """The emphasis markers and inline code span left open in `block`: (marker, where it opened)."""
    stack: list[tuple[str, int]] = []
    code = -1  # where an open inline code span started
    i = 0
    while i < len(block):
        char = block[i]
        if char == "\\":
            i += 2
            continue
        if char == "`":
            run = len(block[i:]) - len(block[i:].lstrip("`"))
            code = -1 if code >= 0 else i
            i += run
            continue
        if code >= 0 or char not in "*_~":
            i += 1
            continue
        pair = block[i : i + 2]
        marker = pair if pair in _PAIRS else char
        if marker == "~":
            i += 1
            continue
        before = block[i - 1] if i else " "
        after = block[i + len(marker)] if i + len(marker) < len(block) else ""
        if stack and stack[-1][0] == marker and not before.isspace():
            stack.pop()
        elif not after or (not after.isspace() and not (marker == "_" and before.isalnum())):
            stack.append((marker, i))
        i += len(marker)
    if code >= 0:
        stack = [s for s in stack if s[1] < code]
        stack.append(("`", code))
    return stack
