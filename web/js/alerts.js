// Alerts and events from the rules: the alerts firing now (a panel, a count
// in the top bar, and on each host's card) and the recent events (bounded).
// Fed by the WebSocket: the snapshot's "alerts" and "recent", then every
// "alert" and "event" message.

import { $, fmtAge, isNum, isObj, level, setHidden, setText } from "./util.js";

const MAX_RECENT = 50;               // recent events kept and shown
const MAX_FIRING = 1000;             // firing alerts kept (the oldest go beyond)

/** key -> alert event, in the order they fired. */
export const firing = new Map();
/** The last events and alerts received, oldest first. */
export const recent = [];

const panel = $("#alerts-panel");
const list = $("#alerts-list");
const recentList = $("#recent-events");
const countBox = $("#alert-count");

function alertKey(ev) {
  const p = ev.payload;
  return `${ev.source}\u0000${p.host}\u0000${p.check}`;
}

function isAlert(ev) {
  return isObj(ev) && ev.kind === "alert" && isObj(ev.payload) && typeof ev.payload.host === "string";
}

function take(ev) {
  if (!isAlert(ev)) return null;
  const key = alertKey(ev);
  firing.delete(key);
  if (ev.payload.state === "firing") {
    firing.set(key, ev);
    if (firing.size > MAX_FIRING) firing.delete(firing.keys().next().value);
  }
  return ev.payload.host;
}

function remember(ev) {
  if (!isObj(ev) || typeof ev.source !== "string") return;
  recent.push(ev);
  if (recent.length > MAX_RECENT) recent.splice(0, recent.length - MAX_RECENT);
}

/**
 * Take one message. Returns the host names whose alerts changed (their
 * cards are redrawn), or null if the message is not about alerts or events.
 */
export function applyAlertMessage(msg) {
  if (msg.kind === "snapshot") {
    if (!Array.isArray(msg.alerts) && !Array.isArray(msg.recent)) return null;
    const changed = new Set([...firing.values()].map((ev) => ev.payload.host));
    firing.clear();
    for (const ev of msg.alerts || []) {
      const host = take(ev);
      if (host !== null) changed.add(host);
    }
    recent.length = 0;
    for (const ev of msg.recent || []) remember(ev);
    return [...changed];
  }
  if (msg.kind === "alert") {
    remember(msg);
    const host = take(msg);
    return host === null ? [] : [host];
  }
  if (msg.kind === "event") {
    remember(msg);
    return [];
  }
  return null;
}

/** The alerts firing now for one host name. */
export function alertsOf(host) {
  return [...firing.values()].filter((ev) => ev.payload.host === host);
}

function sinceText(ev, now) {
  return isNum(ev.payload.since) ? `since ${fmtAge(now - ev.payload.since).replace(" ago", "")}` : "";
}

function alertItem(ev, now, withHost) {
  const li = document.createElement("li");
  li.className = "alert-item";
  li.dataset.host = ev.payload.host;
  li.dataset.check = String(ev.payload.check);
  const badge = document.createElement("span");
  badge.className = "level-badge";
  const lvl = level(ev.payload.level);
  badge.dataset.level = lvl || "none";
  badge.textContent = lvl || "–";
  li.append(badge);
  const text = document.createElement("span");
  text.className = "alert-text";
  text.textContent = `${withHost ? `${ev.payload.host} ` : ""}${ev.payload.check}`;
  li.append(text);
  const since = document.createElement("span");
  since.className = "alert-since age-text";
  since.textContent = sinceText(ev, now);
  li.append(since);
  return li;
}

function summary(ev) {
  if (ev.kind === "alert" && isObj(ev.payload)) {
    return `${ev.payload.host} ${ev.payload.check} ${ev.payload.state}`;
  }
  let text = ev.encoding === "json" ? JSON.stringify(ev.payload) : String(ev.payload);
  if (ev.encoding === "base64") text = `(${ev.content_type}, binary)`;
  return text.length > 80 ? `${text.slice(0, 79)}…` : text;
}

/** Draw the panel, the count and the recent events. */
export function renderAlerts(now) {
  if (!panel) return;
  setText($(".n", countBox), String(firing.size));
  setHidden(countBox, firing.size === 0);
  countBox.dataset.count = String(firing.size);
  const items = [...firing.values()].reverse().map((ev) => alertItem(ev, now, true));
  list.replaceChildren(...items);
  setHidden($("#alerts-none"), firing.size > 0);
  recentList.replaceChildren(...recent.slice().reverse().slice(0, 20).map((ev) => {
    const li = document.createElement("li");
    li.className = "recent-item";
    li.dataset.kind = ev.kind;
    li.textContent = `${ev.source}.${ev.kind}: ${summary(ev)}`;
    return li;
  }));
}

/** Draw one host's firing alerts on its card. */
export function renderCardAlerts(entry, now) {
  if (!entry.card) return;
  const box = $(".card-alerts", entry.card.el);
  if (!box) return;
  const mine = alertsOf(entry.host);
  box.replaceChildren(...mine.map((ev) => alertItem(ev, now, false)));
  setHidden(box, mine.length === 0);
}
