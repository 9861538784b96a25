// Overhop dashboard: what every page shares. Plain JavaScript, no build step.
"use strict";

const Overhop = (() => {
  const meta = (name) => document.querySelector(`meta[name="${name}"]`).content;
  const csrf = meta("overhop-csrf");
  const readOnly = meta("overhop-read-only") === "true";
  const argument = document.body.dataset.argument;

  // Build DOM from data without ever parsing it as HTML (no injection from job data).
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else if (key === "text") node.textContent = value;
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  // Replace a node's children (nulls skipped, arrays flattened, strings as text).
  function fill(node, ...children) {
    node.replaceChildren();
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
  }

  function flash(message, isError) {
    const box = el("div", { class: isError ? "error" : "" }, message);
    document.getElementById("flash").append(box);
    setTimeout(() => box.remove(), isError ? 8000 : 4000);
  }

  async function getJSON(url) {
    const reply = await fetch(url, { headers: { Accept: "application/json" } });
    if (!reply.ok) throw new Error(`${url}: ${reply.status} ${await reply.text()}`);
    return reply.json();
  }

  // Every action: a confirmation, then a POST carrying the CSRF token.
  async function act(url, question, body) {
    if (!window.confirm(question)) return null;
    const reply = await fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-Overhop-CSRF": csrf },
      body: JSON.stringify(body || {}),
    });
    const data = await reply.json().catch(() => ({ message: reply.statusText }));
    flash(data.message || (reply.ok ? "done" : "failed"), !reply.ok);
    return reply.ok ? data : null;
  }

  function button(label, url, question, options) {
    if (readOnly) return null;
    const opts = options || {};
    return el("button", {
      class: opts.danger ? "danger" : "", "data-action": opts.name || label,
      onclick: async () => {
        const done = await act(url, question, opts.body ? opts.body() : {});
        if (done && opts.after) opts.after(done);
      },
    }, label);
  }

  function setLive(on) {
    const badge = document.getElementById("live");
    badge.textContent = on ? "● live" : "○ reconnecting";
    badge.classList.toggle("on", on);
  }

  // Server-sent events; the browser reconnects by itself after an error.
  function stream(url, onData, onGone) {
    const source = new EventSource(url);
    source.onopen = () => setLive(true);
    source.onerror = () => setLive(false);
    source.onmessage = (event) => onData(JSON.parse(event.data));
    source.addEventListener("gone", () => { source.close(); if (onGone) onGone(); });
    return source;
  }

  function age(seconds) {
    if (seconds === null || seconds === undefined) return "—";
    if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
    if (seconds < 120) return `${seconds.toFixed(1)} s`;
    if (seconds < 7200) return `${Math.round(seconds / 60)} min`;
    if (seconds < 172800) return `${(seconds / 3600).toFixed(1)} h`;
    return `${(seconds / 86400).toFixed(1)} d`;
  }

  function bytes(n) {
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
  }

  function time(rfc3339) {
    return rfc3339 ? new Date(rfc3339).toLocaleString() : "—";
  }

  // A small line chart of per-second rates: [[t, enqueued, completed, failed], ...].
  function sparkline(points, width, height) {
    const ns = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(ns, "svg");
    svg.setAttribute("width", width); svg.setAttribute("height", height);
    svg.setAttribute("class", "spark");
    if (!points || points.length < 2) return svg;
    const top = Math.max(1, ...points.map((p) => Math.max(p[1], p[2], p[3])));
    const colours = [null, "#2f6fde", "#1f9d55", "#d64545"];
    for (const series of [1, 2, 3]) {
      const line = document.createElementNS(ns, "polyline");
      line.setAttribute("fill", "none");
      line.setAttribute("stroke", colours[series]);
      line.setAttribute("stroke-width", "1.5");
      line.setAttribute("points", points.map((p, i) =>
        `${(i / (points.length - 1)) * (width - 2) + 1},${height - 1 - (p[series] / top) * (height - 2)}`,
      ).join(" "));
      svg.append(line);
    }
    return svg;
  }

  // A job's page: its id stays readable (`emails:0190…`), the rest is escaped.
  const jobHref = (jid) => `/jobs/${encodeURIComponent(jid).replace(/%3A/gi, ":")}`;

  const STATUSES = ["new", "waiting", "delayed", "active", "completed", "failed", "cancelled"];

  return { el, fill, flash, getJSON, act, button, stream, age, bytes, time, sparkline, readOnly,
    argument, STATUSES, setLive, jobHref };
})();
