// The thread page. One WebSocket per tab (protocol: docs/api.md): a snapshot on connect, live deltas shown as
// formatted Markdown as they stream (static/chat/markdown.js, the server's rules), finished replies swapped
// for the server's sanitized Markdown HTML, Stop, inline errors with
// Retry, reconnect + resume (the snapshot carries the text streamed so far), and earlier pages on scroll (or "Load earlier messages")
// (the snapshot holds the newest page; older pages come with `history` frames).
(() => {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const root = document.querySelector(".chat");
  if (!root) return;
  const threadId = root.dataset.threadId;
  const list = $("messages");
  const form = $("composer");
  const input = $("content");
  const sendBtn = $("send");
  const stopBtn = $("stop");
  const conn = $("conn");
  const live = $("live");
  const composerError = $("composer-error");
  const earlier = $("earlier");
  const earlierForm = $("earlier-form"); // without JavaScript it opens ?before=<the oldest shown>
  const connNote = $("composer-conn"); // where the connection stands, by the composer
  const relogin = $("relogin");
  const jump = $("jump");
  // A phone's on-screen keyboard: Enter adds a line (its own key), the Send button sends.
  const touch = matchMedia("(hover: none) and (pointer: coarse)").matches;
  const streams = new Map(); // request_id -> {id, seq, li, raw: the text so far, frame: a paint is due}
  let ws = null;
  let retries = 0;
  let timer = 0;
  let revoked = false; // closed with 4001 (a log-out somewhere): is this browser still signed in?
  let pending = null; // {rid, content}: sent by this tab, not started yet
  let failed = ""; // content of the last send that failed before it started (composer Retry)
  let spoken = ""; // streamed text not yet handed to the live region
  let loadingEarlier = false; // a `history` request is on its way
  let everOpened = false; // the first "Connecting…" is not worth a note by the composer

  const el = (tag, cls, text) => {
    const n = document.createElement(tag);
    if (cls) n.className = cls;
    if (text !== undefined) n.textContent = text;
    return n;
  };
  const newId = () => {
    const b = crypto.getRandomValues(new Uint8Array(16));
    return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  };
  const nearBottom = () => innerHeight + scrollY >= document.documentElement.scrollHeight - 120;
  const toBottom = () => scrollTo(0, document.documentElement.scrollHeight);

  // Screen readers hear streamed text a sentence at a time, not one token at a time.
  function speak(text, flush) {
    spoken += text;
    if (!spoken.trim() || !(flush || /[.!?:\n]\s*$/.test(spoken) || spoken.length > 240)) return;
    live.append(el("p", null, spoken));
    spoken = "";
    while (live.childElementCount > 4) live.firstElementChild.remove();
  }

  // The state in the header, and by the composer whenever the socket is not live (after the first open):
  // `login` offers "Log in again", `final` says reconnecting will not help.
  function setConn(text, {login = false} = {}) {
    if (conn.textContent !== text) conn.textContent = text;
    const live = text === "Live";
    connNote.hidden = live || (!everOpened && !login && text === "Connecting…");
    if (connNote.firstElementChild.textContent !== text) connNote.firstElementChild.textContent = text;
    connNote.classList.toggle("bad", login);
    relogin.hidden = !login;
  }

  function signedOut() {
    clearTimeout(timer);
    setConn("You are signed out.", {login: true});
  }

  // A handshake refused before the socket opened reaches the page as a bare 1006, like a server that is
  // down: ask the server why (GET /api/socket-check, docs/api.md). True when the page should stop retrying.
  async function refused() {
    let data;
    try {
      const q = new URLSearchParams({origin: location.origin, thread: threadId});
      const r = await fetch(`/api/socket-check?${q}`, {headers: {Accept: "application/json"}, cache: "no-store"});
      if (!r.ok) return false;
      data = await r.json();
    } catch { return false; } // the server is down: keep retrying
    if (!data || data.ok || !data.reason) return false;
    if (data.reason.code === "unauthenticated") signedOut();
    else setConn(`Cannot connect: ${data.reason.message}`);
    speak(conn.textContent, true);
    return true;
  }

  // "Jump to latest" while the newest message is out of sight.
  function showJump() { jump.hidden = nearBottom(); }

  function refresh() {
    const open = ws && ws.readyState === WebSocket.OPEN;
    sendBtn.disabled = !open || !!pending || streams.size > 0;
    // Stop takes Send's place while a reply streams (no extra row pushing the composer up).
    const active = document.activeElement;
    stopBtn.hidden = streams.size === 0;
    sendBtn.hidden = !stopBtn.hidden;
    if ((active === sendBtn && sendBtn.hidden) || (active === stopBtn && stopBtn.hidden)) input.focus({preventScroll: true});
    if (stopBtn.hidden) { stopBtn.disabled = false; stopBtn.textContent = "Stop"; }
    form.setAttribute("aria-busy", String(!!pending || streams.size > 0));
    $("empty").hidden = list.childElementCount > 0;
  }

  // Code blocks get a copy button in their title bar (already in the server's HTML: nothing moves).
  function enhance(scope) {
    for (const bar of scope.querySelectorAll(".code-bar")) {
      if (bar.querySelector(".copy")) continue;
      const b = el("button", "copy", "Copy");
      b.type = "button";
      b.setAttribute("aria-label", "Copy code");
      bar.append(b);
    }
  }

  async function copy(btn) {
    const pre = btn.closest(".code").querySelector("pre");
    try {
      await navigator.clipboard.writeText(pre.innerText);
    } catch {
      const range = document.createRange(); // http on a LAN address has no clipboard API
      range.selectNodeContents(pre);
      getSelection().removeAllRanges();
      getSelection().addRange(range);
      if (!document.execCommand("copy")) return speak("Select the code and copy it.", true);
      getSelection().removeAllRanges();
    }
    btn.textContent = "Copied";
    speak("Code copied.", true);
    setTimeout(() => { btn.textContent = "Copy"; }, 2000);
  }

  function messageLi(m, before = null) {
    let li = list.querySelector(`:scope > li[data-id="${m.id}"]`);
    if (!li) {
      li = el("li");
      li.dataset.id = m.id;
      li.append(el("p", "role", m.role === "user" ? "You" : "Assistant"), el("div", "body plain"));
      list.insertBefore(li, before); // null: at the end
    }
    return li;
  }

  function setStatus(li, status, error) {
    li.querySelector(".status")?.remove();
    if (status === "complete") return;
    const labels = {streaming: "Writing…", cancelled: "Stopped"};
    const p = el("p", status === "error" ? "status err" : "status",
      labels[status] || `Error: ${(error && error.message) || "the reply failed"}`);
    if (status === "error") {
      const retry = el("button", "small retry", "Retry");
      retry.type = "button";
      p.append(" ", retry);
    }
    li.append(p);
  }

  // Show a message as the server describes it; a finished reply's text is replaced by its HTML.
  function render(m, before = null) {
    const li = messageLi(m, before);
    const same = li.dataset.status === m.status;
    li.className = `msg ${m.role}`;
    li.dataset.status = m.status;
    if (m.parent_id) li.dataset.parent = m.parent_id;
    if (m.model_id) li.dataset.model = m.model_id; // models.js shows it under the reply
    // Already final on the page (server-rendered text is taken as current).
    if (same && m.status !== "streaming" && (li.content === undefined || li.content === m.content)) return li;
    li.content = m.content;
    const body = li.querySelector(".body");
    // A finished reply is formatted here at once (no flash of raw Markdown), then replaced by the
    // server's HTML, which takes the same room; a stopped one has its unfinished Markdown closed.
    const final = m.role === "assistant" && m.status !== "streaming" && m.content;
    if (!(final && formatted(body, m.content, m.status !== "complete"))) {
      body.className = "body plain";
      body.textContent = m.content;
    }
    setStatus(li, m.status, m.error);
    if (m.role === "assistant" && m.status !== "streaming" && m.content) loadHtml(li, m);
    return li;
  }

  async function loadHtml(li, m) {
    let data = m.content_html === undefined ? null : {status: m.status, html: m.content_html};
    try {
      if (!data) {
        const r = await fetch(`${location.pathname}?html=${m.id}`, {headers: {Accept: "application/json"}});
        if (!r.ok) return;
        data = await r.json();
      }
    } catch { return; } // offline: the plain text stays, which is fine
    if (data.html == null || li.dataset.status !== data.status) return;
    const body = li.querySelector(".body");
    const pin = nearBottom();
    body.className = "body md";
    body.innerHTML = data.html; // sanitized on the server (threads/markdown.py)
    enhance(body);
    if (pin) toBottom();
  }

  // Markdown -> the body's formatted content; false while markdown.js has not loaded its libraries.
  function formatted(body, text, partial) {
    const frag = window.chatMarkdown ? window.chatMarkdown.render(text, partial) : null;
    if (!frag) return false;
    body.className = "body md";
    body.replaceChildren(frag);
    enhance(body);
    return true;
  }

  // The streamed text so far, formatted, at most once a frame (plain text until the libraries load).
  function paint(s) {
    if (s.frame) return;
    s.frame = requestAnimationFrame(() => {
      s.frame = 0;
      if (!s.li.isConnected || s.li.dataset.status !== "streaming") return;
      const pin = nearBottom();
      const body = s.li.querySelector(".body");
      if (!formatted(body, s.raw, true)) {
        body.className = "body plain";
        body.textContent = s.raw;
      }
      if (pin) toBottom();
    });
  }

  function startStream(rid, messageId) {
    const li = render({id: messageId, role: "assistant", content: "", status: "streaming"});
    li.querySelector(".body").replaceChildren();
    const s = {id: messageId, seq: 0, li, raw: "", frame: 0};
    li.stream = s; // the Markdown so far (what the page shows formatted)
    streams.set(rid, s);
    if (window.chatMarkdown) window.chatMarkdown.ready().then(() => paint(s), () => {});
    return s;
  }

  function onSnapshot(ev) {
    // The newest page only: earlier pages loaded before a reconnect go (messages may have come between).
    const ids = new Set(ev.messages.map((m) => String(m.id)));
    for (const li of list.querySelectorAll(":scope > li")) if (!ids.has(li.dataset.id)) li.remove();
    streams.clear();
    ev.messages.forEach((m) => render(m));
    setEarlier(!!ev.has_more);
    for (const f of ev.in_flight) {
      const s = startStream(f.request_id, f.message_id);
      s.seq = f.seq || 0;
      s.raw = f.text;
      paint(s);
    }
    if (pending) {
      // Sent while the socket was down, or lost with it: the same request_id is safe to send again.
      if (ev.messages.some((m) => m.request_id === pending.rid)) pending = null;
      else transmit(pending);
    }
  }

  // The oldest message shown: the next `history` page ends before it.
  function oldestId() {
    for (const li of list.querySelectorAll(":scope > li")) if (/^\d+$/.test(li.dataset.id)) return Number(li.dataset.id);
    return null;
  }

  // Not disabled while loading: a disabled button would drop a keyboard user's focus.
  function setEarlier(more) {
    loadingEarlier = false;
    earlier.hidden = earlierForm.hidden = !more;
    earlier.removeAttribute("aria-busy");
    earlier.textContent = "Load earlier messages";
    if (more) requestAnimationFrame(earlierIfNear);
  }

  // What the reader sees stays where it is while an older page goes in above it: `el` keeps its place on
  // the screen, also while the new messages settle (formatted, then the server's HTML, tools rows), until
  // the reader scrolls or types. Measured on `el` itself: a browser that anchored the scroll on its own
  // is not moved twice.
  let held = null;
  function hold(el, top) {
    release();
    held = {el, top, watch: new ResizeObserver(keep)};
    held.watch.observe(list);
    keep();
  }
  function keep() {
    if (!held) return;
    if (!held.el.isConnected) return release();
    const moved = held.el.getBoundingClientRect().top - held.top;
    if (Math.abs(moved) >= 1) scrollBy(0, moved);
  }
  function release() {
    if (held) held.watch.disconnect();
    held = null;
  }
  for (const type of ["wheel", "touchmove", "keydown", "mousedown"]) addEventListener(type, release, {passive: true});

  // Scrolling near the top loads the previous page (the button stays for keyboards): the button is the
  // sentinel. The observer says when it comes near; a page that leaves it near asks again here.
  const NEAR_PX = 600;
  function earlierIfNear() {
    if (!earlier.hidden && earlier.getBoundingClientRect().bottom > -NEAR_PX) loadEarlier();
  }
  if ("IntersectionObserver" in window) {
    new IntersectionObserver((entries) => { if (entries.some((e) => e.isIntersecting)) loadEarlier(); }, {
      rootMargin: `${NEAR_PX}px 0px 0px 0px`,
    }).observe(earlier);
  }

  function loadEarlier() {
    const before = oldestId();
    if (loadingEarlier || before === null || !ws || ws.readyState !== WebSocket.OPEN) return;
    loadingEarlier = true;
    earlier.setAttribute("aria-busy", "true");
    earlier.textContent = "Loading…";
    ws.send(JSON.stringify({type: "history", before}));
  }

  // An older page goes above what is shown; the view stays on what the reader was looking at.
  function onHistory(ev) {
    const first = list.querySelector(":scope > li");
    if (ev.before !== oldestId()) return; // answers a request from before a snapshot reset the list
    const top = first ? first.getBoundingClientRect().top : 0;
    ev.messages.forEach((m) => render(m, first));
    if (first) hold(first, top);
    const focused = document.activeElement === earlier;
    setEarlier(!!ev.has_more);
    const n = ev.messages.length;
    speak(`${n} earlier message${n === 1 ? "" : "s"} loaded.`, true);
    // Keyboard users keep their place: on the control, or, once it is gone, on the oldest message.
    if (earlier.hidden && focused && list.firstElementChild) {
      list.firstElementChild.tabIndex = -1;
      list.firstElementChild.focus();
    }
  }

  function finish(ev) {
    const s = streams.get(ev.request_id);
    streams.delete(ev.request_id);
    // A send coalesced with an identical one is answered with that one's events: once nothing is
    // running, whatever this tab sent has been answered.
    if (pending && (pending.rid === ev.request_id || streams.size === 0)) pending = null;
    if (ev.message) {
      render(ev.message);
    } else if (ev.type === "message.error") {
      const li = s ? s.li : messageLi({id: `e${ev.request_id}`, role: "assistant"});
      li.className = "msg assistant";
      li.dataset.status = "error";
      setStatus(li, "error", ev.error);
    }
    speak("", true);
    if (ev.type === "message.cancelled") speak("Reply stopped.", true);
    if (ev.type === "message.error") speak(`Error: ${ev.error.message}`, true);
  }

  function onEvent(ev) {
    const pin = nearBottom();
    switch (ev.type) {
      case "snapshot":
        onSnapshot(ev);
        break;
      case "history":
        onHistory(ev);
        return; // older messages: the view keeps its place, never jumps to the bottom
      case "message.start":
        if (pending && pending.rid === ev.request_id) pending = null;
        render(ev.user_message);
        (streams.get(ev.request_id) || startStream(ev.request_id, ev.message_id)).li.dataset.parent = ev.user_message.id;
        break;
      case "message.delta": {
        const s = streams.get(ev.request_id) || (ev.seq === 1 ? startStream(ev.request_id, ev.message_id) : null);
        if (s && ev.seq <= s.seq) return; // already shown
        if (!s || ev.seq !== s.seq + 1) return resync(); // a gap: the channel layer dropped a delta
        s.seq = ev.seq;
        s.raw += ev.text;
        paint(s);
        speak(ev.text);
        break;
      }
      case "message.done":
      case "message.cancelled":
      case "message.error":
        finish(ev);
        break;
      case "thread.updated": // another tab switched model or prompt: models.js follows
        document.dispatchEvent(new CustomEvent("chat:thread-updated", {detail: ev.thread}));
        return;
      case "error":
        if (loadingEarlier) setEarlier(true); // a refused history request: offer it again
        if (pending && pending.regenerate !== undefined) { // a refused regenerate: show why, by the composer
          pending = null;
          composerError.firstElementChild.textContent = ev.error.message;
          composerError.hidden = false;
        } else if (pending) { // the server refused our send: keep the text, offer Retry
          failed = pending.content;
          if (!input.value) input.value = failed;
          pending = null;
          composerError.firstElementChild.textContent = ev.error.message;
          composerError.hidden = false;
          speak(`Not sent: ${ev.error.message}`, true);
        }
        break;
    }
    refresh();
    if (window.chatTree) window.chatTree.onEvent(ev);
    if (pin) {
      toBottom();
      jump.hidden = true;
    } else showJump();
  }

  function resync() { if (ws) ws.close(4000, "resync"); }

  function connect() {
    clearTimeout(timer);
    const proto = location.protocol === "https:" ? "wss" : "ws";
    const sock = new WebSocket(`${proto}://${location.host}/ws/threads/${threadId}/`);
    ws = sock;
    // The backoff resets on a snapshot, not on open: a server that accepts and at once closes (1013,
    // Redis or the database down) is retried ever more slowly rather than hammered.
    let opened = false;
    sock.onopen = () => { opened = true; everOpened = true; revoked = false; setConn("Live"); refresh(); };
    let received = 0;
    sock.onmessage = (e) => {
      // Acknowledge what arrived: a tab that falls far behind is closed (4008) and resumes afresh.
      if (++received % 20 === 0) sock.send(JSON.stringify({type: "ack", count: received}));
      let ev;
      try { ev = JSON.parse(e.data); } catch { return; }
      if (ev.type === "snapshot") retries = 0;
      onEvent(ev);
    };
    sock.onclose = async (e) => {
      if (ws !== sock) return;
      ws = null;
      refresh();
      everOpened = everOpened || opened;
      // A refused handshake reaches the page as 1006, not 4401: after a 4001 it means signed out.
      if (e.code === 4401 || (revoked && !opened)) return signedOut();
      if (e.code === 4001) revoked = true; // reconnect: another browser's session still works
      if (e.code === 4404) return setConn("This thread no longer exists.");
      if (navigator.onLine === false) return setConn("Offline: waiting for the network…"); // see "online"
      // 4429: this user has too many sockets open; keep retrying (slower and slower) until one closes.
      setConn(e.code === 4429 ? "Too many open tabs: close one to reconnect…" : "Reconnecting…");
      if (!opened && e.code === 1006 && await refused()) return; // told why: retrying would not help
      if (ws || navigator.onLine === false) return; // reconnected meanwhile (online), or went offline
      const delay = Math.min(8000, 300 * 2 ** retries++) * (0.5 + Math.random() / 2);
      timer = setTimeout(connect, delay);
    };
  }

  function transmit(p) {
    if (ws && ws.readyState === WebSocket.OPEN) {
      const frame = p.regenerate !== undefined
        ? {type: "regenerate", message_id: p.regenerate, request_id: p.rid}
        : {type: "send", content: p.content, request_id: p.rid, idempotent: p.idempotent};
      if (p.parent !== undefined) frame.parent_id = p.parent; // an edit: a new branch (static/chat/tree.js)
      ws.send(JSON.stringify(frame));
    }
  }

  // A new reply in place of assistant message `id` (Retry, Regenerate): a sibling in the thread's tree.
  function regenerate(id) {
    if (pending || streams.size || !ws || ws.readyState !== WebSocket.OPEN) return false;
    composerError.hidden = true;
    pending = {rid: newId(), content: "", regenerate: Number(id)};
    transmit(pending);
    refresh();
    return true;
  }

  // A retry asks for a new answer: `idempotent: false` keeps it from being coalesced with the failure.
  function send(content, retry = false) {
    if (!content.trim() || pending || streams.size) return false;
    composerError.hidden = true;
    pending = {rid: newId(), content, idempotent: !retry};
    transmit(pending); // or on reconnect, after the snapshot
    refresh();
    return true;
  }

  form.addEventListener("submit", (e) => {
    e.preventDefault();
    if (sendBtn.disabled) return;
    if (send(input.value)) input.value = "";
    input.focus();
  });
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !touch && !e.shiftKey && !e.isComposing && !e.altKey && !e.ctrlKey && !e.metaKey) {
      e.preventDefault();
      form.requestSubmit();
    }
  });
  stopBtn.addEventListener("click", () => {
    const rid = Array.from(streams.keys()).pop();
    if (!rid || !ws || ws.readyState !== WebSocket.OPEN) return;
    ws.send(JSON.stringify({type: "cancel", request_id: rid}));
    stopBtn.disabled = true;
    stopBtn.textContent = "Stopping…";
    input.focus();
  });
  list.addEventListener("click", (e) => {
    const btn = e.target.closest("button");
    if (!btn) return;
    if (btn.classList.contains("copy")) return copy(btn);
    if (btn.classList.contains("retry")) {
      // The failed reply is answered again in its place (#22 item 1): a regenerate, not a second question.
      const li = btn.closest(".msg");
      if (/^\d+$/.test(li.dataset.id)) {
        if (window.chatTree) window.chatTree.replace(li);
        regenerate(li.dataset.id);
        return;
      }
      const parent = list.querySelector(`:scope > li[data-id="${li.dataset.parent}"] .body`);
      if (parent) send(parent.textContent, true);
    }
  });
  earlier.addEventListener("click", (e) => { e.preventDefault(); loadEarlier(); });
  jump.addEventListener("click", () => { toBottom(); jump.hidden = true; input.focus({preventScroll: true}); });
  addEventListener("scroll", showJump, {passive: true});
  composerError.querySelector("button").addEventListener("click", () => {
    if (send(failed, true)) input.value = "";
  });
  document.addEventListener("submit", (e) => {
    const question = e.target.dataset.confirm;
    if (question && !confirm(question)) e.preventDefault();
  });
  // A phone that loses its network may keep a dead socket open for minutes: drop it now, and reconnect
  // (the snapshot resumes any stream) as soon as the network is back.
  // The page lets go of the socket at once: its close handshake cannot finish while offline.
  addEventListener("offline", () => {
    clearTimeout(timer);
    const s = ws;
    ws = null;
    if (s) s.close(1000, "offline");
    refresh();
    setConn("Offline: waiting for the network…");
  });
  addEventListener("online", () => { retries = 0; if (!ws) connect(); });
  // Leaving the page closes the socket, so the back/forward cache can keep the page; coming back reconnects.
  addEventListener("pagehide", () => { clearTimeout(timer); const s = ws; ws = null; if (s) s.close(1000); });
  addEventListener("pageshow", (e) => { if (e.persisted) connect(); });

  // The conversation tree's controls (static/chat/tree.js) act through these.
  window.chatapp = {
    regenerate,
    edit(content, parent) {
      if (!content.trim() || pending || streams.size) return false;
      pending = {rid: newId(), content, idempotent: true, parent};
      transmit(pending);
      refresh();
      return true;
    },
    busy: () => !!pending || streams.size > 0,
    stop: () => { if (!stopBtn.hidden) stopBtn.click(); },
  };

  if (touch) {
    input.enterKeyHint = "enter";
    input.removeAttribute("aria-describedby"); // the hint is about a hardware keyboard
  }
  relogin.href = `${relogin.pathname}?${new URLSearchParams({next: location.pathname})}`;
  document.documentElement.classList.add("chat-page"); // scroll-padding under the pinned header (app.css)
  // An older page opened without JavaScript's help (a new tab): live, the page shows the newest.
  if (new URLSearchParams(location.search).has("before")) history.replaceState(null, "", location.pathname);
  enhance(list);
  toBottom();
  refresh();
  connect();
})();
