"""
Dashboard frames at fleet size: a real `twistd resmon --role=web` fed analyses of 2,000 hosts, each once
a second, the dashboard open in headless Chromium sorted by CPU; frame intervals and long tasks measured in
the page, first at rest at the top of the grid, then scrolling through the fleet.

Usage: python bench/dashboard_frames.py [--broker URL] [--hosts 2000] [--sort cpu] [--warmup S]
       [--measure S] [--source DIR]
--source runs the web role (and so serves the dashboard) from another checkout of resmon, e.g. a git
worktree of an older commit, to compare before and after with the same publisher and probe.
Needs what bench/dashboard_load.py needs (RabbitMQ, selenium, psutil, chromium, chromium-driver).
"""

import argparse
import os

from twisted.internet import defer, task, threads

from dashboard_load import (
    HEIGHT, WIDTH, browserMetrics, percentile, runChecked, startRig)
from support import brokerURL

# Added to dashboard_load's probe: what a person sees move. Every 100 ms, the hosts of the cards in the
# viewport in reading order; a change while the page is not scrolled is a re-order.
ORDER_PROBE = r"""
(() => {
  const b = window.__bench;
  b.orderChanges = [];
  b.lastOrder = null;
  b.scrolling = false;
  const inView = () => {
    const grid = document.getElementById("hosts");
    const out = [];
    for (const c of grid.querySelectorAll(".host-card")) {
      if (c.hidden) continue;
      const r = c.getBoundingClientRect();
      if (r.height === 0 || r.bottom <= 0 || r.top >= innerHeight) continue;
      out.push([Math.round(r.top), Math.round(r.left), c.dataset.host]);
    }
    out.sort((x, y) => x[0] - y[0] || x[1] - y[1]);
    return out.map((x) => x[2]).join(" ");
  };
  b.inView = inView;
  setInterval(() => {
    if (!b.measuring || b.scrolling) { b.lastOrder = null; return; }
    const order = inView();
    if (b.lastOrder !== null && order !== b.lastOrder) b.orderChanges.push(performance.now());
    b.lastOrder = order;
  }, 100);
  // Scroll the page by step pixels a frame, down to the end of the grid and back up.
  b.scroll = (step) => {
    b.scrolling = true;
    let dir = 1;
    const raf = b.nativeRaf;
    const move = () => {
      if (!b.scrolling) return;
      const max = document.documentElement.scrollHeight - innerHeight;
      if (scrollY >= max - 1) dir = -1; else if (scrollY <= 0) dir = 1;
      window.scrollBy(0, dir * step);
      raf(move);
    };
    raf(move);
  };
  b.stopScroll = () => { b.scrolling = false; window.scrollTo(0, 0); };
})();
"""

# dashboard_load's probe wraps requestAnimationFrame to time the dashboard's callbacks; keep the native one.
KEEP_RAF = "window.__nativeRaf = window.requestAnimationFrame.bind(window);"


def openDashboard(driver, port, sort):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    driver.get(f"http://127.0.0.1:{port}/")
    Select(driver.find_element(By.ID, "sort")).select_by_value(sort)
    driver.execute_script(ORDER_PROBE.replace("b.nativeRaf", "window.__nativeRaf"))


def pageFacts(driver):
    return driver.execute_script(
        "return { cards: document.querySelectorAll('.host-card').length,"
        " shown: document.querySelectorAll('.host-card:not([hidden])').length,"
        " nodes: document.getElementsByTagName('*').length,"
        " height: document.documentElement.scrollHeight,"
        " snapshots: window.__bench.snapshots, sort: document.getElementById('sort').value };")


@defer.inlineCallbacks
def measurePhase(reactor, driver, publisher, seconds, scrollStep):
    yield threads.deferToThread(driver.execute_script, "window.__bench.begin()")
    before = yield threads.deferToThread(browserMetrics, driver)
    published0 = publisher.published
    if scrollStep:
        yield threads.deferToThread(driver.execute_script, f"window.__bench.scroll({scrollStep})")
    try:
        yield task.deferLater(reactor, seconds, lambda: None)
    finally:
        cards = yield threads.deferToThread(
            driver.execute_script, "return document.querySelectorAll('.host-card').length")
        page = yield threads.deferToThread(
            driver.execute_script,
            "const r = window.__bench.end(); r.orderChanges = window.__bench.orderChanges.slice();"
            "window.__bench.orderChanges = []; window.__bench.stopScroll(); return r;")
    after = yield threads.deferToThread(browserMetrics, driver)
    span = page["seconds"]
    frames = page["frames"]
    tasks = page["longTasks"] if page["longtask"] else [d for d in page["drift"] if d > 50]
    changes = page["orderChanges"]
    gaps = [b - a for a, b in zip(changes, changes[1:])]
    return {
        "seconds": span,
        "published/s": (publisher.published - published0) / span,
        "fps": len(frames) / span,
        "frame p50": percentile(frames, 0.50),
        "frame p99": percentile(frames, 0.99),
        "frame max": max(frames) if frames else float("nan"),
        "frames > 50 ms": sum(1 for f in frames if f > 50.0),
        "long tasks": len(tasks),
        "long tasks ms": sum(tasks),
        "longest task": max(tasks) if tasks else 0.0,
        "order changes": len(changes),
        "closest changes": min(gaps) if gaps else float("nan"),
        "cards": cards,
        "main busy %": (after["TaskDuration"] - before["TaskDuration"]) / span * 100,
        "script %": (after["ScriptDuration"] - before["ScriptDuration"]) / span * 100,
        "style %": (after["RecalcStyleDuration"] - before["RecalcStyleDuration"]) / span * 100,
        "layout %": (after["LayoutDuration"] - before["LayoutDuration"]) / span * 100,
        "app frame avg": page["appFrameMs"] / max(1, page["appFrames"]),
        "app frame max": page["appFrameMax"],
    }


