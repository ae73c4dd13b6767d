// The one WebSocket to the server: connect, reconnect with backoff and
// jitter, and say how it is going in the top bar.

import { $, setAttr, setText } from "./util.js";

const BACKOFF_FIRST = 0.5;           // seconds
const BACKOFF_CAP = 10;              // seconds

/**
 * A connection to url. onMessage(data) takes each message and returns its
 * kind: the page is "live" once a "snapshot" is in, not when the socket
 * opens (an open socket that never delivers the fleet is not a live
 * dashboard).
 */
export function createConnection(url, onMessage) {
  const connectionEl = $("#connection");
  let socket = null;
  let attempt = 0;
  let retryAt = null;
  let retryTimer = null;
  let connState = "connecting";

  function render() {
    let text;
    if (connState === "live") text = "live";
    else if (connState === "connecting") text = "connecting…";
    else if (connState === "reconnecting" && retryAt !== null) {
      text = `disconnected — reconnecting in ${Math.max(1, Math.ceil((retryAt - Date.now()) / 1000))} s…`;
    } else if (connState === "offline") text = "disconnected (browser offline)";
    else text = "disconnected";
    setText(connectionEl, text);
    setAttr(connectionEl, "data-state", connState);
    document.body.classList.toggle("conn-down", connState !== "live");
  }

  function connect() {
    clearTimeout(retryTimer);
    retryTimer = null;
    retryAt = null;
    connState = "connecting";
    render();
    let ws;
    try {
      ws = new WebSocket(url());
    } catch (err) {
      scheduleReconnect();
      return;
    }
    socket = ws;
    ws.onmessage = (msg) => {
      if (socket !== ws) return;
      attempt = 0;   // a message got through: the next drop starts the backoff afresh
      if (onMessage(msg.data) === "snapshot" && connState !== "live") {
        connState = "live";
        render();
      }
    };
    ws.onclose = (e) => {
      if (socket !== ws) return;
      socket = null;
      // 1008: the server ended it on purpose (a session ended, a flood); session.js checks which.
      if (e.code === 1008) window.dispatchEvent(new CustomEvent("resmon:policy-close"));
      scheduleReconnect();
    };
    ws.onerror = () => {};   // onclose follows and handles it
  }

  function scheduleReconnect() {
    if (!navigator.onLine) {
      connState = "offline";
      render();
      return;                // the "online" event reconnects
    }
    const base = Math.min(BACKOFF_CAP, BACKOFF_FIRST * Math.pow(2, attempt));
    const delay = Math.min(BACKOFF_CAP, base * (0.75 + Math.random() * 0.5));
    attempt++;
    connState = "reconnecting";
    retryAt = Date.now() + delay * 1000;
    retryTimer = setTimeout(connect, delay * 1000);
    render();
  }

  /** Send a message if connected; false if not (the caller asks again later). */
  function send(message) {
    if (socket && socket.readyState === WebSocket.OPEN) {
      socket.send(JSON.stringify(message));
      return true;
    }
    return false;
  }

  window.addEventListener("online", () => { if (!socket) connect(); });
  window.addEventListener("offline", () => { if (socket) socket.close(); });

  return { connect, send, render };
}
