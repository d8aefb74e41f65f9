// Streamed replies as formatted text while they stream, by threads/markdown.py's rules: markdown-it with
// raw HTML off, then DOMPurify with the server's allowlist of tags, attributes and URL schemes; headings
// renumbered from h2; code blocks and tables boxed as the server boxes them, so the server's HTML that
// replaces a finished reply takes the same room. Unfinished Markdown (`**bold` cut mid-word, an open code
// fence) is closed first, as `close_unfinished` does on the server (tests/threads/test_markdown_close.py
// runs the same table through both). The two libraries (static/vendor/, pinned by tools/package.json)
// load on the first reply that streams: a page that only shows history never fetches them.
(() => {
  "use strict";

  const FENCE = /^ {0,3}(`{3,}|~{3,})/gm;
  const PAIRS = ["**", "__", "~~"];
  const isSpace = (c) => /\s/.test(c);
  const isAlnum = (c) => /[\p{L}\p{N}]/u.test(c);

  // Python's str.strip()/rstrip() without arguments, and rstrip(" ").
  const rstrip = (s) => s.replace(/\s+$/, "");

  function closeUnfinished(text) {
    const fences = [...text.matchAll(FENCE)];
    let openFence = "";
    for (const m of fences) {
      if (!openFence) openFence = m[1];
      else if (m[1][0] === openFence[0] && m[1].length >= openFence.length) openFence = "";
    }
    if (openFence) return `${text.replace(/\n+$/, "")}\n${openFence}`;
    // The last paragraph: after the last blank line, or after the line of the last (closing) fence.
    let cut = text.includes("\n\n") ? text.lastIndexOf("\n\n") + 2 : 0;
    if (fences.length) {
      const last = fences[fences.length - 1];
      const lineEnd = text.indexOf("\n", last.index + last[0].length);
      cut = Math.max(cut, lineEnd < 0 ? text.length : lineEnd + 1);
    }
    const head = text.slice(0, cut);
    let block = text.slice(cut);
    let stack = []; // [marker, where it opened in `block`]
    let code = -1; // where an open inline code span started
    let i = 0;
    while (i < block.length) {
      const char = block[i];
      if (char === "\\") { i += 2; continue; }
      if (char === "`") {
        let run = 0;
        while (block[i + run] === "`") run++;
        code = code >= 0 ? -1 : i;
        i += run;
        continue;
      }
      if (code >= 0 || !"*_~".includes(char)) { i++; continue; }
      const pair = block.slice(i, i + 2);
      const marker = PAIRS.includes(pair) ? pair : char;
      if (marker === "~") { i++; continue; }
      const before = i ? block[i - 1] : " ";
      const after = i + marker.length < block.length ? block[i + marker.length] : "";
      if (stack.length && stack[stack.length - 1][0] === marker && !isSpace(before)) stack.pop();
      else if (!after || (!isSpace(after) && !(marker === "_" && isAlnum(before)))) stack.push([marker, i]);
      i += marker.length;
    }
    if (code >= 0) {
      stack = stack.filter((s) => s[1] < code);
      stack.push(["`", code]);
    }
    let closing = "";
    for (const [marker, at] of stack.reverse()) {
      if (!block.slice(at + marker.length).trim()) { // nothing after the opener: drop it
        block = block.slice(0, at).replace(/ +$/, "");
        continue;
      }
      block = rstrip(block);
      closing += marker;
    }
    return head + block + closing;
  }

  if (typeof document === "undefined") { // node: the shared test table (tests/threads/test_markdown_close.py)
    module.exports = {closeUnfinished};
    return;
  }

  // threads/markdown.py's _TAGS and _ATTRIBUTES.
  const TAGS = ["a", "blockquote", "br", "code", "del", "em", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "li",
    "ol", "p", "pre", "strong", "table", "tbody", "td", "th", "thead", "tr", "ul"];
  const ATTRS = {a: ["href", "title"], code: ["class"], ol: ["start"], th: ["align"], td: ["align"]};
  const LANGUAGE = /^language-[A-Za-z0-9_+#.-]{1,32}$/;
  const root = document.querySelector(".chat");
  let md = null;
  let purify = null;
  let loading = null;

  function script(src) {
    return new Promise((resolve, reject) => {
      const s = document.createElement("script");
      s.src = src;
      s.onload = resolve;
      s.onerror = reject;
      document.head.append(s);
    });
  }

  function setup() {
    // markdown-it's GFM tables and strikethrough match the server's `tables` and `del`; no raw HTML,
    // no bare-URL links, no smart quotes (the server has none of them).
    md = window.markdownit({html: false, linkify: false, typographer: false});
    purify = window.DOMPurify;
    purify.addHook("uponSanitizeAttribute", (node, data) => {
      const allowed = ATTRS[node.nodeName.toLowerCase()] || [];
      if (!allowed.includes(data.attrName)) data.keepAttr = false;
      else if (data.attrName === "class" && !LANGUAGE.test(data.attrValue)) data.keepAttr = false;
    });
  }

  // Load the libraries once; resolves when render() can format.
  function ready() {
    if (!loading && root) {
      loading = Promise.all([script(root.dataset.markdownSrc), script(root.dataset.purifySrc)]).then(setup);
      loading.catch(() => { loading = null; }); // offline: plain text for now, try again next time
    }
    return loading || Promise.reject(new Error("no page"));
  }

  // Headings as an outline from h2 with no skipped level (threads/markdown.py _shift_headings).
  function shiftHeadings(frag) {
    const stack = [];
    for (const h of frag.querySelectorAll("h1, h2, h3, h4, h5, h6")) {
      const old = Number(h.tagName[1]);
      while (stack.length && stack[stack.length - 1][0] >= old) stack.pop();
      const level = stack.length ? Math.min(6, stack[stack.length - 1][1] + 1) : 2;
      stack.push([old, level]);
      if (level !== old) {
        const n = document.createElement(`h${level}`);
        n.append(...h.childNodes);
        h.replaceWith(n);
      }
    }
  }

  // Code blocks and tables in the server's boxes (threads/markdown.py _wrap_scrollables).
  function box(frag) {
    for (const pre of frag.querySelectorAll("pre")) {
      const wrap = document.createElement("div");
      wrap.className = "code";
      const code = pre.firstElementChild && pre.firstElementChild.tagName === "CODE" ? pre.firstElementChild : null;
      if (code) {
        const bar = document.createElement("div");
        bar.className = "code-bar";
        const name = document.createElement("span");
        const cls = code.getAttribute("class");
        name.textContent = cls ? cls.slice("language-".length) : "code";
        bar.append(name);
        wrap.append(bar);
      }
      pre.tabIndex = 0;
      pre.replaceWith(wrap);
      wrap.append(pre);
    }
    for (const table of frag.querySelectorAll("table")) {
      const wrap = document.createElement("div");
      wrap.className = "scroll";
      wrap.tabIndex = 0;
      table.replaceWith(wrap);
      wrap.append(table);
    }
    for (const a of frag.querySelectorAll("a[href]")) a.rel = "noopener noreferrer nofollow";
  }

  // A fragment of sanitized, formatted HTML for `text` (closed first when `partial`), or null until the
  // libraries are loaded.
  function render(text, partial) {
    if (!md) return null;
    const html = md.render(partial ? closeUnfinished(text) : text);
    const frag = purify.sanitize(html, {
      ALLOWED_TAGS: TAGS,
      ALLOWED_ATTR: ["href", "title", "class", "start", "align"],
      ALLOWED_URI_REGEXP: /^(?:https?|mailto):/i,
      RETURN_DOM_FRAGMENT: true,
    });
    shiftHeadings(frag);
    box(frag);
    return frag;
  }

  window.chatMarkdown = {ready, render, closeUnfinished};
})();
