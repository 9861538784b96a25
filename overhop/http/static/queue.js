// Queue: its jobs by status, paged by `after` at any depth (status, after and limit kept in
// the URL), and its actions: pause/resume, clear, retry all failed, change settings.
"use strict";

(() => {
  const { el, fill, age, time, button, getJSON, STATUSES } = Overhop;
  const main = document.getElementById("main");
  const name = Overhop.argument;
  const base = `/api/queues/${encodeURIComponent(name)}`;
  const params = new URLSearchParams(location.search);
  const status = params.get("status") || "waiting";
  const SETTINGS = ["concurrency_limit", "rate_limit", "rate_window_ms", "max_attempts",
    "retry_interval_ms", "lease_ms", "completed_max_count", "failed_max_count"];
  let lastCounts = "";

  function pageUrl(changes) {
    const next = new URLSearchParams(location.search);
    for (const [key, value] of Object.entries(changes)) {
      if (value === null) next.delete(key); else next.set(key, value);
    }
    return `/queues/${encodeURIComponent(name)}?${next}`;
  }

  function settingsForm(config) {
    const inputs = SETTINGS.map((key) => el("label", {}, key,
      el("input", { name: key, type: "number", min: "0", value: config[key] ?? "",
        placeholder: "none / default" })));
    const form = el("form", { class: "settings", id: "settings" }, inputs);
    const changes = () => {
      const found = {};
      for (const key of SETTINGS) {
        const raw = form.elements[key].value.trim();
        const value = raw === "" ? null : Number(raw);
        if (value !== (config[key] ?? null)) found[key] = value;
      }
      return { changes: found };
    };
    const save = button("Save settings", `${base}/settings`,
      "Change these settings now? They apply at once, to waiting jobs too.",
      { name: "settings", body: changes, after: load });
    if (save) form.append(el("div", {}, save));
    else form.querySelectorAll("input").forEach((i) => { i.disabled = true; });
    return form;
  }

  function jobTable(page) {
    if (!page.jobs.length) return el("p", { class: "muted" }, `No ${status} jobs.`);
    return el("table", { id: "jobs" },
      el("thead", {}, el("tr", {}, ["Job", "Task", "Priority", "Group", "Status", "Created", "Attempts", "Finished", "Last error"]
        .map((h) => el("th", {}, h)))),
      el("tbody", {}, page.jobs.map((job) => el("tr", { "data-jid": job.jid },
        el("td", {}, el("a", { href: Overhop.jobHref(job.jid) }, job.jid)),
        el("td", {}, job.task === null ? "—" : el("code", {}, job.task)),
        el("td", { class: "num" }, job.priority),
        el("td", {}, job.group === null ? "—" : job.group),
        el("td", { class: `status-${job.status}` }, job.status),
        el("td", {}, time(job.created_at)),
        el("td", { class: "num" }, job.attempts),
        el("td", {}, time(job.finished_at)),
        el("td", { class: "muted" }, job.last_error || "")))));
  }

  function render(page) {
    const queue = page.queue;
    lastCounts = JSON.stringify(queue.counts);
    const actions = el("div", { class: "actions" },
      queue.paused
        ? button("Resume", `${base}/resume`, `Resume queue ${name}?`, { name: "resume", after: load })
        : button("Pause", `${base}/pause`, `Pause queue ${name}?`, { name: "pause", after: load }),
      button("Clear", `${base}/clear`,
        `Remove every new, waiting and delayed job of ${name}? This cannot be undone.`,
        { name: "clear", danger: true, after: load }),
      queue.counts.failed ? button(`Retry all ${queue.counts.failed} failed`, `${base}/retry-failed`,
        `Move the failed jobs of ${name} back to waiting (up to 10,000 per click)?`,
        { name: "retry-failed", after: load }) : null);
    fill(main,
      el("h1", {}, "Queue ", name, " ",
        el("span", { class: `badge ${queue.paused ? "paused" : "active"}`, id: "queue-state" },
          queue.paused ? "paused" : "active")),
      el("dl", { class: "kv" },
        el("dt", {}, "Oldest waiting"), el("dd", {}, age(queue.oldest_waiting_age_seconds)),
        el("dt", {}, "Concurrency"), el("dd", {}, `${queue.concurrency.active} / ${queue.concurrency.limit ?? "∞"}`),
        el("dt", {}, "Subscriptions / credits"), el("dd", {}, `${queue.subscriptions} / ${queue.credits}`)),
      actions,
      el("nav", { class: "tabs", id: "status-tabs" }, STATUSES.map((s) => el("a", {
        href: pageUrl({ status: s, after: null }), class: s === status ? "current" : "",
        "data-status": s }, `${s} (${queue.counts[s]})`))),
      jobTable(page),
      el("div", { class: "actions" },
        params.get("after") ? el("a", { href: pageUrl({ after: null }) }, "« First page") : null,
        page.next_after ? el("a", { href: pageUrl({ after: page.next_after }), id: "next" }, "Next page »") : null),
      el("h2", {}, "Settings"), settingsForm(queue.config));
  }

  async function load() {
    const query = new URLSearchParams({ status });
    if (params.get("after")) query.set("after", params.get("after"));
    if (params.get("limit")) query.set("limit", params.get("limit"));
    render(await getJSON(`${base}/jobs?${query}`));
  }

  load();
  // Live: the overview stream says when this queue's counts change; then reload the page
  // of jobs (at most as often as the stream sends, a few times a second).
  Overhop.stream("/api/events", (data) => {
    const queue = data.queues.find((q) => q.name === name);
    if (queue && JSON.stringify(queue.counts) !== lastCounts
        && !document.activeElement.closest("form")) load();
  });
})();
