// The thread page's model picker: switching model PATCHes the thread (the next send uses it), and
// every reply shows, in small type, the model that answered it (from its data-model, set by the
// server-rendered page or by chat.js when a reply finishes).
(() => {
  "use strict";
  const picker = document.getElementById("model-picker");
  const root = document.querySelector("[data-thread-id]");
  const list = document.getElementById("messages");
  if (!picker || !root || !list) return;
  const note = document.getElementById("model-note");
  const live = document.getElementById("live");
  const input = document.getElementById("content");
  const labels = new Map();
  try {
    for (const m of JSON.parse(document.getElementById("model-list").textContent)) labels.set(m.id, m.label);
  } catch (e) { /* no list: tags show model ids */ }
  const label = (id) => labels.get(id) || id;

  function tag(li) {
    const id = li.dataset.model;
    if (!id || !li.classList.contains("assistant")) return;
    let p = li.querySelector(".model-tag");
    if (!p) {
      p = document.createElement("p");
      p.className = "model-tag";
      li.querySelector(".body")?.after(p);
    }
    if (p.textContent !== label(id)) p.textContent = label(id);
  }

  new MutationObserver((records) => {
    for (const r of records) {
      if (r.type === "attributes") tag(r.target);
      else for (const n of r.addedNodes) if (n.nodeType === 1 && n.matches("li.msg")) tag(n);
    }
  }).observe(list, {subtree: true, childList: true, attributes: true, attributeFilter: ["data-model"]});
  for (const li of list.querySelectorAll(":scope > li[data-model]")) tag(li);

  function say(text, problem) {
    if (note) { note.textContent = text; note.hidden = !text; note.classList.toggle("error", !!problem); }
  }

  function csrf() {
    const field = document.querySelector("input[name=csrfmiddlewaretoken]");
    return field ? field.value : "";
  }

  async function patch(fields) {
    const r = await fetch(`/api/threads/${root.dataset.threadId}`, {
      method: "PATCH",
      headers: {"Content-Type": "application/json", Accept: "application/json", "X-CSRFToken": csrf()},
      body: JSON.stringify(fields),
      credentials: "same-origin",
    });
    const data = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error((data.error && data.error.message) || `The change failed (HTTP ${r.status}).`);
    return data;
  }

  // The thread as the server now has it (after our PATCH, or another tab's: chat.js's hook).
  function follow(thread) {
    if (picker.value !== thread.model_id && picker.querySelector(`option[value="${CSS.escape(thread.model_id)}"]`)) {
      picker.value = thread.model_id;
    }
    picker.dataset.current = thread.model_id;
    for (const o of picker.querySelectorAll("option[disabled]")) if (o.value !== thread.model_id) o.remove();
    if (input) input.placeholder = `Message ${label(thread.model_id)}`;
    const prompt = document.getElementById("system-prompt");
    if (prompt && document.activeElement !== prompt) prompt.value = thread.system_prompt || "";
  }
  document.addEventListener("chat:thread-updated", (e) => follow(e.detail));

  const systemForm = document.getElementById("system-form");
  systemForm?.addEventListener("submit", async (e) => {
    e.preventDefault();
    const saved = document.getElementById("system-saved");
    try {
      follow(await patch({system_prompt: systemForm.elements.system_prompt.value}));
      saved.textContent = "Saved: the next reply uses it.";
    } catch (err) {
      saved.textContent = err.message;
    }
  });

  picker.addEventListener("change", async () => {
    const wanted = picker.value;
    picker.disabled = true;
    try {
      follow(await patch({model: wanted}));
      say("", false);
      if (live) live.textContent = `Model: ${label(picker.dataset.current)}. The next reply uses it.`;
    } catch (e) {
      picker.value = picker.dataset.current;
      say(e.message, true);
    } finally {
      picker.disabled = false;
      picker.focus();
    }
  });
})();
