// The detail view of one host: a modal dialog with its facts, charts and
// every analyzer's findings.

import { readAnalysis } from "./analysis.js";
import { drawChart, fillLegend, renderCoreBars } from "./charts.js";
import { grid } from "./grid.js";
import { ageOf, hosts, statusOf } from "./state.js";
import {
  $, fmtAge, fmtBytes, fmtPct, fmtRate, isNum, isObj, level, nowSec, setAttr, setHidden,
  setLevelBadge, setText,
} from "./util.js";

const DISK_COLOR = "#ea580c";

const detail = $("#detail");
const detailCoreBars = [];
let detailHost = null;
let detailOpener = null;             // the host whose card opened the view
let askHistory = () => {};
let giveFocus = () => {};

/** The host shown in the detail view, or null. */
export function shownHost() {
  return detailHost;
}

/**
 * Wire the detail view: cards open it (click, Enter, Space), the close
 * button, a click beside it and Esc close it; Tab stays inside. It asks
 * for the host's full history with requestHistory(host), and gives the
 * focus back to the card it was opened from with focusHost(host) (cards
 * are recycled: the element that opened it may show another host by then).
 */
export function installDetail(requestHistory, focusHost) {
  askHistory = requestHistory;
  giveFocus = focusHost;
  grid.addEventListener("click", (e) => {
    const card = e.target.closest(".host-card");
    if (card) openDetail(card.dataset.host, true);
  });
  grid.addEventListener("keydown", (e) => {
    if (e.key !== "Enter" && e.key !== " ") return;
    const card = e.target.closest(".host-card");
    if (!card) return;
    e.preventDefault();
    openDetail(card.dataset.host, true);
  });
  $("#detail-close").addEventListener("click", closeDetail);
  detail.addEventListener("click", (e) => { if (e.target === detail) closeDetail(); });
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && !detail.hidden) { e.preventDefault(); closeDetail(); return; }
    if (e.key === "Tab" && !detail.hidden) {
      // keep focus inside the dialog
      const focusable = detail.querySelectorAll("button, [href], input, select, [tabindex]:not([tabindex='-1'])");
      if (!focusable.length) return;
      const first = focusable[0];
      const last = focusable[focusable.length - 1];
      if (e.shiftKey && document.activeElement === first) { e.preventDefault(); last.focus(); }
      else if (!e.shiftKey && document.activeElement === last) { e.preventDefault(); first.focus(); }
    }
  });
}

function openDetail(host, fromCard) {
  if (!hosts.has(host)) return;
  detailHost = host;
  detailOpener = fromCard ? host : null;
  detail.hidden = false;
  document.body.classList.add("detail-open");
  askHistory(host);
  renderDetail();
  $("#detail-close").focus();
}

export function closeDetail() {
  if (detail.hidden) return;
  detail.hidden = true;
  detailHost = null;
  document.body.classList.remove("detail-open");
  const opener = detailOpener;
  detailOpener = null;
  if (opener && hosts.has(opener)) giveFocus(opener);
}

function addFact(dl, name, value) {
  const wrap = document.createElement("div");
  const dt = document.createElement("dt");
  const dd = document.createElement("dd");
  dt.textContent = name;
  dd.textContent = value;
  wrap.append(dt, dd);
  dl.appendChild(wrap);
}

export function renderDetailAge(now) {
  const entry = hosts.get(detailHost);
  if (!entry) return;
  setText($(".detail-age", detail), entry.ev ? `updated ${fmtAge(ageOf(entry, now))}` : "no data yet");
  const status = statusOf(entry, now);
  const badge = $(".detail-status", detail);
  setHidden(badge, status === "online");
  setText(badge, status.toUpperCase());
  setAttr(badge, "data-status", status);
}

