"""
Dashboard load: a real `twistd resmon --role=web` fed analyses of N hosts, each once a second, and the
dashboard open in headless Chromium; frame times, long tasks and WebSocket rate measured in the page.

Usage: python bench/dashboard_load.py [--broker URL] [--hosts N] [--warmup S] [--measure S]
Needs RabbitMQ, resmon installed (the twistd on this interpreter's PATH), selenium, psutil, and
Debian's chromium and chromium-driver. Runs twice, sorted by name and then by CPU, and prints a table.
"""

import argparse
import json
import os
import random
import re
import shutil
import signal
import sys
import tempfile
import time

from twisted.internet import defer, task, threads

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from support import (  # noqa: E402
    PlainAMQPClient, TwistdProcess, brokerUnreachableReason, brokerURL, freePort, uniqueName)

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
WIDTH, HEIGHT = 1280, 800

# Installed before the dashboard's modules run: counts what the page receives and times its own work.
PAGE_PROBE = r"""
(() => {
  const b = window.__bench = {
    measuring: false, start: 0, frames: [], lastFrame: null,
    wsOpens: 0, wsMessages: 0, wsBytes: 0, handlerMs: 0, handlerMax: 0,
    appFrames: 0, appFrameMs: 0, appFrameMax: 0,
    longtask: false, longTasks: [], drift: [], reorders: [],
    snapshots: [],   // {hosts, bytes, ms after navigation} of every snapshot received
  };
  const raf = window.requestAnimationFrame.bind(window);
  const tick = (t) => {
    if (b.measuring && b.lastFrame !== null) b.frames.push(t - b.lastFrame);
    b.lastFrame = t;
    raf(tick);
  };
  raf(tick);
  // The dashboard's own frame callbacks, timed.
  window.requestAnimationFrame = (cb) => raf((t) => {
    const s = performance.now();
    try { cb(t); } finally {
      if (b.measuring) {
        const d = performance.now() - s;
        b.appFrames++; b.appFrameMs += d; if (d > b.appFrameMax) b.appFrameMax = d;
      }
    }
  });
  const NativeWebSocket = window.WebSocket;
  window.WebSocket = class extends NativeWebSocket {
    constructor(...args) {
      super(...args);
      this.addEventListener("open", () => { b.wsOpens++; });
    }
    get onmessage() { return super.onmessage; }
    set onmessage(fn) {
      super.onmessage = typeof fn !== "function" ? fn : (e) => {
        if (typeof e.data === "string" && e.data.startsWith('{"kind":"snapshot"')) {
          const m = JSON.parse(e.data);
          b.snapshots.push({ hosts: m.events.length, bytes: e.data.length, ms: performance.now() });
        }
        const s = performance.now();
        try { return fn.call(this, e); } finally {
          if (b.measuring) {
            const d = performance.now() - s;
            b.wsMessages++; b.wsBytes += typeof e.data === "string" ? e.data.length : 0;
            b.handlerMs += d; if (d > b.handlerMax) b.handlerMax = d;
          }
        }
      };
    }
  };
  const types = (window.PerformanceObserver && PerformanceObserver.supportedEntryTypes) || [];
  if (types.includes("longtask")) {
    b.longtask = true;
    new PerformanceObserver((list) => {
      for (const e of list.getEntries()) {
        if (b.measuring && e.startTime >= b.start) b.longTasks.push([e.startTime, e.duration]);
      }
    }).observe({ type: "longtask" });
  } else {
    // No long-task API: main-thread blocking shows as the lateness of a 50 ms timer.
    let expected = performance.now() + 50;
    setInterval(() => {
      const now = performance.now();
      if (b.measuring) b.drift.push(Math.max(0, now - expected));
      expected = now + 50;
    }, 50);
  }
  // Cards moved in the grid (a re-order): the observer runs within the task that moved them.
  document.addEventListener("DOMContentLoaded", () => new MutationObserver(() => {
    if (b.measuring) b.reorders.push(performance.now());
  }).observe(document.getElementById("hosts"), { childList: true }));
  b.begin = () => {
    Object.assign(b, { measuring: true, start: performance.now(), frames: [], lastFrame: null,
      wsMessages: 0, wsBytes: 0, handlerMs: 0, handlerMax: 0,
      appFrames: 0, appFrameMs: 0, appFrameMax: 0, longTasks: [], drift: [], reorders: [] });
  };
  b.end = () => {
    b.measuring = false;
    return {
      seconds: (performance.now() - b.start) / 1000, frames: b.frames,
      wsOpens: b.wsOpens, wsMessages: b.wsMessages, wsBytes: b.wsBytes,
      handlerMs: b.handlerMs, handlerMax: b.handlerMax,
      appFrames: b.appFrames, appFrameMs: b.appFrameMs, appFrameMax: b.appFrameMax,
      longtask: b.longtask, longTasks: b.longTasks.map((t) => t[1]), drift: b.drift,
      reorders: b.reorders.length,
      reorderTasks: b.longTasks.filter(([s, d]) => b.reorders.some((t) => t >= s && t <= s + d)).map((t) => t[1]),
      cards: document.querySelectorAll(".host-card").length,
      shown: document.querySelectorAll(".host-card:not([hidden])").length,
      nodes: document.getElementsByTagName("*").length,
      sort: document.getElementById("sort").value,
      snapshots: b.snapshots,
    };
  };
})();
"""

