// The grid of host cards, virtualised: it is as tall as the whole fleet
// (filtered), but only the cards in or near the viewport exist; scrolling
// binds the few cards to other hosts. The order (filter and sort) is
// computed when main.js says so, at most once a second for a big fleet,
// so positions hold still between two re-orders while the values in the
// cards change live.

import { renderCardAlerts } from "./alerts.js";
import { bindCard, createCard, orderedEntries, unbindCard } from "./cards.js";
import { hosts } from "./state.js";
import { $, nowSec } from "./util.js";

export const grid = $("#hosts");

const OVERSCAN_PX = 320;             // cards are kept this far above and below the viewport

let order = [];                      // the entries in grid order, as of the last re-order
const pool = [];                     // cards bound to no host, ready for the next one
const shown = new Set();             // the cards bound to a host and in the grid
const layout = { width: -1, cols: 1, colWidth: 0, rowHeight: 1, gap: 0 };
let layoutDirty = true;
let onChange = () => {};

/** The number of hosts in the grid (those the filter lets through). */
export function gridSize() {
  return order.length;
}

/**
 * Filter and sort the fleet now; the cards move at the next
 * L{renderGrid}. A host that arrived since gets its place here.
 */
export function applyOrder() {
  for (const e of order) e.slot = -1;
  order = orderedEntries();
  order.forEach((e, i) => { e.slot = i; });
}

/** A host the server forgot: its card goes now, its place at the next re-order. */
export function removeFromGrid(entry) {
  entry.slot = -1;
  if (entry.card) release(entry.card);
}

function release(card) {
  if (card.el === document.activeElement) card.el.blur();
  unbindCard(card);
  card.el.remove();
  card.slot = -1;
  shown.delete(card);
  pool.push(card);
}

function measure() {
  const css = getComputedStyle(grid);
  const px = (name, fallback) => parseFloat(css.getPropertyValue(name)) || fallback;
  const width = grid.clientWidth;
  const min = px("--card-min-width", 280);
  const gap = px("--card-gap", 10);
  layout.cols = Math.max(1, Math.floor((width + gap) / (min + gap)));
  layout.colWidth = (width - gap * (layout.cols - 1)) / layout.cols;
  layout.rowHeight = px("--card-height", 196) + gap;
  layout.gap = gap;
  layout.width = width;
  layoutDirty = false;
}

function applyLayout() {
  grid.style.setProperty("--card-width", `${layout.colWidth}px`);
  for (const card of shown) card.slot = -1;          // every card is placed again
}

/** The range of order indexes [first, last) in or near the viewport. */
function windowRange() {
  const top = grid.getBoundingClientRect().top;
  const from = Math.max(0, -top - OVERSCAN_PX);
  const to = Math.max(0, -top + window.innerHeight + OVERSCAN_PX);
  const first = Math.floor(from / layout.rowHeight) * layout.cols;
  const last = (Math.floor(to / layout.rowHeight) + 1) * layout.cols;
  return [Math.min(first, order.length), Math.min(last, order.length)];
}

/**
 * Make the DOM match the order and the scroll position: cards for the
 * hosts in or near the view (and the focused one), each at its place; the
 * others go back to the pool. Call it after a re-order, a scroll or a
 * resize; cards already in place are not touched.
 */
export function renderGrid(now) {
  // Every read before the first write: one layout per call, not one per card.
  const remeasure = layoutDirty || grid.clientWidth !== layout.width;
  if (remeasure) measure();
  const [first, last] = windowRange();
  if (remeasure) applyLayout();
  const rows = Math.ceil(order.length / layout.cols);
  grid.style.height = `${Math.max(0, rows * layout.rowHeight - layout.gap)}px`;
  const focused = document.activeElement && document.activeElement.__entry;
  for (const card of [...shown]) {
    const e = card.entry;
    if (e.slot >= first && e.slot < last) continue;
    if (e === focused && e.slot >= 0) continue;        // keyboard focus stays on its host
    release(card);
  }
  const wanted = [];
  for (let i = first; i < last; i++) wanted.push(order[i]);
  if (focused && focused.slot >= 0 && (focused.slot < first || focused.slot >= last)) wanted.push(focused);
  wanted.sort((a, b) => a.slot - b.slot);
  for (const e of wanted) {
    if (!hosts.has(e.host)) continue;                  // forgotten since the last re-order
    let card = e.card;
    if (!card) {
      card = pool.pop() || createCard();
      bindCard(card, e, now);
      renderCardAlerts(e, now);
      shown.add(card);
    }
    if (card.slot !== e.slot) {
      card.slot = e.slot;
      const x = (e.slot % layout.cols) * (layout.colWidth + layout.gap);
      const y = Math.floor(e.slot / layout.cols) * layout.rowHeight;
      card.el.style.transform = `translate(${x}px, ${y}px)`;
    }
  }
  placeInDocumentOrder(wanted.filter((e) => e.card).map((e) => e.card.el));
}

/**
 * Keep the cards' DOM order the grid's order, so Tab goes from card to
 * card as they read. Only the nodes out of place move (a scroll adds a
 * row at one end); moving a node drops its focus, which is given back.
 */
function placeInDocumentOrder(wanted) {
  const focused = document.activeElement;
  let refocus = false;
  let next = null;
  for (let i = wanted.length - 1; i >= 0; i--) {
    const el = wanted[i];
    if (el.parentNode !== grid || el.nextSibling !== next) {
      grid.insertBefore(el, next);
      if (el === focused) refocus = true;
    }
    next = el;
  }
  if (refocus) focused.focus({ preventScroll: true });
}

/**
 * Focus host's card, scrolling it into view first if it has none (the
 * detail view gives the focus back this way when it closes).
 */
export function focusHost(host) {
  const entry = hosts.get(host);
  if (!entry || entry.slot < 0) return;
  if (!entry.card) {
    const row = Math.floor(entry.slot / layout.cols);
    const top = grid.getBoundingClientRect().top + window.scrollY + row * layout.rowHeight;
    window.scrollTo(0, Math.max(0, top - window.innerHeight / 2));
    renderGrid(nowSec());
  }
  if (entry.card) entry.card.el.focus();
}

/** Call changed() when the grid needs drawing again: a scroll or a resize. */
export function installGrid(changed) {
  onChange = changed;
  window.addEventListener("scroll", () => onChange(), { passive: true });
  window.addEventListener("resize", () => { layoutDirty = true; onChange(); });
  if ("ResizeObserver" in window) {
    new ResizeObserver(() => { if (grid.clientWidth !== layout.width) onChange(); }).observe(grid);
  }
}
