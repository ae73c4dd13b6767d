// Reading what the server sends, defensively: an analysis, a history point.

import { isNum, isObj, level, worseLevel } from "./util.js";

/**
 * The check of `subject` ("cpu", "memory") of the first analyzer that has
 * one: no analyzer is special (the server's `levels` come first anyway).
 */
function checkOf(ev, subject) {
  if (!isObj(ev.analyses)) return null;
  for (const findings of Object.values(ev.analyses)) {
    const checks = isObj(findings) && isObj(findings.checks) ? findings.checks : null;
    if (checks && isObj(checks[subject])) return checks[subject];
  }
  return null;
}

/** One analyzer's level: its own, else the worst of its checks' (as the server's). */
function findingsLevel(findings) {
  if (level(findings.level)) return level(findings.level);
  let worst = null;
  const checks = isObj(findings.checks) ? findings.checks : {};
  for (const check of Object.values(checks)) if (isObj(check)) worst = worseLevel(worst, level(check.level));
  return worst;
}

/** The names of the analyzers whose level is the host's: those that set it. */
export function setByOf(ev) {
  const hostLevel = level(ev.level);
  if (!hostLevel || !isObj(ev.analyses)) return [];
  return Object.keys(ev.analyses)
    .filter((name) => isObj(ev.analyses[name]) && findingsLevel(ev.analyses[name]) === hostLevel)
    .sort();
}

/** Everything the dashboard shows, pulled out of one analysis event. */
export function readAnalysis(ev) {
  const m = isObj(ev.metrics) ? ev.metrics : {};
  const cpu = isObj(m.cpu) ? m.cpu : {};
  const mem = isObj(m.memory) ? m.memory : {};
  const net = isObj(m.net_io) ? m.net_io : {};
  const levels = isObj(ev.levels) ? ev.levels : {};
  const cpuCheck = checkOf(ev, "cpu");
  const memCheck = checkOf(ev, "memory");

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
    setBy: setByOf(ev),
    // Made by the web role from a proof-of-concept analyzer's {"cpu_result": ...}.
    legacy: ev.legacy === true,
  };
}

/** A point of the server's history: [ts, cpu, mem] (overview) or an object (full), as a sample. */
export function readHistoryPoint(p) {
  const num = (x) => (isNum(x) ? x : null);
  if (Array.isArray(p)) return { t: num(p[0]), cpu: num(p[1]), mem: num(p[2]) };
  if (!isObj(p)) return null;
  return {
    t: num(p.ts), cpu: num(p.cpu), mem: num(p.mem), rx: num(p.rx), tx: num(p.tx), disk: num(p.disk),
    cores: Array.isArray(p.cores) ? p.cores : null,
  };
}
