// Host cards: drawing one card for the grid (web/js/grid.js), and the
// grid's filter, order and counts.

import { renderCoreBars, sparkPoints } from "./charts.js";
import { ageOf, hosts, statusOf } from "./state.js";
import {
  $, LEVELS, fmtAge, fmtPct, fmtRate, isNum, setAttr, setHidden, setLevelBadge, setText,
} from "./util.js";

const template = $("#card-template");
const emptyNote = $("#empty");
export const filterInput = $("#filter");
export const levelSelect = $("#level-filter");
export const sortSelect = $("#sort");
export const countsBox = $("#counts");

/** A card not yet bound to a host: the grid binds it to one, and later maybe to another. */
export function createCard() {
  const el = template.content.firstElementChild.cloneNode(true);
  return {
    el,
    entry: null,
    slot: -1,            // where the grid placed it last (an index in the grid's order)
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
}

/** Show entry's host on card (until bound to another): everything drawn afresh. */
export function bindCard(card, entry, now) {
  if (card.entry && card.entry.card === card) card.entry.card = null;
  card.entry = entry;
  entry.card = card;
  card.el.__entry = entry;
  setAttr(card.el, "data-host", entry.host);
  setText(card.name, entry.host);
  setAttr(card.name, "title", entry.host);
  if (!entry.data) clearValues(card, entry);
  renderCard(entry, now);
}

/** Take card off its host: the host keeps its data, and gets a card again when scrolled to. */
export function unbindCard(card) {
  if (card.entry && card.entry.card === card) card.entry.card = null;
  card.entry = null;
  card.el.__entry = null;
}

/** A host without an analysis yet (only a status): no value of the card's previous host stays. */
function clearValues(card, entry) {
  setAttr(card.el, "data-level", "none");
  setAttr(card.el, "data-analyzer", null);
  for (const el of [card.cpuValue, card.memValue, card.load, card.disk, card.rx, card.tx]) setText(el, "–");
  setLevelBadge(card.cpuLevel, null);
  setLevelBadge(card.memLevel, null);
  setAttr(card.disk, "title", null);
  card.cpuSpark.setAttribute("points", "");
  card.memSpark.setAttribute("points", "");
  renderCoreBars(card.cores, card.coreBars, [], false);
  setHidden(card.setBy, true);
  setAttr(card.el, "aria-label", `${entry.host}: no analysis yet. Open details`);
}

/** Draw entry's latest data on its card (a host without a card has nothing to draw). */
export function renderCard(entry, now) {
  const card = entry.card;
  if (!card) return;
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
  card.cpuSpark.setAttribute("points", sparkPoints(entry.history, entry.history.cpu));
  card.memSpark.setAttribute("points", sparkPoints(entry.history, entry.history.mem));
  renderCoreBars(card.cores, card.coreBars, d.perCore, false);
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

/** How the sort control orders entries: by name, or by CPU or memory, highest first. */
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

/** The entries the grid shows, filtered and sorted as the controls say. */
export function orderedEntries() {
  const [text, lvl] = currentFilter();
  const entries = [];
  for (const e of hosts.values()) if (matches(e, text, lvl)) entries.push(e);
  return entries.sort(comparator(sortSelect.value));
}

/** The counts in the top bar, and the note shown instead of an empty grid; shown: hosts in the grid. */
export function renderCounts(now, shown) {
  const n = { HIGH: 0, MEDIUM: 0, LOW: 0 };
  let down = 0;
  for (const e of hosts.values()) {
    if (e.data && e.data.level) n[e.data.level]++;
    if (statusOf(e, now) !== "online") down++;
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
