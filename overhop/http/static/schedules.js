// Schedules: each one's queue, cron expression and zone, missed policy, state, next and
// last run (the occurrence last fired), and the jobs it fired since the server started.
"use strict";

(() => {
  const { el, fill, time, getJSON } = Overhop;
  const main = document.getElementById("main");

  function render(data) {
    fill(main, el("h1", {}, "Schedules"),
      data.schedules.length ? el("table", { id: "schedules" },
        el("thead", {}, el("tr", {}, ["Name", "Queue", "Cron", "Time zone", "Missed", "State",
          "Next run", "Last run", "Fired since start"].map((h) => el("th", {}, h)))),
        el("tbody", {}, data.schedules.map((s) => el("tr", { "data-schedule": s.name },
          el("td", {}, s.name),
          el("td", {}, el("a", { href: `/queues/${encodeURIComponent(s.queue)}` }, s.queue)),
          el("td", {}, el("code", {}, s.cron)), el("td", {}, s.tz), el("td", {}, s.missed),
          el("td", { "data-field": "state" },
            el("span", { class: `badge ${s.paused ? "" : "active"}` }, s.paused ? "paused" : "active")),
          el("td", { "data-field": "next_run_at" }, s.next_run_at ? time(s.next_run_at) : "—"),
          el("td", { "data-field": "last_run_at" }, s.last_run_at ? time(s.last_run_at) : "—"),
          el("td", { class: "num", "data-field": "fired" }, s.fired_since_start)))))
        : el("p", { class: "muted" }, "No schedule. Add one with `overhop schedule add`."));
  }

  const load = () => getJSON("/api/schedules").then(render);
  load();
  let last = "";
  // Live: reload when the overview stream shows jobs enqueued (fires) or a second passed.
  Overhop.stream("/api/events", (data) => {
    const key = JSON.stringify([data.queues.map((q) => q.counts), Math.floor(Date.now() / 1000)]);
    if (key !== last) { last = key; load(); }
  });
})();
