// The thread page: one WebSocket per tab, a snapshot on connect, live deltas, Stop, reconnect + resume.
(() => {
  "use strict";
  const root = document.querySelector(".chat");
  if (!root) return;
  const threadId = root.dataset.threadId;
  const list = document.getElementById("messages");
  const form = document.getElementById("composer");
  const input = document.getElementById("content");
  const sendBtn = document.getElementById("send");
  const stopBtn = document.getElementById("stop");
  const conn = document.getElementById("conn");
  const streams = new Map(); // request_id -> {message_id, seq, el}
  let ws = null;
  let retry = 0;
  let running = null; // request_id this tab sent and that still runs

  const el = (tag, cls, text) => {
    const n = document.createElement(tag);
    if (cls) n.className = cls;
    if (text !== undefined) n.textContent = text;
    return n;
  };

  function renderMessage(m) {
    let li = list.querySelector(`li[data-id="${m.id}"]`);
    if (!li) {
      li = el("li");
      li.dataset.id = m.id;
      li.append(el("span", "role", m.role), el("div", "body"), el("span", "status"));
      list.append(li);
    }
    li.className = `msg ${m.role} ${m.status}`;
    li.querySelector(".body").textContent = m.content;
    const status = li.querySelector(".status") || li.appendChild(el("span", "status"));
    status.textContent = m.status === "complete" ? "" : (m.error ? `${m.status}: ${m.error.message}` : m.status);
    return li;
  }

  function streamEl(requestId, messageId) {
    let s = streams.get(requestId);
    if (!s) {
      const li = renderMessage({id: messageId, role: "assistant", content: "", status: "streaming"});
      s = {message_id: messageId, seq: 0, el: li.querySelector(".body")};
      streams.set(requestId, s);
    }
    return s;
  }

  function setRunning(rid) {
    running = rid;
    stopBtn.hidden = !rid;
    sendBtn.disabled = !!rid;
  }

  function finish(ev) {
    streams.delete(ev.request_id);
    if (ev.message) renderMessage(ev.message);
    if (ev.type === "message.error" && !ev.message) {
      const li = el("li", "msg assistant error");
      li.append(el("span", "role", "error"), el("div", "body", ev.error.message));
      list.append(li);
    }
    if (running === ev.request_id) setRunning(null);
  }

  function onEvent(ev) {
    switch (ev.type) {
      case "snapshot":
        list.replaceChildren();
        streams.clear();
        ev.messages.forEach(renderMessage);
        for (const f of ev.in_flight) {
          const s = streamEl(f.request_id, f.message_id);
          s.seq = f.seq;
          s.el.textContent = f.text;
        }
        break;
      case "message.start":
        renderMessage(ev.user_message);
        streamEl(ev.request_id, ev.message_id);
        break;
      case "message.delta": {
        const s = streamEl(ev.request_id, ev.message_id);
        if (ev.seq !== s.seq + 1) { resync(); return; } // a gap: the channel layer dropped a delta
        s.seq = ev.seq;
        s.el.textContent += ev.text;
        break;
      }
      case "message.done":
      case "message.cancelled":
      case "message.error":
        finish(ev);
        break;
      case "error":
        setRunning(null);
        conn.textContent = ev.error.message;
        break;
    }
    list.lastElementChild && list.lastElementChild.scrollIntoView({block: "end"});
  }

  function resync() { if (ws) ws.close(4000, "resync"); }

  function connect() {
    const proto = location.protocol === "https:" ? "wss" : "ws";
    ws = new WebSocket(`${proto}://${location.host}/ws/threads/${threadId}/`);
    ws.onopen = () => { retry = 0; conn.textContent = "live"; };
    ws.onmessage = (e) => onEvent(JSON.parse(e.data));
    ws.onclose = (e) => {
      conn.textContent = "reconnecting…";
      if (e.code === 4401 || e.code === 4404) { conn.textContent = "not available"; return; }
      const delay = Math.min(5000, 250 * 2 ** retry++) * (0.5 + Math.random() / 2);
      setTimeout(connect, delay);
    };
  }

  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const content = input.value.trim();
    if (!content || running || !ws || ws.readyState !== WebSocket.OPEN) return;
    const rid = (crypto.randomUUID ? crypto.randomUUID() : String(Date.now()) + Math.random()).replace(/-/g, "");
    setRunning(rid);
    ws.send(JSON.stringify({type: "send", content, request_id: rid}));
    input.value = "";
  });
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); form.requestSubmit(); }
  });
  stopBtn.addEventListener("click", () => {
    if (running && ws) ws.send(JSON.stringify({type: "cancel", request_id: running}));
  });
  connect();
})();
