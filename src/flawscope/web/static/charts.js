/* Small SVG charts for the dashboard (no library, no network). */
"use strict";
const SVGNS = "http://www.w3.org/2000/svg";

function svgEl(name, attrs, parent) {
  const el = document.createElementNS(SVGNS, name);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  if (parent) parent.appendChild(el);
  return el;
}

function clearSvg(svg) { while (svg.firstChild) svg.removeChild(svg.firstChild); }

const W = 600, H = 220, PAD_L = 44, PAD_R = 8, PAD_T = 10, PAD_B = 22;

function yAxis(svg, top, ticks, fmt) {
  for (const t of ticks) {
    const y = PAD_T + (1 - t / top) * (H - PAD_T - PAD_B);
    svgEl("line", { x1: PAD_L, x2: W - PAD_R, y1: y, y2: y, class: "grid" }, svg);
    const label = svgEl("text", { x: PAD_L - 6, y: y + 4, "text-anchor": "end", class: "axis" }, svg);
    label.textContent = fmt(t);
  }
}

/* Normalised scores (1.0 = reject threshold) of the last parts, coloured by outcome. */
function drawTrend(svg, trend) {
  clearSvg(svg);
  const scores = trend.score || [];
  const finite = scores.filter((s) => s !== null && isFinite(s));
  const top = Math.min(4, Math.max(1.5, finite.length ? Math.max(...finite) * 1.1 : 1.5));
  const step = top > 2.5 ? 1 : 0.5;
  const ticks = [];
  for (let t = 0; t <= top + 1e-9; t += step) ticks.push(t);
  yAxis(svg, top, ticks, (t) => t.toFixed(1) + "×");
  const y = (v) => PAD_T + (1 - Math.min(v, top) / top) * (H - PAD_T - PAD_B);
  const n = Math.max(scores.length, 2);
  const x = (i) => PAD_L + (i / (n - 1)) * (W - PAD_L - PAD_R);
  if (trend.review !== null && trend.review !== undefined && trend.review < 1) {
    svgEl("line", { x1: PAD_L, x2: W - PAD_R, y1: y(trend.review), y2: y(trend.review), class: "thr-review" }, svg);
  }
  svgEl("line", { x1: PAD_L, x2: W - PAD_R, y1: y(1), y2: y(1), class: "thr-reject" }, svg);
  // One path of dots per outcome: a handful of elements however many parts are drawn.
  const dots = {};
  scores.forEach((s, i) => {
    if (s === null || !isFinite(s)) return;
    const o = trend.outcome[i];
    dots[o] = (dots[o] || "") + `M${x(i).toFixed(1)} ${y(s).toFixed(1)}h0`;
  });
  for (const [outcome, d] of Object.entries(dots)) {
    svgEl("path", { d, class: "dots pt-" + outcome }, svg);
  }
  const label = svgEl("text", { x: W - PAD_R, y: H - 5, "text-anchor": "end", class: "axis" }, svg);
  label.textContent = scores.length ? `last ${scores.length} parts, newest on the right` : "no parts yet";
}

/* p-chart of the reject rate per subgroup, with its centre line and 3-sigma limits. */
function drawControl(svg, control) {
  clearSvg(svg);
  const pts = control.points || [];
  const highest = Math.max(0.05, ...pts, ...(control.ucl || []));
  const top = Math.min(1, Math.ceil(highest * 1.15 * 20) / 20);
  const ticks = [0, top / 2, top];
  yAxis(svg, top, ticks, (t) => (t * 100).toFixed(0) + "%");
  const y = (v) => PAD_T + (1 - v / top) * (H - PAD_T - PAD_B);
  const n = Math.max(pts.length, 2);
  const x = (i) => PAD_L + (i / (n - 1)) * (W - PAD_L - PAD_R);
  if (!pts.length) {
    const t = svgEl("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "axis" }, svg);
    t.textContent = `waiting for the first ${control.subgroup || ""} parts`;
    return;
  }
  const line = (values, cls) => {
    svgEl("polyline", { points: values.map((v, i) => `${x(i)},${y(v)}`).join(" "), class: cls }, svg);
  };
  line(control.ucl, "limit");
  line(control.lcl, "limit");
  svgEl("line", { x1: PAD_L, x2: W - PAD_R, y1: y(control.center), y2: y(control.center), class: "center" }, svg);
  line(pts, "series");
  const out = new Set(control.out || []);
  pts.forEach((p, i) => svgEl("circle", { cx: x(i), cy: y(p), r: out.has(i) ? 6 : 3.5, class: out.has(i) ? "pt-out" : "pt-ok" }, svg));
}
