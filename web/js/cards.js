// The grid of host cards: drawing one card, and the grid's filter, order
// and counts.

import { renderCoreBars, sparkPoints } from "./charts.js";
import { ageOf, hosts, markPending, statusOf, view } from "./state.js";
import {
  $, LEVELS, fmtAge, fmtPct, fmtRate, isNum, setAttr, setHidden, setLevelBadge, setText,
} from "./util.js";

export const grid = $("#hosts");
const template = $("#card-template");
const emptyNote = $("#empty");
export const filterInput = $("#filter");
export const levelSelect = $("#level-filter");
export const sortSelect = $("#sort");
export const countsBox = $("#counts");

const visibility = "IntersectionObserver" in window
  ? new IntersectionObserver((records) => {
      for (const r of records) {
        const entry = r.target.__entry;
        entry.visible = r.isIntersecting;
        if (entry.visible && entry.cardStale) markPending(entry);
      }
    }, { rootMargin: "200px" })
  : null;

function createCard(entry) {
  const el = template.content.firstElementChild.cloneNode(true);
  el.dataset.host = entry.host;
  el.__entry = entry;
  const card = {
    el,
    name: $(".host-name", el),
    status: $(".status-badge", el),
    age: $(".age", el),
    cpuValue: $(".cpu-value", el),
    cpuLevel: $(".cpu-level", el),
    memValue: $(".mem-value", el),
    memLevel: $(".mem-level", el),
    cpuSpark: $(".spark-cpu", el),
    memSpark: $(".spark-mem", el),
    cores: $(".cores", el),
    coreBars: [],
    load: $(".load-value", el),
    disk: $(".disk-value", el),
    rx: $(".net-recv", el),
    tx: $(".net-sent", el),
    setBy: $(".set-by", el),
  };
  card.name.textContent = entry.host;
  card.name.title = entry.host;
  entry.card = card;
  grid.appendChild(el);
  if (visibility) visibility.observe(el);
  return card;
}

/** Take a forgotten host's card off the grid. */
export function removeCard(entry) {
  if (!entry.card) return;
  if (visibility) visibility.unobserve(entry.card.el);
  entry.card.el.remove();
  entry.card = null;
}

export function renderCard(entry, now) {
  const card = entry.card || createCard(entry);
  const d = entry.data;
  const status = statusOf(entry, now);
  entry.shownStatus = status;
  renderStatus(card.el, card.status, status);
  renderAge(entry, now);
  if (!d) return;

  setAttr(card.el, "data-level", d.level || "none");
  setAttr(card.el, "data-analyzer", d.legacy ? "legacy" : null);
  setText(card.cpuValue, fmtPct(d.cpu));
  setLevelBadge(card.cpuLevel, d.cpuLevel);
  setText(card.memValue, fmtPct(d.mem));
  setLevelBadge(card.memLevel, d.memLevel);
  // The graphics are the costly part: off-screen cards get them when scrolled into view.
  if (entry.visible) {
    entry.cardStale = false;
    card.cpuSpark.setAttribute("points", sparkPoints(entry.history, entry.history.cpu));
    card.memSpark.setAttribute("points", sparkPoints(entry.history, entry.history.mem));
    renderCoreBars(card.cores, card.coreBars, d.perCore, false);
  } else {
    entry.cardStale = true;
  }
  setText(card.load, d.load && d.load.length ? d.load.map((x) => (isNum(x) ? x.toFixed(2) : "–")).join(" ") : "–");
  setText(card.disk, d.fullest ? `${fmtPct(d.fullest.percent)} ${d.fullest.mount}` : "–");
  setAttr(card.disk, "title", d.disks.map((x) => `${x.mount}: ${fmtPct(x.percent)}`).join("\n") || null);
  setText(card.rx, fmtRate(d.rx));
  setText(card.tx, fmtRate(d.tx));
  renderSetBy(card.setBy, d);
  setAttr(card.el, "aria-label",
    `${entry.host}: level ${d.level || "unknown"}, CPU ${fmtPct(d.cpu)} ${d.cpuLevel || ""}, ` +
    `memory ${fmtPct(d.mem)} ${d.memLevel || ""}${d.legacy ? ", from a legacy analyzer" : ""}` +
    `${!d.legacy && d.setBy && d.setBy.length && d.level ? `, set by ${d.setBy.join(" and ")}` : ""}` +
    `${status === "online" ? "" : `, ${status}`}. Open details`);
}

/** Which analyzer(s) set the host's level: the worst level's, by name. */
function renderSetBy(el, d) {
  const names = d.legacy ? ["legacy analyzer"] : d.setBy || [];
  setHidden(el, !(d.level && names.length));
  setText(el, d.level && names.length ? `${d.level} set by ${names.join(", ")}` : "");
  setAttr(el, "title", d.level && names.length
    ? `The host's level, ${d.level}, was set by ${names.join(" and ")}` : null);
}