# Chromium's own accounting of the page's main thread (CDP Performance.getMetrics), in seconds.
BROWSER_METRICS = ("TaskDuration", "ScriptDuration", "RecalcStyleDuration", "LayoutDuration")


class FleetPublisher:
    """
    Publishes one analysis per host per second, the hosts spread evenly over
    the second, like a fleet of agents behind an analyzer would.
    """

    PREFIXES = ("web", "api", "db", "cache", "worker", "queue", "search", "batch")

    def __init__(self, amqp, exchange, count, clock, seed=1):
        self.amqp = amqp
        self.exchange = exchange
        self.clock = clock
        self.random = random.Random(seed)
        self.hosts = [self._host(i) for i in range(count)]
        self.published = 0
        self.behind = 0.0        # the most this publisher fell behind its schedule, seconds
        self._start = None
        self._loop = task.LoopingCall(self._publishDue)
        self._loop.clock = clock

    def _host(self, i):
        r = self.random
        name = f"{self.PREFIXES[i % len(self.PREFIXES)]}-{i:03d}.dc{1 + i % 3}.example.com"
        # Most hosts idle, some busy, a few hot: every level appears, and levels change.
        busy = r.choices((8.0, 45.0, 85.0), weights=(6, 3, 1))[0]
        return {
            "name": name,
            "key": re.sub(r"[^A-Za-z0-9_-]", "_", name) + ".analysis",
            "seq": 0,
            "cores": [busy + r.uniform(-5, 5) for _ in range(r.choice((2, 4, 4, 8, 8)))],
            "busy": busy,
            "mem": r.uniform(20, 90),
            "memTotal": r.choice((8, 16, 32, 64)) * 2 ** 30,
            "disks": [("/", "/dev/sda1", r.uniform(20, 85))] + [
                (mount, f"/dev/sdb{k + 1}", r.uniform(5, 95))
                for k, mount in enumerate(r.sample(("/var", "/home", "/srv/data"), r.randint(0, 2)))],
            "load": r.uniform(0, 4),
        }

    def start(self):
        self._start = self.clock.seconds()
        self._loop.start(0.01)

    def stop(self):
        if self._loop.running:
            self._loop.stop()

    def _publishDue(self):
        now = self.clock.seconds()
        n = len(self.hosts)
        self.behind = max(self.behind, now - (self._start + self.published / n))
        while self._start + self.published / n <= now:
            host = self.hosts[self.published % n]
            self.amqp.publish(self.exchange, host["key"], json.dumps(self._analysis(host)).encode())
            self.published += 1

    def _analysis(self, host):
        r = self.random
        walk = lambda v, pull, step: min(100.0, max(0.0, v + (pull - v) * 0.1 + r.gauss(0, step)))
        host["cores"] = [walk(c, host["busy"], 8) for c in host["cores"]]
        host["mem"] = walk(host["mem"], host["mem"], 1.5)
        host["load"] = max(0.0, host["load"] + r.gauss(0, 0.1))
        cpu = round(sum(host["cores"]) / len(host["cores"]), 1)
        mem = round(host["mem"], 1)
        cpuLevel, memLevel = _level(cpu, 25, 75), _level(mem, 60, 85)
        ts = time.time()
        seq = host["seq"]
        host["seq"] += 1
        total = host["memTotal"]
        used = int(total * mem / 100)
        disks = []
        for mount, device, percent in host["disks"]:
            size = 500 * 10 ** 9
            disks.append({"mount": mount, "device": device, "fstype": "ext4", "total": size,
                          "used": int(size * percent / 100), "free": int(size * (100 - percent) / 100),
                          "percent": round(percent, 1)})
        return {
            "v": 1, "kind": "analysis", "host": host["name"], "seq": seq, "ts": ts, "interval": 1.0,
            "analyzed_at": ts + 0.004, "analyzer": f"bench:{os.getpid()}",
            "level": max(cpuLevel, memLevel, key=LEVEL_RANK.get),
            "levels": {"cpu": cpuLevel, "memory": memLevel}, "cpu_result": cpuLevel,
            "analyses": {"usage": {"status": "ok", "level": max(cpuLevel, memLevel, key=LEVEL_RANK.get),
                                   "checks": {"cpu": {"level": cpuLevel, "value": cpu},
                                              "memory": {"level": memLevel, "value": mem}}}},
            "metrics": {
                "cpu": {"percent": cpu, "per_core": [round(c, 1) for c in host["cores"]]},
                "memory": {"total": total, "used": used, "available": total - used, "percent": mem},
                "swap": {"total": 2 * 2 ** 30, "used": 0, "free": 2 * 2 ** 30, "percent": 0.0},
                "load": [round(host["load"], 2), round(host["load"] * 0.9, 2), round(host["load"] * 0.8, 2)],
                "disks": disks,
                "disk_io": {"read_bytes_per_s": round(r.expovariate(1 / 200000), 1),
                            "write_bytes_per_s": round(r.expovariate(1 / 500000), 1),
                            "read_ops_per_s": float(r.randint(0, 50)), "write_ops_per_s": float(r.randint(0, 120))},
                "net_io": {"bytes_sent_per_s": round(r.expovariate(1 / 80000), 1),
                           "bytes_recv_per_s": round(r.expovariate(1 / 250000), 1),
                           "packets_sent_per_s": float(r.randint(5, 900)),
                           "packets_recv_per_s": float(r.randint(5, 1500))},
            },
        }


