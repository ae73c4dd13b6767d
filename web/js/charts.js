// Drawing: card sparklines, per-core bars, the detail view's time charts.

import { fmtDuration, fmtPct, isNum, nowSec, setAttr, svgEl } from "./util.js";

const SPARK_POINTS = 120;            // card sparklines are downsampled to this
const SPARK_SPAN = 900;              // seconds a sparkline covers at most
const CHART_W = 600;
const CHART_H = 160;
const PAD_L = 44;                    // the least left margin; wider y labels widen it
const LABEL_GAP = 4;                 // between a y label and the plot
const LABEL_EDGE = 2;                // between a y label and the chart's left edge
const LABEL_CHAR_W = 7;              // a y label's width per character, when it cannot be measured
const PAD_R = 6;
const PAD_T = 8;
const PAD_B = 18;

const sparkBuckets = new Float32Array(SPARK_POINTS);

/**
 * A sparkline over time (points from the overview history are 10 s apart,
 * live ones an interval apart): the last SPARK_SPAN seconds in SPARK_POINTS
 * buckets, each the max of its points, so short spikes stay visible.
 */
export function sparkPoints(h, column) {
  const n = h.length;
  if (n === 0) return "";
  const tEnd = h.t[h.at(n - 1)];
  const first = Math.min(n - 1, h.firstAtOrAfter(tEnd - SPARK_SPAN));
  const tStart = h.t[h.at(first)];
  const span = tEnd - tStart;
  const last = SPARK_POINTS - 1;
  sparkBuckets.fill(NaN);
  for (let i = first; i < n; i++) {
    const j = h.at(i);
    const x = column[j];
    if (Number.isNaN(x)) continue;
    const b = span > 0 ? Math.round(((h.t[j] - tStart) / span) * last) : last;
    if (!(x <= sparkBuckets[b])) sparkBuckets[b] = x;
  }
  const out = [];
  let y = null;
  for (let b = 0; b <= last; b++) {
    const v = sparkBuckets[b];
    if (Number.isNaN(v)) continue;
    y = (23 - (Math.min(100, Math.max(0, v)) * 22) / 100).toFixed(1);
    out.push(`${((b * 100) / last).toFixed(1)},${y}`);
  }
  if (out.length === 1) return `0,${y} 100,${y}`;   // one point: a flat line, not nothing
  return out.join(" ");
}

/**
 * One bar per core, filled from the bottom to its usage (one element a
 * bar: its fill is a gradient, --fill its height as a fraction), coloured
 * by level; big bars (the detail view) have a title.
 */
export function renderCoreBars(container, bars, perCore, big) {
  if (bars.length !== perCore.length) {
    container.textContent = "";
    bars.length = 0;
    for (let c = 0; c < perCore.length; c++) {
      const bar = document.createElement("span");
      bar.className = "core";
      if (big) bar.title = `core ${c}`;
      container.appendChild(bar);
      bars.push(bar);
    }
  }
  for (let c = 0; c < perCore.length; c++) {
    const v = perCore[c];
    const pct = isNum(v) ? Math.min(100, Math.max(0, v)) : 0;
    const bar = bars[c];
    const fill = (pct / 100).toFixed(3);
    if (bar.__fill !== fill) { bar.__fill = fill; bar.style.setProperty("--fill", fill); }
    setAttr(bar, "data-level", pct >= 75 ? "HIGH" : pct >= 25 ? "MEDIUM" : "LOW");
    if (big) setAttr(bar, "title", `core ${c}: ${fmtPct(v)}`);
  }
}

/**
 * Draw time series into an svg: series = [{column, cls}], y from 0 to max
 * (or auto), x over the history's time range; NaN leaves a gap.
 */
export function drawChart(svg, h, series, opts) {
  svg.textContent = "";
  const n = h.length;
  let max = opts.max;
  if (max === undefined) {
    max = 0;
    for (const s of series) for (let i = 0; i < n; i++) {
      const v = s.column[h.at(i)];
      if (v > max) max = v;
    }
    max = niceCeil(max || 1);
  }
  // The y labels first: the left margin is the widest of them, measured as drawn,
  // so "488 KiB/s" is not cut to "88 KiB/s".
  const labels = [0, 0.5, 1].map((frac) => {
    const label = svgEl("text", { x: 0, y: 0, class: "axis y-label", "text-anchor": "end" });
    label.textContent = opts.fmt(max * frac);
    svg.appendChild(label);
    return label;
  });
  const padL = Math.max(PAD_L, Math.ceil(Math.max(...labels.map(labelWidth))) + LABEL_GAP + LABEL_EDGE);
  const tEnd = n ? h.t[h.at(n - 1)] : nowSec();
  const tStart = n ? Math.min(h.t[h.at(0)], tEnd - 60) : tEnd - 60;
  const span = Math.max(1, tEnd - tStart);
  const x = (t) => padL + ((t - tStart) / span) * (CHART_W - padL - PAD_R);
  const y = (v) => PAD_T + (1 - Math.min(1, Math.max(0, v / max))) * (CHART_H - PAD_T - PAD_B);

  [0, 0.5, 1].forEach((frac, i) => {
    const yy = y(max * frac);
    svg.insertBefore(svgEl("line", { x1: padL, x2: CHART_W - PAD_R, y1: yy, y2: yy, class: "grid" }), labels[0]);
    setAttr(labels[i], "x", padL - LABEL_GAP);
    setAttr(labels[i], "y", yy + 4);
  });
  const ago = svgEl("text", { x: padL, y: CHART_H - 4, class: "axis" });
  ago.textContent = `−${fmtDuration(span)}`;
  svg.appendChild(ago);
  const nowLabel = svgEl("text", { x: CHART_W - PAD_R, y: CHART_H - 4, class: "axis", "text-anchor": "end" });
  nowLabel.textContent = "now";
  svg.appendChild(nowLabel);

  for (const s of series) {
    let d = "";
    let pen = "M";
    for (let i = 0; i < n; i++) {
      const j = h.at(i);
      const v = s.column[j];
      if (Number.isNaN(v)) { pen = "M"; continue; }
      d += `${pen}${x(h.t[j]).toFixed(1)},${y(v).toFixed(1)}`;
      pen = "L";
    }
    if (!d) continue;
    const path = svgEl("path", { d, class: `line ${s.cls || ""}`, "vector-effect": "non-scaling-stroke" });
    if (s.color) path.style.stroke = s.color;
    svg.appendChild(path);
  }
  if (n === 0) {
    const t = svgEl("text", { x: CHART_W / 2, y: CHART_H / 2, class: "axis", "text-anchor": "middle" });
    t.textContent = "no data yet";
    svg.appendChild(t);
  }
}

/** The width of an svg text in its svg's units: measured when laid out, else estimated. */
function labelWidth(label) {
  let measured = 0;
  try { measured = label.getComputedTextLength(); } catch (e) { measured = 0; }
  return measured > 0 ? measured : label.textContent.length * LABEL_CHAR_W;
}

function niceCeil(v) {
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

export function fillLegend(ul, items) {
  ul.textContent = "";
  for (const it of items) {
    const li = document.createElement("li");
    const sw = document.createElement("span");
    sw.className = `swatch ${it.cls || ""}`;
    if (it.color) sw.style.background = it.color;
    li.append(sw, document.createTextNode(it.label));
    ul.appendChild(li);
  }
}
