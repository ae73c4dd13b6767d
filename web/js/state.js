// The fleet as the page knows it: one entry per host, its latest analysis,
// its history and its status; and which hosts wait to be drawn.

import { readAnalysis, readHistoryPoint } from "./analysis.js";
import { History } from "./history.js";
import { isNum, isObj } from "./util.js";

const HISTORY_POINTS = 900;          // 15 min at one sample per second
const MAX_HISTORY_POINTS = 3600;     // a host's full history from the server may hold more

export const hosts = new Map();      // host -> entry
export const pending = new Map();    // host -> latest event not yet drawn

/** What the grid's order needs: set by the model, the frame loop and the cards. */
export const view = {
  orderDirty: true,     // the grid must be re-ordered now (a snapshot)
  lastReorder: 0,
  reorderTimer: null,   // a throttled re-order waiting for its time
};

let redraw = () => {};
let forgotten = () => {};

/** Call fn whenever a host waits to be drawn (the frame loop schedules a frame). */
export function onPending(fn) {
  redraw = fn;
}

/** Call fn(entry) once a host the server forgot has left the state (its card and views go). */
export function onForget(fn) {
  forgotten = fn;
}

/** Draw this host again at the next frame. */
export function markPending(entry) {
  pending.set(entry.host, entry.ev);
  redraw();
}

function getEntry(host) {
  let entry = hosts.get(host);
  if (!entry) {
    entry = {
      host,
      key: host.toLowerCase(),
      ev: null,
      data: null,
      arrival: 0,
      sampleTs: null,
      serverStatus: null,
      serverStatusAt: 0,
      shownStatus: "online",
      history: new History(HISTORY_POINTS),
      fullHistory: false,       // holds the server's full points (asked for by the detail view)
      card: null,              // its card, while it has one (web/js/grid.js)
      slot: -1,                // its index in the grid's order, -1 until placed
    };
    hosts.set(host, entry);   // placed in the grid at its next re-order (main.js)
  }
  return entry;
}

/**
 * Whether analysis a is a late copy of an older sample than b (a
 * redelivery, or competing analyzers crossing): older or the same by both
 * seq and ts, as the server judges it. Older by ts only is new: its
 * agent's clock went back.
 */
function isLateCopy(a, b) {
  return isNum(a.seq) && isNum(a.ts) && isNum(b.seq) && isNum(b.ts) && a.seq <= b.seq && a.ts <= b.ts;
}

/**
 * An analysis into its host's history. One from a snapshot that is not
 * newer than the last point is already there and left out; a live one
 * whose ts is not after the last point (its agent's clock went back)
 * follows it at the pace analyses arrive, as in the server's history.
 */
function appendPoint(entry, ev, data, arrival, live) {
  let t = isNum(ev.ts) ? ev.ts : arrival;
  const last = entry.history.lastT();
  if (live && last !== null && t <= last) {
    t = last + Math.max(isNum(entry.arrival) ? arrival - entry.arrival : 0, 0.001);
  }
  return entry.history.push({
    t,
    cpu: data.cpu, mem: data.mem, rx: data.rx, tx: data.tx,
    disk: data.fullest ? data.fullest.percent : null,
    cores: data.perCore,
  });
}

/**
 * Replace a host's history with the server's points (oldest first), then
 * keep the points already held that are newer than the last of them: a
 * snapshot or a history reply is never added twice.
 */
function replaceHistory(entry, points, full) {
  const samples = points.map(readHistoryPoint).filter((s) => s && isNum(s.t));
  const old = entry.history;
  const h = new History(Math.min(MAX_HISTORY_POINTS, Math.max(HISTORY_POINTS, samples.length)));
  for (const s of samples.slice(-h.capacity)) h.push(s);
  const last = h.lastT();
  for (let i = last === null ? 0 : old.firstAtOrAfter(last); i < old.length; i++) h.push(old.sample(i));
  entry.history = h;
  entry.fullHistory = full;
}

function ingestAnalysis(ev, arrival, live) {
  if (typeof ev.host !== "string" || ev.host === "") return;
  const entry = getEntry(ev.host);
  // A duplicate or a late copy of an older sample than the one shown is left out.
  if (entry.ev && isLateCopy(ev, entry.ev)) return;
  const data = readAnalysis(ev);
  appendPoint(entry, ev, data, arrival, live);
  entry.ev = ev;
  entry.data = data;
  entry.arrival = arrival;
  entry.sampleTs = isNum(ev.ts) ? ev.ts : null;
  markPending(entry);
}

function ingestStatus(ev, arrival) {
  if (typeof ev.host !== "string" || ev.host === "" || typeof ev.status !== "string") return;
  if (ev.status.toLowerCase() === "forgotten") { forgetHost(ev.host); return; }
  const entry = getEntry(ev.host);
  entry.serverStatus = ev.status.toLowerCase();
  entry.serverStatusAt = arrival;
  markPending(entry);
}

/** A host the server forgot (silent for its --forget-after): its entry and data go. */
function forgetHost(host) {
  const entry = hosts.get(host);
  if (!entry) return;
  hosts.delete(host);
  pending.delete(host);
  forgotten(entry);
}

/**
 * One message from the server (an object) into the state, arrived at
 * arrival (seconds): a snapshot, a host's history, an analysis or a status.
 */
export function applyMessage(msg, arrival) {
  if (msg.kind === "snapshot") {
    // The last 15 minutes at once: the history first, so the latest analyses are not added twice.
    if (isObj(msg.history)) {
      for (const [host, points] of Object.entries(msg.history)) {
        if (host !== "" && Array.isArray(points)) replaceHistory(getEntry(host), points, false);
      }
    }
    if (Array.isArray(msg.events)) {
      for (const ev of msg.events) {
        if (!isObj(ev)) continue;
        if (ev.kind === "status") ingestStatus(ev, arrival); else ingestAnalysis(ev, arrival, false);
      }
    }
    // After the analyses, so a host's stale or offline status wins over their arrival.
    if (Array.isArray(msg.statuses)) {
      for (const ev of msg.statuses) if (isObj(ev)) ingestStatus(ev, arrival);
    }
    // Everything is redrawn from the fresh snapshot, including hosts it did not mention.
    for (const entry of hosts.values()) pending.set(entry.host, entry.ev);
    view.orderDirty = true;
    view.lastReorder = 0;
    redraw();
  } else if (msg.kind === "history") {
    const entry = typeof msg.host === "string" ? hosts.get(msg.host) : null;
    if (!entry || !Array.isArray(msg.points)) return;
    replaceHistory(entry, msg.points, true);
    markPending(entry);
  } else if (msg.kind === "analysis") {
    ingestAnalysis(msg, arrival, true);
  } else if (msg.kind === "status") {
    ingestStatus(msg, arrival);
  }
  // unknown kinds, and errors (nothing the page sends should cause one), are ignored
}

/** online / stale / offline: the server's word if it is newer than the data, else our own guess. */
export function statusOf(entry, now) {
  if (entry.serverStatus && entry.serverStatusAt >= entry.arrival) return entry.serverStatus;
  if (!entry.ev) return "offline";
  const interval = isNum(entry.ev.interval) && entry.ev.interval > 0 ? entry.ev.interval : 1;
  return now - entry.arrival > Math.max(5 * interval, 15) ? "stale" : "online";
}

/** Seconds since the host's latest sample was taken (or arrived, without a ts). */
export function ageOf(entry, now) {
  return (isNum(entry.sampleTs) ? now - entry.sampleTs : now - entry.arrival);
}