LEVEL_RANK = {"LOW": 1, "MEDIUM": 2, "HIGH": 3}


def _level(value, medium, high):
    return "HIGH" if value >= high else "MEDIUM" if value >= medium else "LOW"


def startBrowser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="resmon-bench-chromium-")
    for argument in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-background-networking", "--disable-component-update",
                     "--disable-sync", "--no-first-run", f"--window-size={WIDTH},{HEIGHT}",
                     f"--user-data-dir={profile}"):
        options.add_argument(argument)
    # Its own session: Ctrl-C reaches only this script, which then closes the browser in order.
    service = Service(CHROMEDRIVER, popen_kw={"start_new_session": True})
    driver = webdriver.Chrome(service=service, options=options)
    driver.profile = profile
    driver.set_page_load_timeout(30)
    driver.set_script_timeout(30)
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": PAGE_PROBE})
    driver.execute_cdp_cmd("Performance.enable", {})
    return driver


def quitBrowser(driver):
    try:
        driver.quit()
    finally:
        shutil.rmtree(driver.profile, ignore_errors=True)


def openDashboard(driver, port, sort):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    driver.get(f"http://127.0.0.1:{port}/")
    if sort != "name":
        Select(driver.find_element(By.ID, "sort")).select_by_value(sort)


def browserProcesses(driver):
    import psutil
    try:
        return psutil.Process(driver.service.process.pid).children(recursive=True)
    except psutil.Error:
        return []


