// resmon dashboard: one WebSocket, no polling, DOM updated per animation frame.
// Wires the modules: the connection feeds the state, a frame draws what changed.

import {
  applyOrderAndFilter, countsBox, currentFilter, filterInput, levelSelect, matches, removeCard,
  renderAge, renderCard, renderCounts, sortSelect,
} from "./cards.js";
import { applyAlertMessage, renderAlerts, renderCardAlerts } from "./alerts.js";
import { createConnection } from "./connection.js";
import { closeDetail, installDetail, renderDetail, renderDetailAge, shownHost } from "./detail.js";
import {
  applyMessage, hosts, markPending, onForget, onPending, pending, statusOf, view,
} from "./state.js";
import { $, isObj, nowSec, setHidden } from "./util.js";
import { applyNotificationMessage, installNotifications } from "./notifications.js";
import { installSession } from "./session.js";
import { installWebhooks } from "./webhooks.js";

const OVERVIEW_STEP = 10;            // seconds between two points of the snapshot's overview history
const REORDER_EVERY_MS = 1000;       // value sorts re-order at most this often in a big fleet,
const REORDER_SMALL_MS = 250;        // and this often with few hosts, where it is cheap
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
  const valueSort = sortSelect.value !== "name";
  const [text, lvl] = currentFilter();
  const detailHost = shownHost();
  let valuesChanged = false;
  for (const host of pending.keys()) {
    const entry = hosts.get(host);
    if (!entry) continue;
    if (!entry.card) view.orderDirty = true;          // a new host: place it at once
    renderCard(entry, now);
    renderCardAlerts(entry, now);
    setHidden(entry.card.el, !matches(entry, text, lvl));
    valuesChanged = true;
    if (host === detailHost) renderDetail();
  }
  pending.clear();
  if (valueSort && valuesChanged) {
    // Value sorts re-order on a throttle so cards do not jitter every frame.
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
  if (view.orderDirty) applyOrderAndFilter();
  renderCounts(now);
}

onPending(scheduleFrame);
onForget((entry) => {
  if (entry.host === shownHost()) closeDetail();
  removeCard(entry);
  renderCounts(nowSec());
});

// ---- controls --------------------------------------------------------------

function refilterNow() {
  view.orderDirty = true;
  view.lastReorder = 0;
  applyOrderAndFilter();
  renderCounts(nowSec());
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
  return `${proto}//${location.host}/ws?history=overview&step=${OVERVIEW_STEP}` +
    "&events=analysis,status,alert,event";
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
installDetail(requestHistory);
installWebhooks();
installNotifications();
installSession();

// Once a second: ages, local staleness, reconnect countdown. Purely local, no requests.
setInterval(() => {
  const now = nowSec();
  for (const entry of hosts.values()) {
    if (!entry.card) continue;
    renderAge(entry, now);
    const status = statusOf(entry, now);
    if (status !== entry.shownStatus) markPending(entry);
  }
  if (shownHost()) renderDetailAge(now);
  connection.render();
  renderCounts(now);
  renderAlerts(now);
}, 1000);

renderCounts(nowSec());
connection.connect();
