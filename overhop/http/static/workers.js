// Workers: each connection's name, host, pid, labels, subscriptions and credits, jobs held,
// last seen, and per-worker totals (by REGISTER name).
"use strict";

(() => {
  const { el, fill, time, getJSON } = Overhop;
  const main = document.getElementById("main");

  function totals(counts) {
    const entries = Object.entries(counts);
    if (!entries.length) return "—";
    return entries.sort().map(([outcome, n]) => el("span", {
      class: `badge ${outcome === "completed" ? "active" : outcome === "failed" ? "bad" : ""}` }, `${outcome} ${n}`));
  }

  function render(data) {
    fill(main, el("h1", {}, "Workers"),
      data.workers.length ? el("table", { id: "workers" },
        el("thead", {}, el("tr", {}, ["Name", "Host", "PID", "Labels", "Subscriptions (credits)",
          "Jobs held", "Registered", "Last seen", "Totals"].map((h) => el("th", {}, h)))),
        el("tbody", {}, data.workers.map((w) => el("tr", { "data-wid": w.wid },
          el("td", {}, w.name || el("span", { class: "muted" }, "unnamed"), el("div", { class: "muted" }, w.wid)),
          el("td", {}, w.host || "—"), el("td", { class: "num" }, w.pid ?? "—"),
          el("td", {}, Object.entries(w.labels).map(([k, v]) => el("span", { class: "badge" }, `${k}=${v}`))),
          el("td", {}, w.subscriptions.map((s) => el("div", {},
            el("a", { href: `/queues/${encodeURIComponent(s.queue)}` }, s.queue), ` (${s.credits})`))),
          el("td", {}, w.jobs.length ? w.jobs.map((j) => el("div", {},
            el("a", { href: Overhop.jobHref(j.jid) }, j.jid), j.acked ? "" : " (not acked)")) : "—"),
          el("td", {}, time(w.registered_at)), el("td", {}, time(w.last_seen_at)),
          el("td", {}, totals(w.totals))))))
        : el("p", { class: "muted" }, "No worker is connected."));
  }

  const load = () => getJSON("/api/workers").then(render);
  load();
  let last = "";
  // Live: reload when the overview stream shows the pools changed (a few times a second at most).
  Overhop.stream("/api/events", (data) => {
    const key = JSON.stringify([data.server.workers, data.server.deliveries,
      data.queues.map((q) => [q.subscriptions, q.credits, q.counts.completed, q.counts.failed])]);
    if (key !== last) { last = key; load(); }
  });
})();