def cpuSeconds(processes):
    import psutil
    total = {}
    for p in processes:
        try:
            t = p.cpu_times()
            total[p.pid] = t.user + t.system
        except psutil.Error:
            pass
    return total


def browserMetrics(driver):
    metrics = driver.execute_cdp_cmd("Performance.getMetrics", {})["metrics"]
    return {m["name"]: m["value"] for m in metrics}


def percentile(values, q):
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@defer.inlineCallbacks
def measureRun(reactor, driver, server, publisher, port, sort, warmup, seconds):
    import psutil

    # Two rounds of the fleet first: the page's snapshot must then hold every host.
    while publisher.published < 2 * len(publisher.hosts):
        yield task.deferLater(reactor, 0.1, lambda: None)
    yield threads.deferToThread(openDashboard, driver, port, sort)
    yield task.deferLater(reactor, warmup, lambda: None)
    snapshots = yield threads.deferToThread(driver.execute_script, "return window.__bench.snapshots")
    if not snapshots or snapshots[0]["hosts"] != len(publisher.hosts):
        raise AssertionError(
            f"the page's first snapshot should hold all {len(publisher.hosts)} hosts; it got "
            f"{snapshots[0]['hosts'] if snapshots else 'no snapshot'} (server log: {server.logPath})")

    serverProcess = psutil.Process(server.transport.pid)
    browser = yield threads.deferToThread(browserProcesses, driver)
    before = yield threads.deferToThread(browserMetrics, driver)
    browserCPU0 = cpuSeconds(browser)
    serverProcess.cpu_percent(None)
    thisProcess = psutil.Process()
    thisProcess.cpu_percent(None)
    psutil.cpu_percent(None)
    published0 = publisher.published
    yield threads.deferToThread(driver.execute_script, "window.__bench.begin()")
    rss = []

    def sampleRSS():
        try:
            rss.append(serverProcess.memory_info().rss)
        except psutil.Error:
            pass
    sampler = task.LoopingCall(sampleRSS)
    sampler.clock = reactor
    sampler.start(1.0)
    try:
        yield task.deferLater(reactor, seconds, lambda: None)
    finally:
        sampler.stop()
    page = yield threads.deferToThread(driver.execute_script, "return window.__bench.end()")
    serverCPU = serverProcess.cpu_percent(None)
    publisherCPU = thisProcess.cpu_percent(None)
    machineCPU = psutil.cpu_percent(None)
    after = yield threads.deferToThread(browserMetrics, driver)
    browserCPU1 = cpuSeconds(browser)
    span = page["seconds"]
    busy = {name: (after.get(name, 0) - before.get(name, 0)) / span * 100 for name in BROWSER_METRICS}
    frames = page["frames"]
    blocking = page["longTasks"] if page["longtask"] else page["drift"]
    return {
        "sort": page["sort"],
        "seconds": span,
        "published/s": (publisher.published - published0) / span,
        "frames": len(frames),
        "fps": len(frames) / span,
        "frame p50": percentile(frames, 0.50),
        "frame p95": percentile(frames, 0.95),
        "frame p99": percentile(frames, 0.99),
        "frame max": max(frames) if frames else float("nan"),
        "frames > 17 ms": sum(1 for f in frames if f > 17.0) / max(1, len(frames)) * 100,
        "frames > 50 ms": sum(1 for f in frames if f > 50.0),
        "longtask": page["longtask"],
        "long tasks": len(blocking) if page["longtask"] else sum(1 for d in blocking if d > 50),
        "long tasks ms": sum(blocking) if page["longtask"] else sum(d for d in blocking if d > 50),
        "longest task": max(blocking) if blocking else 0.0,
        "reorders": page["reorders"],
        "reorder tasks": len(page["reorderTasks"]),
        "reorder tasks ms": sum(page["reorderTasks"]),
        "cards": page["cards"],
        "shown": page["shown"],
        "nodes": page["nodes"],
        "ws msg/s": page["wsMessages"] / span,
        "ws KiB/s": page["wsBytes"] / span / 1024,
        "ws opens": page["wsOpens"],
        "onmessage %": page["handlerMs"] / (span * 1000) * 100,
        "onmessage max": page["handlerMax"],
        "app frame %": page["appFrameMs"] / (span * 1000) * 100,
        "app frame avg": page["appFrameMs"] / max(1, page["appFrames"]),
        "app frame max": page["appFrameMax"],
        "main busy %": busy["TaskDuration"],
        "script %": busy["ScriptDuration"],
        "style %": busy["RecalcStyleDuration"],
        "layout %": busy["LayoutDuration"],
        "browser CPU %": sum(browserCPU1[pid] - browserCPU0[pid]
                             for pid in browserCPU1 if pid in browserCPU0) / span * 100,
        "server CPU %": serverCPU,
        "publisher CPU %": publisherCPU,
        "machine CPU %": machineCPU,
        "server RSS MiB": max(rss) / 2 ** 20 if rss else serverProcess.memory_info().rss / 2 ** 20,
        "snapshot hosts": snapshots[0]["hosts"],
        "snapshot KiB": snapshots[0]["bytes"] / 1024,
        "snapshot ms": snapshots[0]["ms"],
    }


