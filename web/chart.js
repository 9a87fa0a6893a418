// Line charts drawn as SVG by hand (no library): one chart per figure (loss, eval loss, learning rate,
// tokens/s) against the training step. add(step, value) and the chart redraws; points of a later attempt that
// go back to an earlier step (a resume from a checkpoint) replace the old ones from that step on.
"use strict";
window.Anneal = window.Anneal || {};

Anneal.LineChart = class {
  constructor(id, title) {
    this.id = id;
    this.title = title;
    this.points = [];  // [[step, value]] ascending by step
    const SVG = "http://www.w3.org/2000/svg";
    this.svg = document.createElementNS(SVG, "svg");
    this.svg.setAttribute("viewBox", "0 0 420 200");
    this.svg.setAttribute("class", "chart");
    this.svg.setAttribute("id", id);
    this.svg.setAttribute("role", "img");
    this.svg.setAttribute("aria-label", title);
    this.node = Anneal.dom.el("figure", { class: "chart-box" }, Anneal.dom.el("figcaption", {}, title), this.svg);
    this.draw();
  }

  add(step, value) {
    if (!Number.isFinite(value)) return;
    while (this.points.length && this.points[this.points.length - 1][0] >= step) this.points.pop();
    this.points.push([step, value]);
  }

  draw() {
    const SVG = "http://www.w3.org/2000/svg";
    const W = 420, H = 200, left = 56, right = 10, top = 10, bottom = 26;
    const svg = this.svg;
    while (svg.firstChild) svg.firstChild.remove();
    svg.setAttribute("data-points", String(this.points.length));
    const add = (tag, attrs, text) => {
      const n = document.createElementNS(SVG, tag);
      for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, String(v));
      if (text !== undefined) n.textContent = text;
      svg.append(n);
      return n;
    };
    add("rect", { x: left, y: top, width: W - left - right, height: H - top - bottom, class: "chart-area" });
    if (!this.points.length) {
      add("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "chart-empty" }, "no data yet");
      return;
    }
    // Loops, not Math.min(...xs): spreading 100k points overflows the call stack.
    let [x0, x1, y0, y1] = [Infinity, -Infinity, Infinity, -Infinity];
    for (const [x, y] of this.points) {
      x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y);
    }
    if (x0 === x1) { x0 -= 1; x1 += 1; }
    if (y0 === y1) { const d = Math.abs(y0) * 0.1 || 1; y0 -= d; y1 += d; }
    const yTicks = niceTicks(y0, y1, 4);
    y0 = Math.min(y0, yTicks[0]); y1 = Math.max(y1, yTicks[yTicks.length - 1]);
    const sx = (x) => left + ((x - x0) / (x1 - x0)) * (W - left - right);
    const sy = (y) => H - bottom - ((y - y0) / (y1 - y0)) * (H - top - bottom);
    for (const t of yTicks) {
      add("line", { x1: left, x2: W - right, y1: sy(t), y2: sy(t), class: "chart-grid" });
      add("text", { x: left - 4, y: sy(t) + 4, "text-anchor": "end", class: "chart-tick" }, formatTick(t));
    }
    for (const t of niceTicks(x0, x1, 5).filter((t) => t >= x0 && t <= x1 && Number.isInteger(t))) {
      add("text", { x: sx(t), y: H - 8, "text-anchor": "middle", class: "chart-tick" }, String(t));
    }
    add("polyline", { points: this.points.map(([x, y]) => `${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(" "),
                      class: "chart-line" });
    const [lx, ly] = this.points[this.points.length - 1];
    add("circle", { cx: sx(lx), cy: sy(ly), r: 3, class: "chart-dot" });
    add("title", {}, `${this.title}: ${formatTick(ly)} at step ${lx}`);
  }
};

// About `count` round tick values spanning [lo, hi].
function niceTicks(lo, hi, count) {
  const raw = (hi - lo) / count;
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) || 10 * mag;
  const ticks = [];
  // By index, at most 50: `t += step` stops moving when step is below half an ulp of t.
  const first = Math.floor(lo / step) * step;
  for (let i = 0; i < 50; i++) {
    const t = first + i * step;
    if (t > hi + step * 0.5) break;
    ticks.push(Number(t.toPrecision(12)));
  }
  return ticks;
}

function formatTick(v) {
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e5)) return v.toExponential(1);
  return String(Number(v.toPrecision(4)));
}
