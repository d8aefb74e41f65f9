// The share page (/s/<token>): the previous page of messages loads when the reader scrolls back near the
// top, without a click, and what they were reading stays where it is. The "Earlier messages" link stays for
// keyboards (here it loads in place) and for browsers without JavaScript (it opens `?before=`).
(() => {
  "use strict";
  const list = document.querySelector("ol.messages");
  let link = document.querySelector("a.earlier");
  if (!list || !link || !("IntersectionObserver" in window) || !window.fetch) return;
  const NEAR_PX = 600;
  let loading = false;

  async function load(focus) {
    if (loading || !link) return;
    loading = true;
    link.setAttribute("aria-busy", "true");
    try {
      const r = await fetch(link.href, {credentials: "same-origin", headers: {Accept: "text/html"}});
      if (!r.ok) throw new Error(String(r.status));
      const doc = new DOMParser().parseFromString(await r.text(), "text/html");
      const older = [...doc.querySelectorAll("ol.messages > li.msg")];
      const first = list.firstElementChild;
      const top = first ? first.getBoundingClientRect().top : 0;
      for (const li of older) list.insertBefore(document.adoptNode(li), first);
      if (first) scrollBy(0, first.getBoundingClientRect().top - top); // the view does not jump
      const next = doc.querySelector("a.earlier");
      if (next) link.href = next.href;
      else finish();
      if (focus && older.length) {
        older[older.length - 1].tabIndex = -1;
        older[older.length - 1].focus(); // a keyboard user's place: the newest of the loaded ones
      }
    } catch {
      return; // the link still works: the next scroll or press tries again
    } finally {
      loading = false;
      if (link) link.removeAttribute("aria-busy");
    }
    requestAnimationFrame(() => {
      if (link && link.getBoundingClientRect().bottom > -NEAR_PX) load(false);
    });
  }

  const observer = new IntersectionObserver((entries) => { if (entries.some((e) => e.isIntersecting)) load(false); }, {
    rootMargin: `${NEAR_PX}px 0px 0px 0px`,
  });
  function finish() {
    observer.disconnect();
    (link.closest("p") || link).remove();
    link = null;
  }
  link.addEventListener("click", (e) => { e.preventDefault(); load(true); });
  // Watched once the reader scrolls: a page just opened keeps its title in view (a load at arrival would
  // push it up, out of sight, to keep the first message where it was).
  addEventListener("scroll", () => { if (link) observer.observe(link); }, {once: true, passive: true});
})();
