// resmon dashboard: one WebSocket, no polling, DOM updated per animation frame.
"use strict";

(() => {
  const HISTORY_POINTS = 900;          // 15 min at one sample per second
  const MAX_HISTORY_POINTS = 3600;     // a host's full history from the server may hold more
  const OVERVIEW_STEP = 10;            // seconds between two points of the snapshot's overview history
  const SPARK_POINTS = 120;            // card sparklines are downsampled to this
  const SPARK_SPAN = 900;              // seconds a sparkline covers at most
  const MAX_CORE_SERIES = 128;         // per-core history kept for at most this many cores
  const BACKOFF_FIRST = 0.5;           // seconds
  const BACKOFF_CAP = 10;              // seconds
  const REORDER_EVERY_MS = 1000;       // value sorts re-order at most this often in a big fleet,
  const REORDER_SMALL_MS = 250;        // and this often with few hosts, where it is cheap
  const SMALL_FLEET = 100;
  const LEVEL_RANK = { LOW: 1, MEDIUM: 2, HIGH: 3 };
  const LEVELS = ["HIGH", "MEDIUM", "LOW"];
  const SVG_NS = "http://www.w3.org/2000/svg";

  // ---- small helpers -------------------------------------------------------

  const $ = (sel, root = document) => root.querySelector(sel);
  const isNum = (x) => typeof x === "number" && Number.isFinite(x);
  const isObj = (x) => x !== null && typeof x === "object" && !Array.isArray(x);
  const level = (x) => (typeof x === "string" && LEVEL_RANK[x.toUpperCase()] ? x.toUpperCase() : null);
  const nowSec = () => Date.now() / 1000;

  function fmtPct(x) {
    return isNum(x) ? `${x.toFixed(1)} %` : "–";
  }

  function fmtBytes(x) {
    if (!isNum(x)) return "–";
    const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let i = 0;
    let v = Math.abs(x);
    while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
    const digits = v >= 100 || i === 0 ? 0 : v >= 10 ? 1 : 2;
    return `${x < 0 ? "-" : ""}${v.toFixed(digits)} ${units[i]}`;
  }

  const fmtRate = (x) => (isNum(x) ? `${fmtBytes(x)}/s` : "–");

  function fmtAge(seconds) {
    if (!isNum(seconds)) return "–";
    const s = Math.max(0, Math.floor(seconds));
    if (s < 60) return `${s} s ago`;
    if (s < 3600) return `${Math.floor(s / 60)} min ago`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
    return `${Math.floor(s / 86400)} d ago`;
  }

  // Writes only when the value changed: DOM writes are what costs at 500 cards.
  function setText(el, text) {
    if (el.__text !== text) { el.__text = text; el.textContent = text; }
  }
  function setAttr(el, name, value) {
    const key = `__a_${name}`;
    if (el[key] !== value) {
      el[key] = value;
      if (value === null) el.removeAttribute(name); else el.setAttribute(name, value);
    }
  }
  function setHidden(el, hidden) {
    if (el.hidden !== hidden) el.hidden = hidden;
  }
  function setLevelBadge(el, lvl) {
    setText(el, lvl || "–");
    setAttr(el, "data-level", lvl || "none");
  }
  function svgEl(name, attrs) {
    const el = document.createElementNS(SVG_NS, name);
    for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
    return el;
  }

  // ---- reading an analysis defensively ---------------------------------------

  function usageCheck(ev, subject) {
    const usage = isObj(ev.analyses) && isObj(ev.analyses.usage) ? ev.analyses.usage : null;
    const checks = usage && isObj(usage.checks) ? usage.checks : null;
    return checks && isObj(checks[subject]) ? checks[subject] : null;
  }

  /** Everything the dashboard shows, pulled out of one analysis event. */
  function readAnalysis(ev) {
    const m = isObj(ev.metrics) ? ev.metrics : {};
    const cpu = isObj(m.cpu) ? m.cpu : {};
    const mem = isObj(m.memory) ? m.memory : {};
    const net = isObj(m.net_io) ? m.net_io : {};
    const levels = isObj(ev.levels) ? ev.levels : {};
    const cpuCheck = usageCheck(ev, "cpu");
    const memCheck = usageCheck(ev, "memory");

    let cpuPct = isNum(cpu.percent) ? cpu.percent : null;
    if (cpuPct === null && isNum(m.cpu_percentage)) cpuPct = m.cpu_percentage;
    if (cpuPct === null && cpuCheck && isNum(cpuCheck.value)) cpuPct = cpuCheck.value;
    let memPct = isNum(mem.percent) ? mem.percent : null;
    if (memPct === null && memCheck && isNum(memCheck.value)) memPct = memCheck.value;

    const disks = Array.isArray(m.disks)
      ? m.disks.filter((d) => isObj(d) && isNum(d.percent)).map((d) => ({
          mount: typeof d.mount === "string" ? d.mount : String(d.device ?? "?"),
          percent: d.percent,
          used: d.used,
          total: d.total,
        }))
      : [];
    let fullest = null;
    for (const d of disks) if (!fullest || d.percent > fullest.percent) fullest = d;

    return {
      level: level(ev.level),
      cpu: cpuPct,
      cpuLevel: level(levels.cpu) || level(ev.cpu_result) || level(cpuCheck && cpuCheck.level),
      mem: memPct,
      memLevel: level(levels.memory) || level(memCheck && memCheck.level),
      perCore: Array.isArray(cpu.per_core) ? cpu.per_core.map((x) => (isNum(x) ? x : null)) : [],
      load: Array.isArray(m.load) ? m.load.slice(0, 3).map((x) => (isNum(x) ? x : null)) : null,
      disks,
      fullest,
      rx: isNum(net.bytes_recv_per_s) ? net.bytes_recv_per_s : null,
      tx: isNum(net.bytes_sent_per_s) ? net.bytes_sent_per_s : null,
    };
  }

  // ---- per-host model --------------------------------------------------------

  /**
   * Fixed-size column store of one host's points, in increasing time: from
   * the server's history (an overview has only cpu and mem) and then live.
   */
  class History {
    constructor(capacity) {
      this.capacity = capacity;
      this.length = 0;
      this.start = 0;
      this.t = new Float64Array(capacity);
      this.cpu = new Float32Array(capacity);
      this.mem = new Float32Array(capacity);
      this.rx = new Float32Array(capacity);
      this.tx = new Float32Array(capacity);
      this.disk = new Float32Array(capacity);   // the fullest mount's percent
      this.cores = [];          // core index -> Float32Array, allocated when first seen
    }
    coreSeries(c) {
      if (!this.cores[c]) this.cores[c] = new Float32Array(this.capacity).fill(NaN);
      return this.cores[c];
    }
    /** Index into the column arrays of the i-th oldest point. */
    at(i) { return (this.start + i) % this.capacity; }
    lastT() { return this.length ? this.t[this.at(this.length - 1)] : null; }
    /** Position (0 … length) of the oldest point at or after time t. */
    firstAtOrAfter(t) {
      let lo = 0;
      let hi = this.length;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (this.t[this.at(mid)] < t) lo = mid + 1; else hi = mid;
      }
      return lo;
    }
    /** Append a sample {t, cpu, mem, rx, tx, disk, cores}; false unless t is newer than the last. */
    push(s) {
      const last = this.lastT();
      if (!isNum(s.t) || (last !== null && s.t <= last)) return false;
      let i;
      if (this.length < this.capacity) {
        i = this.at(this.length);
        this.length++;
      } else {
        i = this.start;
        this.start = (this.start + 1) % this.capacity;
      }
      this.t[i] = s.t;
      this.cpu[i] = s.cpu ?? NaN;
      this.mem[i] = s.mem ?? NaN;
      this.rx[i] = s.rx ?? NaN;
      this.tx[i] = s.tx ?? NaN;
      this.disk[i] = s.disk ?? NaN;
      for (const arr of this.cores) if (arr) arr[i] = NaN;
      const cores = Array.isArray(s.cores) ? s.cores : [];
      const n = Math.min(cores.length, MAX_CORE_SERIES);
      for (let c = 0; c < n; c++) this.coreSeries(c)[i] = isNum(cores[c]) ? cores[c] : NaN;
      return true;
    }
    /** The sample at position i, as push() takes it. */
    sample(i) {
      const j = this.at(i);
      return {
        t: this.t[j], cpu: this.cpu[j], mem: this.mem[j], rx: this.rx[j], tx: this.tx[j], disk: this.disk[j],
        cores: this.cores.map((arr) => (arr ? arr[j] : NaN)),
      };
    }
  }

  /** A point of the server's history: [ts, cpu, mem] (overview) or an object (full), as a sample. */
  function readHistoryPoint(p) {
    const num = (x) => (isNum(x) ? x : null);
    if (Array.isArray(p)) return { t: num(p[0]), cpu: num(p[1]), mem: num(p[2]) };
    if (!isObj(p)) return null;
    return {
      t: num(p.ts), cpu: num(p.cpu), mem: num(p.mem), rx: num(p.rx), tx: num(p.tx), disk: num(p.disk),
      cores: Array.isArray(p.cores) ? p.cores : null,
    };
  }

  const hosts = new Map();     // host -> entry
  const pending = new Map();   // host -> latest event not yet drawn
  let frameRequested = false;
  let orderDirty = true;    // cards must be re-ordered (new host, new sort)
  let lastReorder = 0;
  let reorderTimer = null;  // a throttled re-order waiting for its time
  let detailHost = null;
  let detailOpener = null;

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
        card: null,
        visible: true,
      };
      hosts.set(host, entry);
      orderDirty = true;
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
    pending.set(entry.host, ev);
    scheduleFrame();
  }

  function ingestStatus(ev, arrival) {
    if (typeof ev.host !== "string" || ev.host === "" || typeof ev.status !== "string") return;
    if (ev.status.toLowerCase() === "forgotten") { forgetHost(ev.host); return; }
    const entry = getEntry(ev.host);
    entry.serverStatus = ev.status.toLowerCase();
    entry.serverStatusAt = arrival;
    pending.set(entry.host, entry.ev);
    scheduleFrame();
  }

  /** A host the server forgot (silent for its --forget-after): its card and data go. */
  function forgetHost(host) {
    const entry = hosts.get(host);
    if (!entry) return;
    if (host === detailHost) closeDetail();
    if (entry.card) {
      if (visibility) visibility.unobserve(entry.card.el);
      entry.card.el.remove();
    }
    hosts.delete(host);
    pending.delete(host);
    renderCounts(nowSec());
  }

  /** online / stale / offline: the server's word if it is newer than the data, else our own guess. */
  function statusOf(entry, now) {
    if (entry.serverStatus && entry.serverStatusAt >= entry.arrival) return entry.serverStatus;
    if (!entry.ev) return "offline";
    const interval = isNum(entry.ev.interval) && entry.ev.interval > 0 ? entry.ev.interval : 1;
    return now - entry.arrival > Math.max(5 * interval, 15) ? "stale" : "online";
  }

  // ---- cards -----------------------------------------------------------------

  const grid = $("#hosts");
  const template = $("#card-template");
  const emptyNote = $("#empty");

  const visibility = "IntersectionObserver" in window
    ? new IntersectionObserver((records) => {
        for (const r of records) {
          const entry = r.target.__entry;
          entry.visible = r.isIntersecting;
          if (entry.visible && entry.cardStale) { pending.set(entry.host, entry.ev); scheduleFrame(); }
        }
      }, { rootMargin: "200px" })
    : null;

  function createCard(entry) {
    const el = template.content.firstElementChild.cloneNode(true);
    el.dataset.host = entry.host;
    el.__entry = entry;
    const card = {
      el,
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
    };
    card.name.textContent = entry.host;
    card.name.title = entry.host;
    entry.card = card;
    grid.appendChild(el);
    if (visibility) visibility.observe(el);
    return card;
  }

  const sparkBuckets = new Float32Array(SPARK_POINTS);

  /**
   * A sparkline over time (points from the overview history are 10 s apart,
   * live ones an interval apart): the last SPARK_SPAN seconds in SPARK_POINTS
   * buckets, each the max of its points, so short spikes stay visible.
   */
  function sparkPoints(h, column) {
    const n = h.length;
    if (n === 0) return "";
    const tEnd = h.t[h.at(n - 1)];
    const first = Math.min(n - 1, h.firstAtOrAfter(tEnd - SPARK_SPAN));
    const tStart = h.t[h.at(first)];
    const span = tEnd - tStart;
    const last = SPARK_POINTS - 1;
    sparkBuckets.fill(NaN);
    for (let i = first; i < n; i++) {
      const j = h.at(i);
      const x = column[j];
      if (Number.isNaN(x)) continue;
      const b = span > 0 ? Math.round(((h.t[j] - tStart) / span) * last) : last;
      if (!(x <= sparkBuckets[b])) sparkBuckets[b] = x;
    }
    const out = [];
    let y = null;
    for (let b = 0; b <= last; b++) {
      const v = sparkBuckets[b];
      if (Number.isNaN(v)) continue;
      y = (23 - (Math.min(100, Math.max(0, v)) * 22) / 100).toFixed(1);
      out.push(`${((b * 100) / last).toFixed(1)},${y}`);
    }
    if (out.length === 1) return `0,${y} 100,${y}`;   // one point: a flat line, not nothing
    return out.join(" ");
  }

  function renderCoreBars(container, bars, perCore, big) {
    if (bars.length !== perCore.length) {
      container.textContent = "";
      bars.length = 0;
      for (let c = 0; c < perCore.length; c++) {
        const bar = document.createElement("span");
        bar.className = "core";
        const fill = document.createElement("span");
        fill.className = "core-fill";
        bar.appendChild(fill);
        if (big) bar.title = `core ${c}`;
        container.appendChild(bar);
        bars.push(fill);
      }
    }
    for (let c = 0; c < perCore.length; c++) {
      const v = perCore[c];
      const pct = isNum(v) ? Math.min(100, Math.max(0, v)) : 0;
      const fill = bars[c];
      const scale = (pct / 100).toFixed(3);
      if (fill.__scale !== scale) { fill.__scale = scale; fill.style.transform = `scaleY(${scale})`; }
      setAttr(fill, "data-level", pct >= 75 ? "HIGH" : pct >= 25 ? "MEDIUM" : "LOW");
      if (big) setAttr(fill.parentNode, "title", `core ${c}: ${fmtPct(v)}`);
    }
  }

  function renderCard(entry, now) {
    const card = entry.card || createCard(entry);
    const d = entry.data;
    const status = statusOf(entry, now);
    entry.shownStatus = status;
    renderStatus(card.el, card.status, status);
    renderAge(entry, now);
    if (!d) return;

    setAttr(card.el, "data-level", d.level || "none");
    setText(card.cpuValue, fmtPct(d.cpu));
    setLevelBadge(card.cpuLevel, d.cpuLevel);
    setText(card.memValue, fmtPct(d.mem));
    setLevelBadge(card.memLevel, d.memLevel);
    // The graphics are the costly part: off-screen cards get them when scrolled into view.
    if (entry.visible) {
      entry.cardStale = false;
      card.cpuSpark.setAttribute("points", sparkPoints(entry.history, entry.history.cpu));
      card.memSpark.setAttribute("points", sparkPoints(entry.history, entry.history.mem));
      renderCoreBars(card.cores, card.coreBars, d.perCore, false);
    } else {
      entry.cardStale = true;
    }
    setText(card.load, d.load && d.load.length ? d.load.map((x) => (isNum(x) ? x.toFixed(2) : "–")).join(" ") : "–");
    setText(card.disk, d.fullest ? `${fmtPct(d.fullest.percent)} ${d.fullest.mount}` : "–");
    setAttr(card.disk, "title", d.disks.map((x) => `${x.mount}: ${fmtPct(x.percent)}`).join("\n") || null);
    setText(card.rx, fmtRate(d.rx));
    setText(card.tx, fmtRate(d.tx));
    setAttr(card.el, "aria-label",
      `${entry.host}: level ${d.level || "unknown"}, CPU ${fmtPct(d.cpu)} ${d.cpuLevel || ""}, ` +
      `memory ${fmtPct(d.mem)} ${d.memLevel || ""}${status === "online" ? "" : `, ${status}`}. Open details`);
  }

  function renderStatus(cardEl, badge, status) {
    setAttr(cardEl, "data-status", status);
    setHidden(badge, status === "online");
    setText(badge, status === "online" ? "" : status.toUpperCase());
    setAttr(badge, "data-status", status);
  }

  function ageOf(entry, now) {
    return (isNum(entry.sampleTs) ? now - entry.sampleTs : now - entry.arrival);
  }

  function renderAge(entry, now) {
    if (!entry.card || !entry.ev) return;
    const text = fmtAge(ageOf(entry, now));
    setText(entry.card.age, text);
    setAttr(entry.card.age, "title", isNum(entry.sampleTs) ? new Date(entry.sampleTs * 1000).toLocaleString() : "arrival time");
  }

  // ---- filtering, sorting, counts --------------------------------------------

  const filterInput = $("#filter");
  const levelSelect = $("#level-filter");
  const sortSelect = $("#sort");
  const countsBox = $("#counts");

  function matches(entry, text, lvl) {
    if (text && !entry.key.includes(text)) return false;
    if (lvl && !(entry.data && entry.data.level === lvl)) return false;
    return true;
  }

  const byName = (a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0);
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

  /** Indexes (into seq) of a longest increasing subsequence: those nodes need not move. */
  function longestIncreasing(seq) {
    const tails = [];
    const prev = new Array(seq.length);
    for (let i = 0; i < seq.length; i++) {
      let lo = 0;
      let hi = tails.length;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (seq[tails[mid]] < seq[i]) lo = mid + 1; else hi = mid;
      }
      prev[i] = lo > 0 ? tails[lo - 1] : -1;
      tails[lo] = i;
    }
    const keep = new Set();
    for (let i = tails.length ? tails[tails.length - 1] : -1; i >= 0; i = prev[i]) keep.add(i);
    return keep;
  }

  function applyOrderAndFilter() {
    const text = filterInput.value.trim().toLowerCase();
    const lvl = levelSelect.value;
    const entries = [...hosts.values()].filter((e) => e.card);
    entries.sort(comparator(sortSelect.value));
    for (const e of entries) setHidden(e.card.el, !matches(e, text, lvl));
    // Move as few nodes as possible: moving a node resets its layout and focus.
    const current = new Map();
    Array.prototype.forEach.call(grid.children, (el, i) => current.set(el, i));
    const wanted = entries.map((e) => e.card.el);
    const positions = wanted.map((el) => current.get(el));
    const keep = longestIncreasing(positions);
    const focused = document.activeElement;
    let moved = false;
    for (let i = wanted.length - 1; i >= 0; i--) {
      if (keep.has(i)) continue;
      const next = i + 1 < wanted.length ? wanted[i + 1] : null;
      if (wanted[i].nextSibling !== next) {
        grid.insertBefore(wanted[i], next);
        if (wanted[i] === focused) moved = true;
      }
    }
    if (moved && focused) focused.focus({ preventScroll: true });
    lastReorder = performance.now();
    orderDirty = false;
    // A re-order due from the throttle is done now: without this, a timer set for the
    // same moment fires just after and re-orders the cards a second time.
    if (reorderTimer) {
      clearTimeout(reorderTimer);
      reorderTimer = null;
    }
  }

  function renderCounts(now) {
    const n = { HIGH: 0, MEDIUM: 0, LOW: 0 };
    let down = 0;
    let shown = 0;
    for (const e of hosts.values()) {
      if (e.data && e.data.level) n[e.data.level]++;
      if (statusOf(e, now) !== "online") down++;
      if (e.card && !e.card.el.hidden) shown++;
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

  // ---- frame loop ------------------------------------------------------------

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
    const text = filterInput.value.trim().toLowerCase();
    const lvl = levelSelect.value;
    let valuesChanged = false;
    for (const host of pending.keys()) {
      const entry = hosts.get(host);
      if (!entry) continue;
      if (!entry.card) orderDirty = true;          // a new host: place it at once
      renderCard(entry, now);
      setHidden(entry.card.el, !matches(entry, text, lvl));
      valuesChanged = true;
      if (host === detailHost) renderDetail();
    }
    pending.clear();
    if (valueSort && valuesChanged) {
      // Value sorts re-order on a throttle so cards do not jitter every frame.
      const every = hosts.size > SMALL_FLEET ? REORDER_EVERY_MS : REORDER_SMALL_MS;
      const wait = every - (performance.now() - lastReorder);
      if (wait <= 0) orderDirty = true;
      else if (!reorderTimer) {
        reorderTimer = setTimeout(() => {
          reorderTimer = null;
          orderDirty = true;
          scheduleFrame();
        }, wait);
      }
    }
    if (orderDirty) applyOrderAndFilter();
    renderCounts(now);
  }

  function refilterNow() {
    orderDirty = true;
    lastReorder = 0;
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

  // Once a second: ages, local staleness, reconnect countdown. Purely local, no requests.
  setInterval(() => {
    const now = nowSec();
    for (const entry of hosts.values()) {
      if (!entry.card) continue;
      renderAge(entry, now);
      const status = statusOf(entry, now);
      if (status !== entry.shownStatus) { pending.set(entry.host, entry.ev); scheduleFrame(); }
    }
    if (detailHost) renderDetailAge(now);
    renderConnection();
    renderCounts(now);
  }, 1000);

  // ---- detail view -----------------------------------------------------------

  const detail = $("#detail");
  const detailPanel = $(".detail-panel", detail);
  const detailCoreBars = [];

  function openDetail(host, opener) {
    if (!hosts.has(host)) return;
    detailHost = host;
    detailOpener = opener || null;
    detail.hidden = false;
    document.body.classList.add("detail-open");
    requestHistory(host);
    renderDetail();
    $("#detail-close").focus();
  }

  function closeDetail() {
    if (detail.hidden) return;
    detail.hidden = true;
    detailHost = null;
    document.body.classList.remove("detail-open");
    const opener = detailOpener;
    detailOpener = null;
    if (opener && opener.isConnected) opener.focus();
  }

  grid.addEventListener("click", (e) => {
    const card = e.target.closest(".host-card");
    if (card) openDetail(card.dataset.host, card);
  });
  grid.addEventListener("keydown", (e) => {
    if (e.key !== "Enter" && e.key !== " ") return;
    const card = e.target.closest(".host-card");
    if (!card) return;
    e.preventDefault();
    openDetail(card.dataset.host, card);
  });
  $("#detail-close").addEventListener("click", closeDetail);
  detail.addEventListener("click", (e) => { if (e.target === detail) closeDetail(); });
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && !detail.hidden) { e.preventDefault(); closeDetail(); return; }
    if (e.key === "Tab" && !detail.hidden) {
      // keep focus inside the dialog
      const focusable = detail.querySelectorAll("button, [href], input, select, [tabindex]:not([tabindex='-1'])");
      if (!focusable.length) return;
      const first = focusable[0];
      const last = focusable[focusable.length - 1];
      if (e.shiftKey && document.activeElement === first) { e.preventDefault(); last.focus(); }
      else if (!e.shiftKey && document.activeElement === last) { e.preventDefault(); first.focus(); }
    }
  });

  const CHART_W = 600;
  const CHART_H = 160;
  const PAD_L = 44;
  const PAD_R = 6;
  const PAD_T = 8;
  const PAD_B = 18;

  /**
   * Draw time series into an svg: series = [{column, cls}], y from 0 to max
   * (or auto), x over the history's time range; NaN leaves a gap.
   */
  function drawChart(svg, h, series, opts) {
    svg.textContent = "";
    const n = h.length;
    let max = opts.max;
    if (max === undefined) {
      max = 0;
      for (const s of series) for (let i = 0; i < n; i++) {
        const v = s.column[h.at(i)];
        if (v > max) max = v;
      }
      max = niceCeil(max || 1);
    }
    const tEnd = n ? h.t[h.at(n - 1)] : nowSec();
    const tStart = n ? Math.min(h.t[h.at(0)], tEnd - 60) : tEnd - 60;
    const span = Math.max(1, tEnd - tStart);
    const x = (t) => PAD_L + ((t - tStart) / span) * (CHART_W - PAD_L - PAD_R);
    const y = (v) => PAD_T + (1 - Math.min(1, Math.max(0, v / max))) * (CHART_H - PAD_T - PAD_B);

    for (const frac of [0, 0.5, 1]) {
      const yy = y(max * frac);
      svg.appendChild(svgEl("line", { x1: PAD_L, x2: CHART_W - PAD_R, y1: yy, y2: yy, class: "grid" }));
      const label = svgEl("text", { x: PAD_L - 4, y: yy + 4, class: "axis", "text-anchor": "end" });
      label.textContent = opts.fmt(max * frac);
      svg.appendChild(label);
    }
    const ago = svgEl("text", { x: PAD_L, y: CHART_H - 4, class: "axis" });
    ago.textContent = `−${fmtDuration(span)}`;
    svg.appendChild(ago);
    const nowLabel = svgEl("text", { x: CHART_W - PAD_R, y: CHART_H - 4, class: "axis", "text-anchor": "end" });
    nowLabel.textContent = "now";
    svg.appendChild(nowLabel);

    for (const s of series) {
      let d = "";
      let pen = "M";
      for (let i = 0; i < n; i++) {
        const j = h.at(i);
        const v = s.column[j];
        if (Number.isNaN(v)) { pen = "M"; continue; }
        d += `${pen}${x(h.t[j]).toFixed(1)},${y(v).toFixed(1)}`;
        pen = "L";
      }
      if (!d) continue;
      const path = svgEl("path", { d, class: `line ${s.cls || ""}`, "vector-effect": "non-scaling-stroke" });
      if (s.color) path.style.stroke = s.color;
      svg.appendChild(path);
    }
    if (n === 0) {
      const t = svgEl("text", { x: CHART_W / 2, y: CHART_H / 2, class: "axis", "text-anchor": "middle" });
      t.textContent = "no data yet";
      svg.appendChild(t);
    }
  }

  function niceCeil(v) {
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  function fmtDuration(s) {
    if (s < 90) return `${Math.round(s)} s`;
    if (s < 5400) return `${Math.round(s / 60)} min`;
    return `${(s / 3600).toFixed(1)} h`;
  }

  const DISK_COLOR = "#ea580c";

  function fillLegend(ul, items) {
    ul.textContent = "";
    for (const it of items) {
      const li = document.createElement("li");
      const sw = document.createElement("span");
      sw.className = `swatch ${it.cls || ""}`;
      if (it.color) sw.style.background = it.color;
      li.append(sw, document.createTextNode(it.label));
      ul.appendChild(li);
    }
  }

  function addFact(dl, name, value) {
    const wrap = document.createElement("div");
    const dt = document.createElement("dt");
    const dd = document.createElement("dd");
    dt.textContent = name;
    dd.textContent = value;
    wrap.append(dt, dd);
    dl.appendChild(wrap);
  }

  function renderDetailAge(now) {
    const entry = hosts.get(detailHost);
    if (!entry) return;
    setText($(".detail-age", detail), entry.ev ? `updated ${fmtAge(ageOf(entry, now))}` : "no data yet");
    const status = statusOf(entry, now);
    const badge = $(".detail-status", detail);
    setHidden(badge, status === "online");
    setText(badge, status.toUpperCase());
    setAttr(badge, "data-status", status);
  }

  function renderDetail() {
    const entry = hosts.get(detailHost);
    if (!entry) return;
    const ev = entry.ev || {};
    const d = entry.data || readAnalysis({});
    const h = entry.history;
    const m = isObj(ev.metrics) ? ev.metrics : {};
    setText($("#detail-title"), entry.host);
    setLevelBadge($(".detail-level", detail), d.level);
    renderDetailAge(nowSec());

    const facts = $(".detail-facts", detail);
    facts.textContent = "";
    addFact(facts, "CPU", `${fmtPct(d.cpu)} ${d.cpuLevel || ""}`);
    const mem = isObj(m.memory) ? m.memory : {};
    addFact(facts, "memory", `${fmtPct(d.mem)} ${d.memLevel || ""}` +
      (isNum(mem.used) && isNum(mem.total) ? ` (${fmtBytes(mem.used)} / ${fmtBytes(mem.total)})` : ""));
    if (isObj(m.swap) && isNum(m.swap.percent)) addFact(facts, "swap", fmtPct(m.swap.percent));
    addFact(facts, "load 1/5/15", d.load ? d.load.map((x) => (isNum(x) ? x.toFixed(2) : "–")).join(" / ") : "–");
    addFact(facts, "net ↓ / ↑", `${fmtRate(d.rx)} / ${fmtRate(d.tx)}`);
    if (isObj(m.disk_io)) addFact(facts, "disk read / write", `${fmtRate(m.disk_io.read_bytes_per_s)} / ${fmtRate(m.disk_io.write_bytes_per_s)}`);
    addFact(facts, "cores", String(d.perCore.length || "–"));
    addFact(facts, "seq", ev.seq === null || ev.seq === undefined ? "–" : String(ev.seq));
    addFact(facts, "interval", isNum(ev.interval) ? `${ev.interval} s` : "–");

    detail.dataset.history = entry.fullHistory ? "full" : "loading";
    setHidden($(".detail-loading", detail), entry.fullHistory);
    const pctFmt = (v) => `${Math.round(v)}%`;
    $('.chart-now[data-chart="cpu"]', detail).textContent = fmtPct(d.cpu);
    $('.chart-now[data-chart="memory"]', detail).textContent = fmtPct(d.mem);
    drawChart($("#chart-cpu"), h, [{ column: h.cpu, cls: "cpu" }], { max: 100, fmt: pctFmt });
    drawChart($("#chart-cores"), h, h.cores.filter(Boolean).map((column) => ({ column, cls: "core-line" })), { max: 100, fmt: pctFmt });
    renderCoreBars($(".core-bars-big", detail), detailCoreBars, d.perCore, true);
    drawChart($("#chart-mem"), h, [{ column: h.mem, cls: "mem" }], { max: 100, fmt: pctFmt });
    // The history keeps the fullest mount's percent; every mount's is in the legend, as of now.
    drawChart($("#chart-disk"), h, [{ column: h.disk, color: DISK_COLOR }], { max: 100, fmt: pctFmt });
    fillLegend($('[data-legend="disk"]', detail), d.disks.map((x) => (x === d.fullest
      ? { label: `${x.mount} ${fmtPct(x.percent)} (fullest, drawn)`, color: DISK_COLOR }
      : { label: `${x.mount} ${fmtPct(x.percent)}`, cls: "none" })));
    drawChart($("#chart-net"), h, [{ column: h.rx, cls: "rx" }, { column: h.tx, cls: "tx" }], { fmt: (v) => fmtRate(v) });
    fillLegend($('[data-legend="net"]', detail), [
      { label: `received ${fmtRate(d.rx)}`, cls: "rx" },
      { label: `sent ${fmtRate(d.tx)}`, cls: "tx" },
    ]);
    renderAnalyses($(".analyses", detail), ev.analyses);
  }

  function renderAnalyses(ul, analyses) {
    ul.textContent = "";
    if (!isObj(analyses) || Object.keys(analyses).length === 0) {
      const li = document.createElement("li");
      li.textContent = "none";
      ul.appendChild(li);
      return;
    }
    for (const [name, a] of Object.entries(analyses)) {
      const res = isObj(a) ? a : {};
      const li = document.createElement("li");
      li.className = "analysis";
      const isError = res.status === "error";
      li.dataset.status = isError ? "error" : "ok";
      li.dataset.analyzer = name;
      const head = document.createElement("div");
      head.className = "analysis-head";
      const title = document.createElement("strong");
      title.textContent = name;
      head.appendChild(title);
      if (isError) {
        const err = document.createElement("span");
        err.className = "status-badge";
        err.dataset.status = "error";
        err.textContent = "ERROR";
        head.appendChild(err);
      } else {
        const badge = document.createElement("span");
        badge.className = "level-badge";
        setLevelBadge(badge, level(res.level));
        head.appendChild(badge);
      }
      li.appendChild(head);
      const lines = [];
      if (isError) lines.push(String(res.error ?? "failed"));
      if (isObj(res.checks)) {
        for (const [subject, c] of Object.entries(res.checks)) {
          if (!isObj(c)) continue;
          let line = `${subject}: ${level(c.level) || "–"}`;
          if (isNum(c.value)) line += ` (${Number(c.value.toFixed(2))})`;
          if (typeof c.message === "string" && c.message) line += ` — ${c.message}`;
          lines.push(line);
        }
      }
      if (Array.isArray(res.messages)) for (const msg of res.messages) lines.push(String(msg));
      if (lines.length) {
        const list = document.createElement("ul");
        for (const line of lines) {
          const item = document.createElement("li");
          item.textContent = line;
          list.appendChild(item);
        }
        li.appendChild(list);
      }
      ul.appendChild(li);
    }
  }

  // ---- connection ------------------------------------------------------------

  const connectionEl = $("#connection");
  let socket = null;
  let attempt = 0;
  let retryAt = null;
  let retryTimer = null;
  let connState = "connecting";

  function wsUrl() {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    // Every host's CPU and memory for the sparklines: [ts, cpu, mem], one per 10 s.
    return `${proto}//${location.host}/ws?history=overview&step=${OVERVIEW_STEP}`;
  }

  /** Ask for one host's full points (the detail view's charts); the reply comes over the socket. */
  function requestHistory(host) {
    if (socket && socket.readyState === WebSocket.OPEN) {
      socket.send(JSON.stringify({ kind: "history", host, step: 0 }));
    }
    // Not connected: the snapshot that follows the reconnection asks again.
  }

  function renderConnection() {
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
    renderConnection();
    let ws;
    try {
      ws = new WebSocket(wsUrl());
    } catch (err) {
      scheduleReconnect();
      return;
    }
    socket = ws;
    ws.onmessage = (msg) => {
      if (socket !== ws) return;
      attempt = 0;   // a message got through: the next drop starts the backoff afresh
      // Live once the snapshot is in, not when the socket opens: an open socket
      // that never delivers the fleet is not a live dashboard.
      if (onMessage(msg.data) === "snapshot" && connState !== "live") {
        connState = "live";
        renderConnection();
      }
    };
    ws.onclose = () => {
      if (socket !== ws) return;
      socket = null;
      scheduleReconnect();
    };
    ws.onerror = () => {};   // onclose follows and handles it
  }

  function scheduleReconnect() {
    if (!navigator.onLine) {
      connState = "offline";
      renderConnection();
      return;                // the "online" event reconnects
    }
    const base = Math.min(BACKOFF_CAP, BACKOFF_FIRST * Math.pow(2, attempt));
    const delay = Math.min(BACKOFF_CAP, base * (0.75 + Math.random() * 0.5));
    attempt++;
    connState = "reconnecting";
    retryAt = Date.now() + delay * 1000;
    retryTimer = setTimeout(connect, delay * 1000);
    renderConnection();
  }

  window.addEventListener("online", () => { if (!socket) connect(); });
  window.addEventListener("offline", () => { if (socket) socket.close(); });

  /** Take one message from the server; returns its kind. */
  function onMessage(raw) {
    let msg;
    try { msg = JSON.parse(raw); } catch (err) { return null; }
    if (!isObj(msg)) return null;
    const arrival = nowSec();
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
      orderDirty = true;
      lastReorder = 0;
      scheduleFrame();
      if (detailHost) requestHistory(detailHost);   // the overview replaced its full points
    } else if (msg.kind === "history") {
      const entry = typeof msg.host === "string" ? hosts.get(msg.host) : null;
      if (!entry || !Array.isArray(msg.points)) return;
      replaceHistory(entry, msg.points, true);
      pending.set(entry.host, entry.ev);
      scheduleFrame();
    } else if (msg.kind === "analysis") {
      ingestAnalysis(msg, arrival, true);
    } else if (msg.kind === "status") {
      ingestStatus(msg, arrival);
    }
    // unknown kinds, and errors (nothing the page sends should cause one), are ignored
    return msg.kind;
  }

  renderCounts(nowSec());
  connect();
})();