ROWS = [
    ("seconds", "seconds measured in the page", "{:.1f}"),
    ("published/s", "analyses published per second", "{:.0f}"),
    ("cards", "cards in the DOM at the end", "{:d}"),
    ("fps", "frames per second", "{:.1f}"),
    ("frame p50", "frame interval p50 (ms)", "{:.1f}"),
    ("frame p99", "frame interval p99 (ms)", "{:.1f}"),
    ("frame max", "frame interval max (ms)", "{:.1f}"),
    ("frames > 50 ms", "frames longer than 50 ms", "{:d}"),
    ("long tasks", "long tasks (> 50 ms)", "{:d}"),
    ("long tasks ms", "  their total duration (ms)", "{:.0f}"),
    ("longest task", "  longest (ms)", "{:.0f}"),
    ("order changes", "order changes seen in view (100 ms probe)", "{:d}"),
    ("closest changes", "  closest two (ms)", "{:.0f}"),
    ("main busy %", "page main thread busy (% of time, CDP)", "{:.0f}"),
    ("script %", "  of which script (%)", "{:.0f}"),
    ("style %", "  of which style recalc (%)", "{:.0f}"),
    ("layout %", "  of which layout (%)", "{:.0f}"),
    ("app frame avg", "dashboard frame() mean (ms)", "{:.2f}"),
    ("app frame max", "dashboard frame() longest (ms)", "{:.1f}"),
]


def printTable(arguments, facts, results):
    print(f"\n{arguments.hosts} hosts, one analysis each per second, sorted by {facts['sort']}; dashboard at "
          f"{WIDTH}x{HEIGHT} in headless Chromium; {arguments.warmup:g} s warm-up, {arguments.measure:g} s "
          f"per phase; {os.cpu_count()} CPUs; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"served from {arguments.source or 'this checkout'}; first snapshot "
          f"{facts['snapshots'][0]['hosts']} hosts, {facts['snapshots'][0]['bytes'] / 1024:.0f} KiB; "
          f"{facts['nodes']} DOM elements, page {facts['height']} px high")
    width = max(len(label) for _, label, _ in ROWS) + 2
    print(" " * width + "".join(f"{name:>12}" for name in results))
    for key, label, fmt in ROWS:
        print(f"{label:<{width}}" + "".join(f"{fmt.format(r[key]):>12}" for r in results.values()))


@defer.inlineCallbacks
def main(reactor, arguments, cleanup):
    reactor.callWhenRunning(cleanup.catchInterrupt)
    reactor.addSystemEventTrigger("before", "shutdown", cleanup.run)
    try:
        env = {"PYTHONPATH": os.path.abspath(arguments.source)} if arguments.source else None
        exchange, port, server, publisher, driver = yield startRig(
            reactor, arguments, cleanup, "bench-dashboard-frames", env)
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": KEEP_RAF})
        print(f"twistd --role=web on port {port} (log: {server.logPath}); publishing "
              f"{arguments.hosts} hosts on exchange {exchange}", flush=True)
        # Two rounds of the fleet first: the page's snapshot then holds every host.
        while publisher.published < 2 * len(publisher.hosts):
            yield task.deferLater(reactor, 0.1, lambda: None)
        yield threads.deferToThread(openDashboard, driver, port, arguments.sort)
        # The warm-up starts with the snapshot in the page (a busy machine delays it by seconds).
        deadline = reactor.seconds() + 60
        while not (yield threads.deferToThread(driver.execute_script, "return window.__bench.snapshots.length")):
            if reactor.seconds() > deadline:
                raise AssertionError(f"no snapshot in the page within 60 s (server log: {server.logPath})")
            yield task.deferLater(reactor, 0.2, lambda: None)
        yield task.deferLater(reactor, arguments.warmup, lambda: None)
        facts = yield threads.deferToThread(pageFacts, driver)
        if not facts["snapshots"] or facts["snapshots"][0]["hosts"] != arguments.hosts:
            raise AssertionError(f"the page's first snapshot should hold all {arguments.hosts} hosts, not "
                                 f"{facts['snapshots'][0]['hosts']} (server log: {server.logPath})")
        results = {}
        for name, step in (("at rest", 0), ("scrolling", arguments.scroll_step)):
            print(f"{name}: {arguments.measure:g} s measured...", flush=True)
            results[name] = yield measurePhase(reactor, driver, publisher, arguments.measure, step)
            if cleanup.interrupted:
                raise SystemExit(130)
        printTable(arguments, facts, results)
        print(f"publisher at most {publisher.behind * 1000:.0f} ms behind its schedule")
    except Exception:
        if not cleanup.interrupted:
            raise
    finally:
        yield cleanup.run()
    if cleanup.interrupted:
        raise SystemExit(130)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--broker", default=brokerURL(), help="default: $RESMON_TEST_BROKER or local guest")
    parser.add_argument("--hosts", type=int, default=2000, help="hosts, each publishing once a second")
    parser.add_argument("--sort", default="cpu", choices=("name", "cpu", "memory"))
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds after the page opens")
    parser.add_argument("--measure", type=float, default=15.0, help="seconds measured, per phase")
    parser.add_argument("--scroll-step", type=int, default=40, help="pixels scrolled a frame")
    parser.add_argument("--source", default=None, help="a resmon checkout to serve the dashboard from")
    runChecked(main, parser.parse_args(), "dashboard_frames.py")