ROWS = [
    ("snapshot hosts", "hosts in the page's first snapshot", "{:d}"),
    ("snapshot KiB", "  its size (KiB)", "{:.0f}"),
    ("snapshot ms", "  received, ms after the page started loading", "{:.0f}"),
    ("published/s", "analyses published per second", "{:.0f}"),
    ("ws msg/s", "WebSocket messages received per second", "{:.0f}"),
    ("ws KiB/s", "WebSocket KiB received per second", "{:.0f}"),
    ("ws opens", "WebSocket connections opened (1: no reconnect)", "{:d}"),
    ("cards", "cards in the DOM (not hidden)", None),
    ("nodes", "DOM elements", "{:d}"),
    ("fps", "frames per second", "{:.1f}"),
    ("frame p50", "frame interval p50 (ms)", "{:.1f}"),
    ("frame p95", "frame interval p95 (ms)", "{:.1f}"),
    ("frame p99", "frame interval p99 (ms)", "{:.1f}"),
    ("frame max", "frame interval max (ms)", "{:.1f}"),
    ("frames > 17 ms", "frames longer than 17 ms (%)", "{:.1f}"),
    ("frames > 50 ms", "frames longer than 50 ms", "{:d}"),
    ("long tasks", None, "{:d}"),
    ("long tasks ms", None, "{:.0f}"),
    ("longest task", None, "{:.0f}"),
    ("reorders", "card re-orders (moves in the grid)", "{:d}"),
    ("reorder tasks", "long tasks that re-ordered cards", "{:d}"),
    ("reorder tasks ms", "  their total duration (ms)", "{:.0f}"),
    ("main busy %", "page main thread busy (% of time, CDP)", "{:.0f}"),
    ("script %", "  of which script (%)", "{:.0f}"),
    ("style %", "  of which style recalc (%)", "{:.0f}"),
    ("layout %", "  of which layout (%)", "{:.0f}"),
    ("onmessage %", "WebSocket onmessage handlers (% of time)", "{:.1f}"),
    ("onmessage max", "  longest onmessage (ms)", "{:.1f}"),
    ("app frame %", "dashboard frame() callbacks (% of time)", "{:.1f}"),
    ("app frame avg", "  mean frame() (ms)", "{:.2f}"),
    ("app frame max", "  longest frame() (ms)", "{:.1f}"),
    ("browser CPU %", "Chromium, all processes (% of one core)", "{:.0f}"),
    ("server CPU %", "twistd --role=web (% of one core)", "{:.0f}"),
    ("server RSS MiB", "twistd --role=web RSS, max (MiB)", "{:.0f}"),
    ("publisher CPU %", "this script: publisher (% of one core)", "{:.0f}"),
    ("machine CPU %", "whole machine busy (% of all CPUs)", "{:.0f}"),
]


