// Small helpers shared by every module: checks, formatting, cheap DOM writes.

const LEVEL_RANK = { LOW: 1, MEDIUM: 2, HIGH: 3 };
export const LEVELS = ["HIGH", "MEDIUM", "LOW"];
const SVG_NS = "http://www.w3.org/2000/svg";

export const $ = (sel, root = document) => root.querySelector(sel);
export const isNum = (x) => typeof x === "number" && Number.isFinite(x);
export const isObj = (x) => x !== null && typeof x === "object" && !Array.isArray(x);
export const level = (x) => (typeof x === "string" && LEVEL_RANK[x.toUpperCase()] ? x.toUpperCase() : null);
export const nowSec = () => Date.now() / 1000;
/** The worse of two levels (either may be null). */
export const worseLevel = (a, b) => (!a ? b : !b ? a : LEVEL_RANK[b] > LEVEL_RANK[a] ? b : a);

export function fmtPct(x) {
  return isNum(x) ? `${x.toFixed(1)} %` : "–";
}

export function fmtBytes(x) {
  if (!isNum(x)) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let i = 0;
  let v = Math.abs(x);
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  const digits = v >= 100 || i === 0 ? 0 : v >= 10 ? 1 : 2;
  return `${x < 0 ? "-" : ""}${v.toFixed(digits)} ${units[i]}`;
}

export const fmtRate = (x) => (isNum(x) ? `${fmtBytes(x)}/s` : "–");

export function fmtAge(seconds) {
  if (!isNum(seconds)) return "–";
  const s = Math.max(0, Math.floor(seconds));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

export function fmtDuration(s) {
  if (s < 90) return `${Math.round(s)} s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

// Writes only when the value changed: DOM writes are what costs at 500 cards.
export function setText(el, text) {
  if (el.__text !== text) { el.__text = text; el.textContent = text; }
}
export function setAttr(el, name, value) {
  const key = `__a_${name}`;
  if (el[key] !== value) {
    el[key] = value;
    if (value === null) el.removeAttribute(name); else el.setAttribute(name, value);
  }
}
export function setHidden(el, hidden) {
  if (el.hidden !== hidden) el.hidden = hidden;
}
export function setLevelBadge(el, lvl) {
  setText(el, lvl || "–");
  setAttr(el, "data-level", lvl || "none");
}
export function svgEl(name, attrs) {
  const el = document.createElementNS(SVG_NS, name);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  return el;
}
