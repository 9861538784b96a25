// Overview: every queue with its counts, oldest waiting age, rate chart, concurrency, rate
// limit and state; the server's uptime, memory, storage, connections and workers. Live.
"use strict";

(() => {
  const { el, fill, age, bytes, sparkline, button, STATUSES } = Overhop;
  const main = document.getElementById("main");

  function bar(fraction) {
    const fill = el("span", {});
    fill.style.width = `${Math.max(1, fraction * 100).toFixed(1)}%`;  // CSSOM: allowed by the CSP
    return el("div", { class: "bar" }, fill);
  }

  function serverCards(server) {
    const storage = server.storage;
    const used = storage.used_bytes / storage.max_bytes;
    return el("div", { class: "cards", id: "server" },
      el("div", { class: "card" }, el("div", { class: "label" }, "Uptime"),
        el("div", { class: "value", id: "uptime" }, age(server.uptime_seconds))),
      el("div", { class: "card" }, el("div", { class: "label" }, "Memory (RSS)"),
        el("div", { class: "value" }, bytes(server.rss_bytes))),
      el("div", { class: "card" }, el("div", { class: "label" }, "Storage used of cap"),
        el("div", { class: "value" }, `${bytes(storage.used_bytes)} / ${bytes(storage.max_bytes)}`),
        bar(used),
        storage.space_low ? el("span", { class: "badge bad" }, "space low: new jobs refused") : null),
      el("div", { class: "card" }, el("div", { class: "label" }, "Connections"),
        el("div", { class: "value", id: "connections" }, server.connections)),
      el("div", { class: "card" }, el("div", { class: "label" }, "Workers"),
        el("div", { class: "value", id: "workers" }, server.workers)),
      el("div", { class: "card" }, el("div", { class: "label" }, "Jobs out to workers"),
        el("div", { class: "value" }, server.deliveries)));
  }

  function rateNow(points) {
    if (!points || !points.length) return "—";
    const last = points[points.length - 1];
    return `${last[1]}/s in · ${last[2]}/s done`;
  }

  function queueRow(queue, points) {
    const limit = queue.concurrency.limit;
    const rate = queue.rate;
    return el("tr", { "data-queue": queue.name },
      el("td", {}, el("a", { href: `/queues/${encodeURIComponent(queue.name)}` }, queue.name), " ",
        el("span", { class: `badge ${queue.paused ? "paused" : "active"}`, "data-field": "state" },
          queue.paused ? "paused" : "active"),
        queue.badges.map((b) => el("span", { class: "badge warn" }, b))),
      STATUSES.map((status) => el("td", { class: "num", "data-status": status },
        el("a", { href: `/queues/${encodeURIComponent(queue.name)}?status=${status}` },
          queue.counts[status]))),
      el("td", { class: "num", "data-field": "oldest" }, age(queue.oldest_waiting_age_seconds)),
      el("td", {}, sparkline(points, 120, 28), el("div", { class: "muted" }, rateNow(points))),
      el("td", { class: "num" }, `${queue.concurrency.active} / ${limit === null ? "∞" : limit}`),
      el("td", { class: "num" }, rate ? `${rate.started_in_window}/${rate.limit} per ${rate.window_ms / 1000} s` : "—"),
      el("td", { class: "num" }, `${queue.subscriptions} / ${queue.credits}`),
      el("td", {}, queue.paused
        ? button("Resume", `/api/queues/${encodeURIComponent(queue.name)}/resume`,
          `Resume queue ${queue.name}?`, { name: "resume" })
        : button("Pause", `/api/queues/${encodeURIComponent(queue.name)}/pause`,
          `Pause queue ${queue.name}? No job of it starts until it is resumed.`, { name: "pause" })));
  }

  function render(data) {
    const rows = data.queues.map((q) => queueRow(q, data.rates[q.name]));
    fill(main,
      el("h1", {}, "Overview"),
      serverCards(data.server),
      el("h2", {}, "Queues"),
      rows.length ? el("table", { id: "queues" },
        el("thead", {}, el("tr", {}, el("th", {}, "Queue"),
          STATUSES.map((s) => el("th", { class: "num" }, s)),
          el("th", { class: "num" }, "Oldest waiting"), el("th", {}, "Jobs per second (5 min)"),
          el("th", { class: "num" }, "Concurrency"), el("th", { class: "num" }, "Rate limit"),
          el("th", { class: "num" }, "Subs / credits"), el("th", {}, ""))),
        el("tbody", {}, rows))
        : el("p", { class: "muted" }, "No queues yet."),
      el("p", { class: "muted" }, "Chart: blue enqueued, green completed, red failed, per second."));
  }

  Overhop.getJSON("/api/overview").then(render);
  Overhop.stream("/api/events", render);
})();