def printTable(results, hosts, warmup, seconds):
    print(f"\n{hosts} hosts, one analysis each per second; dashboard at {WIDTH}x{HEIGHT} in headless "
          f"Chromium; {warmup:g} s warm-up, {seconds:g} s measured; {os.cpu_count()} CPUs")
    longtask = all(r["longtask"] for r in results)
    labels = {
        "long tasks": "long tasks (> 50 ms)" if longtask else "timer stalls > 50 ms (drift probe)",
        "long tasks ms": "  their total duration (ms)" if longtask else "  their total lateness (ms)",
        "longest task": "  longest (ms)" if longtask else "  worst lateness (ms)",
    }
    width = max(len(labels.get(key) or label) for key, label, _ in ROWS) + 2
    print(" " * width + "".join(f"{'sort ' + r['sort']:>14}" for r in results))
    for key, label, fmt in ROWS:
        cells = []
        for r in results:
            if key == "cards":
                cells.append(f"{r['cards']} ({r['shown']})")
            else:
                cells.append(fmt.format(r[key]))
        print(f"{labels.get(key) or label:<{width}}" + "".join(f"{c:>14}" for c in cells))


class Cleanup:
    """
    Undo what the benchmark set up, once, whether it ends normally, fails or
    is interrupted (a reactor 'before shutdown' trigger).
    """

    def __init__(self):
        self.steps = []
        self.done = False
        self.interrupted = False

    def catchInterrupt(self):
        """
        Note Ctrl-C as it arrives: the children get it too and may die before
        the reactor's shutdown starts, failing a measurement in between.
        """
        previous = signal.getsignal(signal.SIGINT)
        if not callable(previous):
            return      # ignored (a background job): leave it so

        def interrupted(*args):
            self.interrupted = True
            previous(*args)
        signal.signal(signal.SIGINT, interrupted)

    def add(self, what, step):
        self.steps.append((what, step))

    @defer.inlineCallbacks
    def run(self):
        if self.done:
            return
        self.done = True
        for what, step in reversed(self.steps):
            try:
                yield step()
            except Exception as e:
                print(f"cleanup: {what} failed: {e}", file=sys.stderr)
        if self.interrupted:
            print("interrupted: twistd, Chromium and the exchange are cleaned up", file=sys.stderr)


