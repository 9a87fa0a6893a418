// Small DOM and formatting helpers shared by the pages. Text is always set as text (never parsed as HTML).
"use strict";
window.Anneal = window.Anneal || {};

Anneal.dom = (() => {
  // el("td", {class: "x", title: "y", onclick: fn}, child, "text", ...)
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else if (key === "text") node.textContent = value;
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    append(node, children);
    return node;
  }

  function append(node, children) {
    for (const child of children.flat(Infinity)) {
      if (child === undefined || child === null || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function clear(node) { while (node.firstChild) node.firstChild.remove(); return node; }

  // A table: columns [{title, cell: row => node|text, class?}], rows; `empty` when there are none.
  function table(columns, rows, empty, attrs) {
    if (!rows.length) return el("p", { class: "muted" }, empty);
    return el("table", attrs || {},
      el("thead", {}, el("tr", {}, columns.map((c) => el("th", { class: c.class }, c.title)))),
      el("tbody", {}, rows.map((r) => el("tr", { "data-key": r.__key }, columns.map((c) => el("td", { class: c.class }, c.cell(r)))))));
  }

  const num = (v) => Number(v || 0);

  function time(ms) {
    ms = num(ms);
    if (!ms) return "—";
    const d = new Date(ms);
    return d.toLocaleString(undefined, { hour12: false });
  }

  function age(ms) {
    ms = num(ms);
    if (!ms) return "—";
    return duration(Date.now() - ms) + " ago";
  }

  function duration(ms) {
    const s = Math.max(0, Math.round(ms / 1000));
    if (s < 60) return s + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
    return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
  }

  function bytes(n) {
    n = num(n);
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : n) + " " + units[i];
  }

  // "JOB_RUNNING" -> a coloured pill reading "running".
  function state(name) {
    name = name || "UNSPECIFIED";
    const short = name.replace(/^(JOB|NODE|TASK|CHECKPOINT|PIPELINE_RUN|PIPELINE_STEP|ROLE)_/, "").toLowerCase();
    return el("span", { class: "state state-" + short }, short);
  }

  // A bar filled to fraction (0..1), with a label.
  function meter(fraction, label) {
    const f = Math.max(0, Math.min(1, fraction || 0));
    const bar = el("span", { class: "meter-fill" + (f > 0.9 ? " high" : "") });
    bar.style.width = (f * 100).toFixed(1) + "%";
    return el("span", { class: "meter", title: label }, bar, el("span", { class: "meter-label" }, label));
  }

  function link(href, text) { return el("a", { href, "data-nav": true }, text); }

  return { el, append, clear, table, num, time, age, duration, bytes, state, meter, link };
})();
