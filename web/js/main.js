// resmon dashboard: one WebSocket, no polling, DOM updated per animation frame.
// Wires the modules: the connection feeds the state, a frame draws what changed.

import {
  countsBox, filterInput, levelSelect, renderAge, renderCard, renderCounts, sortSelect,
} from "./cards.js";
import { applyAlertMessage, renderAlerts, renderCardAlerts } from "./alerts.js";
import { createConnection } from "./connection.js";
import { closeDetail, installDetail, renderDetail, renderDetailAge, shownHost } from "./detail.js";
import {
  applyMessage, hosts, markPending, onForget, onPending, pending, statusOf, view,
} from "./state.js";
import { applyOrder, focusHost, gridSize, installGrid, removeFromGrid, renderGrid } from "./grid.js";
import { $, isObj, nowSec } from "./util.js";
import { applyNotificationMessage, installNotifications } from "./notifications.js";
import { installSession } from "./session.js";
import { installWebhooks } from "./webhooks.js";

const OVERVIEW_STEP = 10;            // seconds between two points of the snapshot's overview history
const REORDER_EVERY_MS = 1000;       // the grid re-orders at most this often in a big fleet,
const REORDER_SMALL_MS = 250;        // and this often with few hosts
const SMALL_FLEET = 100;

// ---- frame loop ------------------------------------------------------------

let frameRequested = false;

function scheduleFrame() {
  if (!frameRequested) {
    frameRequested = true;
    requestAnimationFrame(frame);
  }
}

function frame() {
  frameRequested = false;
  const now = nowSec();
  const detailHost = shownHost();
  // New values may move hosts (a value sort, a level filter, a new host): the grid re-orders on
  // a throttle, so positions hold still between two re-orders while the values change.
  if (pending.size && orderMayChange()) reorderSoon();
  const reordered = view.orderDirty;
  if (reordered) reorderNow();
  renderGrid(now);
  // Only the hosts with a card (in or near the view) are drawn; the others when scrolled to.
  for (const host of pending.keys()) {
    const entry = hosts.get(host);
    if (!entry) continue;
    renderCard(entry, now);
    renderCardAlerts(entry, now);
    if (host === detailHost) renderDetail();
  }
  pending.clear();
  renderCounts(now, gridSize());
  // The throttle counts from when a re-order is drawn, not from when its frame began: a slow
  // frame (a loaded machine) would otherwise cut short the second the cards then hold still.
  if (reordered) view.lastReorder = performance.now();
}

/** Whether what waits to be drawn may move hosts: a value sort, a level filter or a new host. */
function orderMayChange() {
  if (sortSelect.value !== "name" || levelSelect.value) return true;
  for (const host of pending.keys()) {
    const entry = hosts.get(host);
    if (entry && entry.slot < 0) return true;
  }
  return false;
}

function reorderSoon() {
  const every = hosts.size > SMALL_FLEET ? REORDER_EVERY_MS : REORDER_SMALL_MS;
  const wait = every - (performance.now() - view.lastReorder);
  if (wait <= 0) view.orderDirty = true;
  else if (!view.reorderTimer) {
    view.reorderTimer = setTimeout(() => {
      view.reorderTimer = null;
      view.orderDirty = true;
      scheduleFrame();
    }, wait);
  }
}

function reorderNow() {
  applyOrder();
  view.lastReorder = performance.now();
  view.orderDirty = false;
  // A re-order due from the throttle is done now: without this, a timer set for the
  // same moment fires just after and re-orders the cards a second time.
  if (view.reorderTimer) {
    clearTimeout(view.reorderTimer);
    view.reorderTimer = null;
  }
}

onPending(scheduleFrame);
installGrid(scheduleFrame);
onForget((entry) => {
  if (entry.host === shownHost()) closeDetail();
  removeFromGrid(entry);
  reorderSoon();
  scheduleFrame();
});

// ---- controls --------------------------------------------------------------

/** The user changed the filter or the sort: the grid follows at once. */
function refilterNow() {
  reorderNow();
  renderGrid(nowSec());
  renderCounts(nowSec(), gridSize());
}

filterInput.addEventListener("input", refilterNow);
levelSelect.addEventListener("change", refilterNow);
sortSelect.addEventListener("change", refilterNow);
$(".controls").addEventListener("submit", (e) => e.preventDefault());
countsBox.addEventListener("click", (e) => {
  const btn = e.target.closest(".count[data-level]");
  if (!btn) return;
  levelSelect.value = levelSelect.value === btn.dataset.level ? "" : btn.dataset.level;
  refilterNow();
});

// ---- messages from the server ----------------------------------------------

function wsUrl() {
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  // Every host's CPU and memory for the sparklines: [ts, cpu, mem], one per 10 s.
  // And the rules' alerts and events, for the alert panel and the cards.
  // batch=1: the events the server has at once come in one message (fewer to parse at fleet size).
  return `${proto}//${location.host}/ws?history=overview&step=${OVERVIEW_STEP}` +
    "&events=analysis,status,alert,event&batch=1";
}

/** Ask for one host's full points (the detail view's charts); the reply comes over the socket. */
function requestHistory(host) {
  connection.send({ kind: "history", host, step: 0 });
  // Not connected: the snapshot that follows the reconnection asks again.
}

/** Take one message from the server into the state; returns its kind. */
function onMessage(raw) {
  let msg;
  try { msg = JSON.parse(raw); } catch (err) { return null; }
  if (!isObj(msg)) return null;
  if (msg.kind === "batch") {
    // Several events, each as it would have come alone, in order; one the
    // page cannot take costs only itself, as it would have alone.
    if (!Array.isArray(msg.events)) return null;
    for (const ev of msg.events) {
      if (!isObj(ev)) continue;
      try { onServerMessage(ev); } catch (err) { console.error("resmon: an event of a batch", err); }
    }
    return msg.kind;
  }
  return onServerMessage(msg);
}

/** One message from the server (an object) into the state; returns its kind. */
function onServerMessage(msg) {
  if (applyNotificationMessage(msg)) return msg.kind;
  applyMessage(msg, nowSec());
  const alerted = applyAlertMessage(msg);
  if (alerted !== null) {
    for (const host of alerted) {
      const entry = hosts.get(host);
      if (entry) markPending(entry);
    }
    renderAlerts(nowSec());
  }
  if (msg.kind === "snapshot") {
    const detailHost = shownHost();
    if (detailHost) requestHistory(detailHost);   // the overview replaced its full points
  }
  return msg.kind;
}

const connection = createConnection(wsUrl, onMessage);
installDetail(requestHistory, focusHost);
installWebhooks();
installNotifications();
installSession();

// Once a second: ages, local staleness, reconnect countdown. Purely local, no requests.
setInterval(() => {
  const now = nowSec();
  for (const entry of hosts.values()) {
    if (!entry.card) continue;                 // a host gets a card drawn afresh when scrolled to
    renderAge(entry, now);
    const status = statusOf(entry, now);
    if (status !== entry.shownStatus) markPending(entry);
  }
  if (shownHost()) renderDetailAge(now);
  connection.render();
  renderCounts(now, gridSize());
  renderAlerts(now);
}, 1000);

renderCounts(nowSec(), 0);
connection.connect();