@defer.inlineCallbacks
def startRig(reactor, arguments, cleanup, label, env=None):
    """
    What the dashboard benchmarks run against, each part undone by
    C{cleanup}: a real web role on its own exchange, the fleet publishing to
    it, and Chromium.

    @return: a L{Deferred} of C{(exchange, port, server, publisher, driver)}.
    """
    exchange = uniqueName("resmon.bench")
    port = freePort()
    amqp = yield PlainAMQPClient(arguments.broker).connect()
    cleanup.add("closing the AMQP client", amqp.close)
    yield amqp.declareExchange(exchange)
    cleanup.add(f"deleting exchange {exchange}", lambda: amqp.cleanUp(exchanges=[exchange]))
    server = TwistdProcess(label, [
        "--role=web", f"--broker={arguments.broker}", f"--exchange={exchange}",
        f"--port={port}", "--interface=127.0.0.1"], env=env).start()
    cleanup.add("stopping twistd", server.stop)
    yield server.waitForOutput(b"dashboard listening")
    yield server.waitForOutput(b"consuming #.analysis")
    publisher = FleetPublisher(amqp, exchange, arguments.hosts, reactor)
    publisher.start()
    cleanup.add("stopping the publisher", lambda: defer.succeed(publisher.stop()))
    driver = yield threads.deferToThread(startBrowser)
    cleanup.add("closing Chromium", lambda: threads.deferToThread(quitBrowser, driver))
    return exchange, port, server, publisher, driver


@defer.inlineCallbacks
def main(reactor, arguments, cleanup):
    reactor.callWhenRunning(cleanup.catchInterrupt)   # after the reactor's own SIGINT handler
    reactor.addSystemEventTrigger("before", "shutdown", cleanup.run)
    try:
        exchange, port, server, publisher, driver = yield startRig(
            reactor, arguments, cleanup, "bench-dashboard-web")
        print(f"twistd --role=web on port {port} (log: {server.logPath}); publishing "
              f"{arguments.hosts} hosts on exchange {exchange}", flush=True)
        results = []
        for sort in ("name", "cpu"):
            print(f"sort by {sort}: {arguments.warmup:g} s warm-up, {arguments.measure:g} s measured...",
                  flush=True)
            result = yield measureRun(reactor, driver, server, publisher, port, sort,
                                      arguments.warmup, arguments.measure)
            if cleanup.interrupted:
                raise SystemExit(130)
            results.append(result)
        printTable(results, arguments.hosts, arguments.warmup, arguments.measure)
        print(f"publisher at most {publisher.behind * 1000:.0f} ms behind its schedule")
        if b"stopped reading" in server.output:
            print("the server disconnected the page for not reading (see its log)")
    except Exception:
        if not cleanup.interrupted:
            raise
        # Interrupted: what failed since (a child gone, the browser closed) is moot.
    finally:
        yield cleanup.run()
    if cleanup.interrupted:
        raise SystemExit(130)


def missingPrerequisite(broker):
    reason = brokerUnreachableReason(broker)
    if reason is not None:
        return (reason.split(". ")[0] + ". Start one with 'rabbitmq-server -detached' (apt-get install "
                "-y rabbitmq-server), or pass --broker amqp://user:pass@host:port/vhost.")
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.path.exists(path):
            return (f"{path} not found: this benchmark needs Debian's chromium and chromium-driver "
                    "(apt-get install -y chromium chromium-driver)")
    for module in ("selenium", "psutil"):
        try:
            __import__(module)
        except ImportError:
            return f"Python module {module} not found: pip install {module}"
    return None


def runChecked(main, arguments, script):
    """
    Run C{main(reactor, arguments, cleanup)} once the prerequisites are
    there (else exit 2 saying which one is missing), exiting 130 when
    interrupted while waiting.
    """
    problem = missingPrerequisite(arguments.broker)
    if problem:
        print(f"bench/{script}: {problem}", file=sys.stderr)
        sys.exit(2)
    cleanup = Cleanup()
    try:
        task.react(main, (arguments, cleanup))
    except SystemExit as e:
        # Interrupted while waiting, main never returns and react would exit 0.
        if cleanup.interrupted and not e.code:
            sys.exit(130)
        raise


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--broker", default=brokerURL(), help="default: $RESMON_TEST_BROKER or local guest")
    parser.add_argument("--hosts", type=int, default=500, help="hosts, each publishing once a second")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds after the page opens")
    parser.add_argument("--measure", type=float, default=20.0, help="seconds measured, per sort")
    runChecked(main, parser.parse_args(), "dashboard_load.py")
