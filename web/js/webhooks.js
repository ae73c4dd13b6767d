// The webhooks panel: lists the registered hooks with their state and last
// delivery, registers and unregisters them through /api/webhooks. It asks
// the server only while open and when told to (no polling).

import { $, fmtAge, nowSec, setHidden } from "./util.js";

const panel = $("#webhooks");
const rows = $("#webhooks-rows");
const form = $("#webhooks-form");
const message = $("#webhooks-message");
const empty = $("#webhooks-empty");

function say(text, kind) {
  message.textContent = text;
  message.dataset.kind = kind || "info";
  setHidden(message, !text);
}

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function lastDelivery(hook) {
  if (hook.last_attempt == null) return "none yet";
  return `${hook.last_result} ${fmtAge(nowSec() - hook.last_attempt)}`;
}

function render(hooks) {
  rows.replaceChildren();
  for (const hook of hooks) {
    const tr = document.createElement("tr");
    tr.dataset.id = hook.id;
    tr.append(cell(hook.key, "webhook-key"), cell(hook.url, "webhook-url"));
    const state = cell(hook.state, "webhook-state");
    state.dataset.state = hook.state;
    tr.append(state, cell(lastDelivery(hook), "webhook-last"));
    const actions = document.createElement("td");
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "webhook-delete";
    remove.textContent = "Unregister";
    remove.setAttribute("aria-label", `Unregister the webhook of ${hook.key} to ${hook.url}`);
    remove.addEventListener("click", () => unregister(hook.id));
    actions.append(remove);
    tr.append(actions);
    rows.append(tr);
  }
  setHidden(empty, hooks.length > 0);
}

async function request(method, path, body) {
  const options = { method, headers: {} };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(path, options);
  let data = null;
  try { data = await response.json(); } catch (err) { data = null; }
  return { ok: response.ok, status: response.status, data };
}

// Answers to overlapping refreshes can come back out of order (a click on
// Refresh, then an unregister's own refresh): only the latest one asked for
// is shown, and the list says it is busy until that one is in.
let latestRefresh = 0;

async function refresh() {
  const asked = ++latestRefresh;
  rows.setAttribute("aria-busy", "true");
  try {
    const answer = await request("GET", "/api/webhooks");
    if (asked !== latestRefresh) return;
    if (!answer.ok) {
      // A viewer's 403 says which role may manage webhooks.
      const why = answer.data && answer.data.error ? `: ${answer.data.error}` : "";
      say(`Could not list the webhooks (${answer.status}${why}).`, "error");
      return;
    }
    render(answer.data.webhooks || []);
  } catch (err) {
    if (asked === latestRefresh) say("Could not reach the server.", "error");
  } finally {
    if (asked === latestRefresh) rows.setAttribute("aria-busy", "false");
  }
}

async function register(event) {
  event.preventDefault();
  const key = form.elements.key.value.trim();
  const url = form.elements.url.value.trim();
  try {
    const answer = await request("POST", "/api/webhooks", { key, url });
    if (!answer.ok) {
      say((answer.data && answer.data.error) || `Refused (${answer.status}).`, "error");
      return;
    }
    form.reset();
    say(`Registered. Its secret, shown only now: ${answer.data.secret}`, "secret");
    await refresh();
  } catch (err) {
    say("Could not reach the server.", "error");
  }
}

async function unregister(id) {
  try {
    const answer = await request("DELETE", `/api/webhooks/${encodeURIComponent(id)}`);
    if (!answer.ok && answer.status !== 404) {
      say(`Could not unregister (${answer.status}).`, "error");
      return;
    }
    say("Unregistered.", "info");
    await refresh();
  } catch (err) {
    say("Could not reach the server.", "error");
  }
}

export function openWebhooks() {
  setHidden(panel, false);
  say("", "info");
  refresh();
  form.elements.key.focus();
}

export function closeWebhooks() {
  setHidden(panel, true);
}

export function installWebhooks() {
  $("#webhooks-open").addEventListener("click", () => (panel.hidden ? openWebhooks() : closeWebhooks()));
  $("#webhooks-close").addEventListener("click", closeWebhooks);
  $("#webhooks-refresh").addEventListener("click", refresh);
  form.addEventListener("submit", register);
}