export function renderDetail() {
  const entry = hosts.get(detailHost);
  if (!entry) return;
  const ev = entry.ev || {};
  const d = entry.data || readAnalysis({});
  const h = entry.history;
  const m = isObj(ev.metrics) ? ev.metrics : {};
  setText($("#detail-title"), entry.host);
  setLevelBadge($(".detail-level", detail), d.level);
  renderDetailAge(nowSec());

  const facts = $(".detail-facts", detail);
  facts.textContent = "";
  addFact(facts, "CPU", `${fmtPct(d.cpu)} ${d.cpuLevel || ""}`);
  const mem = isObj(m.memory) ? m.memory : {};
  addFact(facts, "memory", `${fmtPct(d.mem)} ${d.memLevel || ""}` +
    (isNum(mem.used) && isNum(mem.total) ? ` (${fmtBytes(mem.used)} / ${fmtBytes(mem.total)})` : ""));
  if (isObj(m.swap) && isNum(m.swap.percent)) addFact(facts, "swap", fmtPct(m.swap.percent));
  addFact(facts, "load 1/5/15", d.load ? d.load.map((x) => (isNum(x) ? x.toFixed(2) : "–")).join(" / ") : "–");
  addFact(facts, "net ↓ / ↑", `${fmtRate(d.rx)} / ${fmtRate(d.tx)}`);
  if (isObj(m.disk_io)) addFact(facts, "disk read / write", `${fmtRate(m.disk_io.read_bytes_per_s)} / ${fmtRate(m.disk_io.write_bytes_per_s)}`);
  addFact(facts, "cores", String(d.perCore.length || "–"));
  addFact(facts, "seq", ev.seq === null || ev.seq === undefined ? "–" : String(ev.seq));
  addFact(facts, "interval", isNum(ev.interval) ? `${ev.interval} s` : "–");

  detail.dataset.history = entry.fullHistory ? "full" : "loading";
  setHidden($(".detail-loading", detail), entry.fullHistory);
  const pctFmt = (v) => `${Math.round(v)}%`;
  $('.chart-now[data-chart="cpu"]', detail).textContent = fmtPct(d.cpu);
  $('.chart-now[data-chart="memory"]', detail).textContent = fmtPct(d.mem);
  drawChart($("#chart-cpu"), h, [{ column: h.cpu, cls: "cpu" }], { max: 100, fmt: pctFmt });
  drawChart($("#chart-cores"), h, h.cores.filter(Boolean).map((column) => ({ column, cls: "core-line" })), { max: 100, fmt: pctFmt });
  renderCoreBars($(".core-bars-big", detail), detailCoreBars, d.perCore, true);
  drawChart($("#chart-mem"), h, [{ column: h.mem, cls: "mem" }], { max: 100, fmt: pctFmt });
  // The history keeps the fullest mount's percent; every mount's is in the legend, as of now.
  drawChart($("#chart-disk"), h, [{ column: h.disk, color: DISK_COLOR }], { max: 100, fmt: pctFmt });
  fillLegend($('[data-legend="disk"]', detail), d.disks.map((x) => (x === d.fullest
    ? { label: `${x.mount} ${fmtPct(x.percent)} (fullest, drawn)`, color: DISK_COLOR }
    : { label: `${x.mount} ${fmtPct(x.percent)}`, cls: "none" })));
  drawChart($("#chart-net"), h, [{ column: h.rx, cls: "rx" }, { column: h.tx, cls: "tx" }], { fmt: (v) => fmtRate(v) });
  fillLegend($('[data-legend="net"]', detail), [
    { label: `received ${fmtRate(d.rx)}`, cls: "rx" },
    { label: `sent ${fmtRate(d.tx)}`, cls: "tx" },
  ]);
  renderAnalyses($(".analyses", detail), ev.analyses);
}

function renderAnalyses(ul, analyses) {
  ul.textContent = "";
  if (!isObj(analyses) || Object.keys(analyses).length === 0) {
    const li = document.createElement("li");
    li.textContent = "none";
    ul.appendChild(li);
    return;
  }
  for (const [name, a] of Object.entries(analyses)) {
    const res = isObj(a) ? a : {};
    const li = document.createElement("li");
    li.className = "analysis";
    const isError = res.status === "error";
    li.dataset.status = isError ? "error" : "ok";
    li.dataset.analyzer = name;
    const head = document.createElement("div");
    head.className = "analysis-head";
    const title = document.createElement("strong");
    title.textContent = name;
    head.appendChild(title);
    if (isError) {
      const err = document.createElement("span");
      err.className = "status-badge";
      err.dataset.status = "error";
      err.textContent = "ERROR";
      head.appendChild(err);
    } else {
      const badge = document.createElement("span");
      badge.className = "level-badge";
      setLevelBadge(badge, level(res.level));
      head.appendChild(badge);
    }
    li.appendChild(head);
    const lines = [];
    if (isError) lines.push(String(res.error ?? "failed"));
    if (isObj(res.checks)) {
      for (const [subject, c] of Object.entries(res.checks)) {
        if (!isObj(c)) continue;
        let line = `${subject}: ${level(c.level) || "–"}`;
        if (isNum(c.value)) line += ` (${Number(c.value.toFixed(2))})`;
        if (typeof c.message === "string" && c.message) line += ` — ${c.message}`;
        lines.push(line);
      }
    }
    if (Array.isArray(res.messages)) for (const msg of res.messages) lines.push(String(msg));
    if (lines.length) {
      const list = document.createElement("ul");
      for (const line of lines) {
        const item = document.createElement("li");
        item.textContent = line;
        list.appendChild(item);
      }
      li.appendChild(list);
    }
    ul.appendChild(li);
  }
}
