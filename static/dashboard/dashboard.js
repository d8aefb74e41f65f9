// Staff dashboard: polls /api/metrics and keeps the totals, four small SVG charts and the flag table
// current. No framework: the page must stay light on a phone.
(() => {
  "use strict";
  const root = document.getElementById("dash");
  const pollMs = Number(root.dataset.poll) || 2000;
  const maxPoints = Number(root.dataset.points) || 150;
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

  function series(name) {
    return history.map((p, i) => {
      const prev = history[Math.max(0, i - windowPolls)];
      if (name === "streams") return p.s.stream_subscriptions;
      if (prev === p) return 0;
      if (name === "rps") return (p.s.requests - prev.s.requests) / ((p.t - prev.t) / 1000);
      return quantile(0.95, delta(p, prev, name));
    });
  }

  function draw(name) {
    const values = series(name);
    const svg = root.querySelector(`[data-chart="${name}"]`);
    const max = Math.max(1e-9, ...values);
    const step = 300 / Math.max(1, maxPoints - 1);
    const offset = 300 - step * (values.length - 1);
    svg.firstElementChild.setAttribute("points", values.map((v, i) =>
      `${(offset + i * step).toFixed(1)},${(58 - (v / max) * 56).toFixed(1)}`).join(" "));
    const last = values.length ? values[values.length - 1] : 0;
    root.querySelector(`[data-c="${name}"]`).textContent = `${last.toFixed(name === "streams" ? 0 : 1)} (max ${max < 1e-6 ? 0 : max.toFixed(1)})`;
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

  function render(s) {
    for (const el of root.querySelectorAll("[data-k]")) el.textContent = fmt(get(s, el.dataset.k), el.dataset.f);
    for (const name of ["rps", "latency", "ttft", "streams"]) draw(name);
    flagTable(s);
    const n = Object.keys(s.flags_by_process || {}).length;
    const scope = s.aggregation === "multiprocess" ? `all ${n} process${n === 1 ? "" : "es"}` : "this process only";
    status.textContent = `Updated ${new Date().toLocaleTimeString()}: ${scope}.`;
  }

  function add(s) {
    history.push({ t: Date.now(), s });
    if (history.length > maxPoints) history.shift();
    render(s);
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

  add(JSON.parse(document.getElementById("initial").textContent));
  setTimeout(poll, pollMs);
})();