function renderStatus(cardEl, badge, status) {
  setAttr(cardEl, "data-status", status);
  setHidden(badge, status === "online");
  setText(badge, status === "online" ? "" : status.toUpperCase());
  setAttr(badge, "data-status", status);
}

export function renderAge(entry, now) {
  if (!entry.card || !entry.ev) return;
  const text = fmtAge(ageOf(entry, now));
  setText(entry.card.age, text);
  setAttr(entry.card.age, "title", isNum(entry.sampleTs) ? new Date(entry.sampleTs * 1000).toLocaleString() : "arrival time");
}

// ---- filtering, sorting, counts --------------------------------------------

/** The filter as typed: [lower-case host text, level or ""]. */
export function currentFilter() {
  return [filterInput.value.trim().toLowerCase(), levelSelect.value];
}

export function matches(entry, text, lvl) {
  if (text && !entry.key.includes(text)) return false;
  if (lvl && !(entry.data && entry.data.level === lvl)) return false;
  return true;
}

const byName = (a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0);
function comparator(mode) {
  if (mode === "cpu" || mode === "memory") {
    const field = mode === "cpu" ? "cpu" : "mem";
    return (a, b) => {
      const va = a.data && isNum(a.data[field]) ? a.data[field] : -1;
      const vb = b.data && isNum(b.data[field]) ? b.data[field] : -1;
      return vb - va || byName(a, b);
    };
  }
  return byName;
}

/** Indexes (into seq) of a longest increasing subsequence: those nodes need not move. */
function longestIncreasing(seq) {
  const tails = [];
  const prev = new Array(seq.length);
  for (let i = 0; i < seq.length; i++) {
    let lo = 0;
    let hi = tails.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (seq[tails[mid]] < seq[i]) lo = mid + 1; else hi = mid;
    }
    prev[i] = lo > 0 ? tails[lo - 1] : -1;
    tails[lo] = i;
  }
  const keep = new Set();
  for (let i = tails.length ? tails[tails.length - 1] : -1; i >= 0; i = prev[i]) keep.add(i);
  return keep;
}

export function applyOrderAndFilter() {
  const [text, lvl] = currentFilter();
  const entries = [...hosts.values()].filter((e) => e.card);
  entries.sort(comparator(sortSelect.value));
  for (const e of entries) setHidden(e.card.el, !matches(e, text, lvl));
  // Move as few nodes as possible: moving a node resets its layout and focus.
  const current = new Map();
  Array.prototype.forEach.call(grid.children, (el, i) => current.set(el, i));
  const wanted = entries.map((e) => e.card.el);
  const positions = wanted.map((el) => current.get(el));
  const keep = longestIncreasing(positions);
  const focused = document.activeElement;
  let moved = false;
  for (let i = wanted.length - 1; i >= 0; i--) {
    if (keep.has(i)) continue;
    const next = i + 1 < wanted.length ? wanted[i + 1] : null;
    if (wanted[i].nextSibling !== next) {
      grid.insertBefore(wanted[i], next);
      if (wanted[i] === focused) moved = true;
    }
  }
  if (moved && focused) focused.focus({ preventScroll: true });
  view.lastReorder = performance.now();
  view.orderDirty = false;
  // A re-order due from the throttle is done now: without this, a timer set for the
  // same moment fires just after and re-orders the cards a second time.
  if (view.reorderTimer) {
    clearTimeout(view.reorderTimer);
    view.reorderTimer = null;
  }
}

export function renderCounts(now) {
  const n = { HIGH: 0, MEDIUM: 0, LOW: 0 };
  let down = 0;
  let shown = 0;
  for (const e of hosts.values()) {
    if (e.data && e.data.level) n[e.data.level]++;
    if (statusOf(e, now) !== "online") down++;
    if (e.card && !e.card.el.hidden) shown++;
  }
  if (hosts.size === 0) setText(emptyNote, "Waiting for data…");
  else if (shown === 0) setText(emptyNote, "No host matches the filter.");
  setHidden(emptyNote, hosts.size > 0 && shown > 0);
  for (const lvl of LEVELS) {
    const btn = countsBox.querySelector(`.count[data-level="${lvl}"]`);
    setText($(".n", btn), String(n[lvl]));
    setAttr(btn, "aria-pressed", levelSelect.value === lvl ? "true" : "false");
    setAttr(btn, "aria-label", `${n[lvl]} hosts ${lvl}; show only these`);
  }
  setText($("#count-total"), String(hosts.size));
  const downBox = $("#count-down");
  setText($(".n", downBox), String(down));
  setHidden(downBox, down === 0);
}
