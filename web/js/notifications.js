// Notifications to the logged-in user (docs/protocol.md, "Notifications"):
// the "notifications" message at connect lists the last ones kept, each
// "notification" message after that shows as a toast and joins the list.
// Text is set as text, never as HTML.

import { $, fmtAge, isNum, isObj, nowSec, setHidden, setText } from "./util.js";

const MAX_KEPT = 100;                // as the server keeps
const TOAST_MS = 8000;               // a toast of a critical one stays until closed
const MAX_TOASTS = 5;

/** id -> notification, oldest first. */
export const notes = new Map();

const button = $("#notify-open");
const panel = $("#notify-panel");
const list = $("#notify-list");
const toasts = $("#toasts");

function valid(n) {
  return isObj(n) && typeof n.id === "string" && typeof n.title === "string";
}

function keep(n) {
  if (!valid(n) || notes.has(n.id)) return false;
  notes.set(n.id, n);
  if (notes.size > MAX_KEPT) notes.delete(notes.keys().next().value);
  return true;
}

function item(n, tag) {
  const el = document.createElement(tag);
  el.className = "notification";
  el.dataset.level = typeof n.level === "string" ? n.level : "info";
  el.dataset.id = n.id;
  const title = document.createElement("strong");
  title.className = "notification-title";
  title.textContent = n.title;
  el.append(title);
  if (typeof n.text === "string" && n.text) {
    const text = document.createElement("span");
    text.className = "notification-text";
    text.textContent = n.text;
    el.append(" ", text);
  }
  if (isNum(n.ts)) {
    const age = document.createElement("span");
    age.className = "notification-age age-text";
    age.textContent = fmtAge(nowSec() - n.ts);
    el.append(" ", age);
  }
  return el;
}

function toast(n) {
  const el = item(n, "div");
  el.classList.add("toast");
  el.setAttribute("role", n.level === "critical" ? "alert" : "status");
  const close = document.createElement("button");
  close.type = "button";
  close.className = "close";
  close.setAttribute("aria-label", "Dismiss");
  close.textContent = "✕";
  close.addEventListener("click", () => el.remove());
  el.append(close);
  toasts.append(el);
  while (toasts.children.length > MAX_TOASTS) toasts.firstElementChild.remove();
  if (n.level !== "critical") setTimeout(() => el.remove(), TOAST_MS);
}

function renderList() {
  const items = [...notes.values()].reverse().map((n) => item(n, "li"));
  list.replaceChildren(...items);
  setText($(".n", button), String(notes.size));
  setHidden(button, notes.size === 0);
}

/** Take one message; true if it was a notification or the list of them. */
export function applyNotificationMessage(msg) {
  if (msg.kind === "notifications" && Array.isArray(msg.notifications)) {
    for (const n of msg.notifications) keep(n);
    renderList();
    return true;
  }
  if (msg.kind === "notification") {
    if (keep(msg)) {
      toast(msg);
      renderList();
    }
    return true;
  }
  return false;
}

export function installNotifications() {
  button.addEventListener("click", () => {
    const open = panel.hidden;
    setHidden(panel, !open);
    button.setAttribute("aria-expanded", String(open));
  });
}
