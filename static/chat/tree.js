// The conversation tree on the thread page (#18; protocol: docs/api.md): Regenerate under a reply, Edit
// under a question (a new branch), ‹ 2/3 › between a message's versions (the switch is saved, and every
// open tab follows through `thread.updated` and the snapshot that comes after it), rename in place, and
// the keyboard: Esc stops a reply, ArrowUp in an empty composer edits the last question.
// chat.js owns the socket; it calls chatTree.onEvent for every event and offers window.chatapp.
(() => {
  "use strict";
  const root = document.querySelector(".chat");
  if (!root) return;
  const threadId = root.dataset.threadId;
  const list = document.getElementById("messages");
  const input = document.getElementById("content");
  const title = document.getElementById("thread-title");
  let siblings = {}; // message id -> ids of its versions, oldest first (only those with several)
  const initial = document.getElementById("tree-data");
  if (initial) siblings = JSON.parse(initial.textContent).siblings || {};

  const el = (tag, cls, text) => {
    const n = document.createElement(tag);
    if (cls) n.className = cls;
    if (text !== undefined) n.textContent = text;
    return n;
  };
  const button = (cls, text, label) => {
    const b = el("button", `small ${cls}`, text);
    b.type = "button";
    if (label) b.setAttribute("aria-label", label);
    return b;
  };
  const csrf = () => (document.querySelector("input[name=csrfmiddlewaretoken]") || {}).value || "";

  async function patch(body) {
    const r = await fetch(`/api/threads/${threadId}`, {
      method: "PATCH",
      headers: {"Content-Type": "application/json", "X-CSRFToken": csrf(), Accept: "application/json"},
      body: JSON.stringify(body),
      credentials: "same-origin",
    });
    return r.ok ? r.json() : null;
  }

  // Everything shown from `li` down goes: a new reply or a new branch takes its place.
  function replace(li) {
    while (li) {
      const next = li.nextElementSibling;
      li.remove();
      li = next;
    }
  }

  // The tools row under each message: versions, then Edit (questions) or Regenerate (finished replies).
  function decorate(li) {
    if (!/^\d+$/.test(li.dataset.id || "")) return;
    let tools = li.querySelector(":scope > .tools");
    if (!tools) {
      tools = el("div", "tools");
      li.append(tools);
    }
    const versions = siblings[li.dataset.id];
    const user = li.classList.contains("user");
    const done = !user && ["complete", "cancelled"].includes(li.dataset.status);
    const key = `${versions ? versions.join(",") : ""}|${user}|${done}`;
    if (tools.dataset.key === key) return;
    tools.dataset.key = key;
    tools.replaceChildren();
    if (versions) {
      const at = versions.indexOf(Number(li.dataset.id));
      const nav = el("span", "versions");
      nav.setAttribute("role", "group");
      nav.setAttribute("aria-label", `Version ${at + 1} of ${versions.length}`);
      const prev = button("prev", "‹", "Previous version");
      const next = button("next", "›", "Next version");
      prev.disabled = at <= 0;
      next.disabled = at >= versions.length - 1;
      prev.dataset.to = versions[at - 1] || "";
      next.dataset.to = versions[at + 1] || "";
      nav.append(prev, el("span", "count", `${at + 1} / ${versions.length}`), next);
      tools.append(nav);
    }
    if (user) tools.append(button("edit", "Edit", "Edit this message"));
    if (done) tools.append(button("regen", "Regenerate", "Regenerate this reply"));
  }

  function decorateAll() {
    for (const li of list.querySelectorAll(":scope > li")) decorate(li);
  }

  function startEdit(li) {
    if (li.querySelector(".editor") || window.chatapp.busy()) return;
    const body = li.querySelector(".body");
    const form = el("form", "editor");
    const area = el("textarea");
    area.value = body.textContent;
    area.rows = Math.min(8, area.value.split("\n").length + 1);
    area.setAttribute("aria-label", "Edit your message");
    const save = el("button", "small primary", "Send edit");
    save.type = "submit";
    const cancel = button("cancel", "Cancel");
    form.append(area, save, cancel);
    body.hidden = true;
    li.append(form);
    area.focus();
    const close = () => { form.remove(); body.hidden = false; };
    cancel.addEventListener("click", () => { close(); li.querySelector(".edit")?.focus(); });
    area.addEventListener("keydown", (e) => {
      if (e.key === "Escape") { e.preventDefault(); e.stopPropagation(); cancel.click(); }
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); form.requestSubmit(); }
    });
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      if (!area.value.trim()) return;
      const parent = li.dataset.parent ? Number(li.dataset.parent) : null;
      const text = area.value;
      close();
      replace(li);
      window.chatapp.edit(text, parent);
      input.focus();
    });
  }

  list.addEventListener("click", (e) => {
    const btn = e.target.closest("button");
    if (!btn || !btn.closest(".tools")) return;
    const li = btn.closest(".msg");
    if (btn.classList.contains("edit")) return startEdit(li);
    if (btn.classList.contains("regen")) {
      if (window.chatapp.busy()) return;
      const id = li.dataset.id;
      replace(li);
      window.chatapp.regenerate(id);
      input.focus();
      return;
    }
    if (btn.dataset.to) {
      btn.setAttribute("aria-busy", "true");
      patch({current_leaf_id: Number(btn.dataset.to)}); // the snapshot that follows redraws the branch
    }
  });

  // Rename in place: the title becomes a field; Enter saves, Esc cancels.
  const renameBtn = document.getElementById("rename");
  if (renameBtn) {
    renameBtn.hidden = false;
    renameBtn.addEventListener("click", () => {
      const form = el("form", "rename-form");
      const field = el("input");
      field.value = title.textContent;
      field.maxLength = 200;
      field.setAttribute("aria-label", "Thread title");
      const save = el("button", "small primary", "Save");
      save.type = "submit";
      form.append(field, save);
      title.hidden = true;
      renameBtn.hidden = true;
      title.after(form);
      field.focus();
      field.select();
      const close = () => { form.remove(); title.hidden = false; renameBtn.hidden = false; renameBtn.focus(); };
      field.addEventListener("keydown", (e) => { if (e.key === "Escape") { e.preventDefault(); close(); } });
      form.addEventListener("submit", async (e) => {
        e.preventDefault();
        const name = field.value.trim();
        if (name && name !== title.textContent) {
          const t = await patch({title: name});
          if (t) setTitle(t.title);
        }
        close();
      });
    });
  }

  function setTitle(text) {
    title.textContent = text || "New thread";
    document.title = `${title.textContent} · chatapp`;
  }

  // Esc stops a reply; ArrowUp in an empty composer edits the last question.
  input.addEventListener("keydown", (e) => {
    if (e.key === "ArrowUp" && !input.value) {
      const last = Array.from(list.querySelectorAll(":scope > li.msg.user")).pop();
      if (last) { e.preventDefault(); startEdit(last); }
    }
  });
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && !e.defaultPrevented && window.chatapp) window.chatapp.stop();
  });

  window.chatTree = {
    replace,
    onEvent(ev) {
      if (ev.type === "snapshot" || ev.type === "history") {
        if (ev.type === "snapshot") siblings = {};
        Object.assign(siblings, ev.siblings || {});
      }
      if (ev.type === "thread.updated") setTitle(ev.thread.title);
      decorateAll();
    },
  };
  decorateAll();
})();
