// Job: payload and result pretty-printed (large ones cut, with a download), status, why it
// is not running in a sentence, every attempt with its reason, worker, times and error
// (traceback), progress, and its log lines appearing live. Actions: retry, remove.
"use strict";

(() => {
  const { el, fill, time, button } = Overhop;
  const main = document.getElementById("main");
  const jid = Overhop.argument;
  const base = `/api/jobs/${encodeURIComponent(jid)}`;

  function block(title, text, cut, length, id) {
    if (text === null) return [el("h2", {}, title), el("p", { class: "muted" }, "none")];
    return [el("h2", {}, title), el("pre", { id }, text),
      cut ? el("p", { class: "muted" }, `Cut at ${text.length} of ${length} characters. `,
        el("a", { href: `${base}/payload`, download: "" }, "Download the whole payload")) : null];
  }

  function attempts(history) {
    if (!history.length) return el("p", { class: "muted" }, "No attempt yet.");
    return el("table", { id: "history" },
      el("thead", {}, el("tr", {}, ["#", "Outcome", "Worker", "Started", "Ended", "Error"]
        .map((h) => el("th", {}, h)))),
      el("tbody", {}, history.map((a) => el("tr", {},
        el("td", { class: "num" }, a.attempt, a.counted ? "" : " (not counted)"),
        el("td", { class: `status-${a.outcome === "completed" ? "completed" : "failed"}` }, a.outcome),
        el("td", {}, a.worker_name || a.worker_id || "—"),
        el("td", {}, time(a.started_at)), el("td", {}, time(a.ended_at)),
        el("td", {}, a.error ? [el("div", { class: "error-message" }, a.error.message),
          a.error.details ? el("details", { open: true }, el("summary", {}, "traceback"),
            el("pre", { class: "traceback" }, a.error.details)) : null] : "")))));
  }

  function render(job) {
    const delivery = job.delivery;
    fill(main,
      el("h1", {}, "Job ", el("code", {}, job.jid)),
      el("dl", { class: "kv" },
        el("dt", {}, "Queue"), el("dd", {}, el("a", { href: `/queues/${encodeURIComponent(job.queue)}` }, job.queue)),
        el("dt", {}, "Status"), el("dd", { id: "status", class: `status-${job.status}` }, job.status),
        job.task !== null ? [el("dt", {}, "Task"), el("dd", { id: "task" }, el("code", {}, job.task))] : null,
        el("dt", {}, "Priority"), el("dd", { id: "priority" }, String(job.priority)),
        job.group !== null ? [el("dt", {}, "Group"), el("dd", { id: "group" }, job.group)] : null,
        job.unique_key !== null ? [el("dt", {}, "Unique key"), el("dd", { id: "unique" }, el("code", {}, job.unique_key),
          ` (held until ${job.unique_until === "ttl" ? time(job.unique_expires_at) : job.unique_until})`)] : null,
        el("dt", {}, "Attempts"), el("dd", {}, `${job.attempts} of ${job.max_attempts}`),
        el("dt", {}, "Created"), el("dd", {}, time(job.created_at)),
        el("dt", {}, "Ready at"), el("dd", {}, time(job.execution_start_at)),
        el("dt", {}, "Finished"), el("dd", {}, time(job.finished_at)),
        delivery ? [el("dt", {}, "Running on"), el("dd", {}, delivery.worker_name || delivery.worker_id,
          delivery.acked ? `, lease until ${time(delivery.lease_expires_at)}` : ", not acknowledged yet")] : null,
        job.progress !== null ? [el("dt", {}, "Progress"), el("dd", { id: "progress" }, JSON.stringify(job.progress))] : null,
        job.headers.traceparent ? [el("dt", {}, "Trace"), el("dd", {}, el("code", {}, job.headers.traceparent))] : null),
      job.blocked_sentence ? el("p", { class: "sentence", id: "blocked" }, job.blocked_sentence) : null,
      el("div", { class: "actions" },
        job.status === "failed" ? button("Retry", `${base}/retry`, "Put this job back to waiting?", { name: "retry" }) : null,
        job.status !== "active" && job.status !== "waiting" ? button("Remove", `${base}/remove`,
          "Remove this job for good?", { name: "remove", danger: true, after: () => { location.href = `/queues/${encodeURIComponent(job.queue)}`; } }) : null),
      block("Payload", job.payload, job.payload_cut, job.payload_length, "payload"),
      job.result !== null ? block("Result", job.result, job.result_cut, job.result_length, "result") : null,
      el("h2", {}, "Attempts"), attempts(job.history),
      el("h2", {}, "Log", job.logs_dropped ? el("span", { class: "muted" }, ` (${job.logs_dropped} older lines dropped)`) : null),
      job.logs.length ? el("ol", { class: "logs", id: "logs" }, job.logs.map((line) =>
        el("li", { title: line.at }, line.line))) : el("p", { class: "muted", id: "logs" }, "No log lines."));
  }

  Overhop.getJSON(base).then(render, (error) => {
    fill(main, el("h1", {}, "Job ", jid), el("p", { class: "muted" }, String(error)));
  });
  Overhop.stream(`${base}/events`, render, () => {
    Overhop.setLive(false);
    main.prepend(el("p", { class: "sentence" }, "This job no longer exists."));
  });
})();
