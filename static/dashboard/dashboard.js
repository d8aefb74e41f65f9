// Staff dashboard: polls /api/metrics and keeps the totals, four small SVG charts of the last hour and the
// flag table current. The charts open with the server's history (ops/history.py: one point per 30 s) and
// go on with this page's own polls. No framework: the page must stay light on a phone.
(() => {
  "use strict";
  const root = document.getElementById("dash");
  const pollMs = Number(root.dataset.poll) || 2000;
  const maxPoints = Number(root.dataset.points) || 1800;
  const spanMs = (Number(root.dataset.span) || 3600) * 1000;
  const NAMES = ["rps", "latency", "ttft", "streams"];
  // Chart points {t, rps, latency, ttft, streams}: the server's, then this page's.
  const points = JSON.parse(document.getElementById("history").textContent)
    .map(([t, rps, latency, ttft, streams]) => ({t: t * 1000, rps, latency, ttft, streams}));
  // Windowed percentiles compare the newest poll with the one this many polls earlier (~30 s).
  const windowPolls = Math.max(1, Math.round(30000 / pollMs));
  const history = [];
  const status = document.getElementById("status");

  const get = (obj, path) => path.split(".").reduce((o, k) => (o == null ? o : o[k]), obj);
  const fmt = (v, f) => (f === "pct" ? `${(v * 100).toFixed(1)} %` : f === "ms" ? `${v} ms` : String(v));

  // The q-quantile of cumulative [bound_ms|null, count] buckets, interpolated like histogram_quantile.
  function quantile(q, buckets) {
    const total = buckets.length ? buckets[buckets.length - 1][1] : 0;
    if (total <= 0) return 0;
    const rank = q * total;
    let lower = 0, below = 0;
    for (const [bound, cum] of buckets) {
      if (cum >= rank && cum > below) return bound === null ? lower : lower + (bound - lower) * (rank - below) / (cum - below);
      if (bound !== null) lower = bound;
      below = cum;
    }
    return lower;
  }

  function delta(now, before, key) {
    const a = now.s.histograms[key], b = before.s.histograms[key];
    return a.map(([bound, cum], i) => [bound, cum - (b[i] ? b[i][1] : 0)]);
  }

  // A point from this poll: rates and percentiles over the polls of the last ~30 s.
  function point(now) {
    const prev = history[Math.max(0, history.length - 1 - windowPolls)];
    const p = {t: now.t, streams: now.s.stream_subscriptions, rps: 0, latency: 0, ttft: 0};
    if (prev !== now) {
      p.rps = (now.s.requests - prev.s.requests) / ((now.t - prev.t) / 1000);
      p.latency = quantile(0.95, delta(now, prev, "latency"));
      p.ttft = quantile(0.95, delta(now, prev, "ttft"));
    }
    return p;
  }

  // x: time over the last hour; y: 0 to the highest value shown, labelled beside the chart.
  function draw(name) {
    const now = Date.now();
    const shown = points.filter((p) => p.t >= now - spanMs);
    const max = Math.max(1e-9, ...shown.map((p) => p[name]));
    const svg = root.querySelector(`[data-chart="${name}"]`);
    svg.firstElementChild.setAttribute("points", shown.map((p) =>
      `${(300 - (now - p.t) / spanMs * 300).toFixed(1)},${(58 - (p[name] / max) * 56).toFixed(1)}`).join(" "));
    const digits = name === "streams" ? 0 : 1;
    root.querySelector(`[data-y="${name}"]`).textContent = max < 1e-6 ? "1" : max.toFixed(digits);
    const last = shown.length ? shown[shown.length - 1][name] : 0;
    root.querySelector(`[data-c="${name}"]`).textContent = `now ${last.toFixed(digits)}`;
  }

  function flagTable(s) {
    const procs = Object.values(s.flags_by_process || {});
    document.getElementById("flags").replaceChildren(...Object.entries(s.flags).sort().map(([name, on]) => {
      const tr = document.createElement("tr");
      const th = document.createElement("th");
      th.scope = "row";
      th.textContent = name;
      const reporting = procs.filter((f) => name in f);
      tr.append(th, cell(on ? "on" : "off"), cell(`${reporting.filter((f) => f[name]).length} / ${reporting.length}`));
      return tr;
    }));
  }

  function cell(text) {
    const td = document.createElement("td");
    td.textContent = text;
    return td;
  }

  // `initial`: the page's own figures, drawn at load without changing its text (no layout shift).
  function render(s, initial) {
    for (const el of root.querySelectorAll("[data-k]")) el.textContent = fmt(get(s, el.dataset.k), el.dataset.f);
    for (const name of NAMES) draw(name);
    flagTable(s);
    if (initial) return;
    const n = Object.keys(s.flags_by_process || {}).length;
    const scope = s.aggregation === "multiprocess" ? `all ${n} process${n === 1 ? "" : "es"}` : "this process only";
    status.textContent = `Updated ${new Date().toLocaleTimeString()}: ${scope}.`;
  }

  function add(s, initial) {
    history.push({ t: Date.now(), s });
    if (history.length > windowPolls + 1) history.shift();
    points.push(point(history[history.length - 1]));
    while (points.length > maxPoints || (points.length && points[0].t < Date.now() - spanMs)) points.shift();
    render(s, initial);
  }

  async function poll() {
    try {
      const resp = await fetch("/api/metrics", { credentials: "same-origin", cache: "no-store", headers: { Accept: "application/json" } });
      if (!resp.ok) throw new Error(resp.status === 401 || resp.status === 403 ? "log in again as staff" : `HTTP ${resp.status}`);
      add(await resp.json());
    } catch (err) {
      status.textContent = `Not updating: ${err.message}. Retrying…`;
    } finally {
      // Hidden tabs poll slowly: a forgotten dashboard must not load the servers.
      setTimeout(poll, document.hidden ? pollMs * 10 : pollMs);
    }
  }

  add(JSON.parse(document.getElementById("initial").textContent), true);
  setTimeout(poll, pollMs);
})();
