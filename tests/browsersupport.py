"""
The browser tests' parts: Debian's headless Chromium through chromedriver
(the C{browser} fixture), real twistd processes (C{processes}), and what the
tests read off the page. Fixtures are registered by conftest.py
(C{pytest_plugins}); the helpers are imported from here.
"""

import contextlib
import http.server
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.error

import pytest

from support import LOG_DIR, TWISTD, catchesSIGTERM, freePort, uniqueName


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
ARTIFACTS = os.path.dirname(LOG_DIR)


class Process:
    """
    A twistd child for a synchronous test: output to a log file, waited on
    by polling the file with a deadline.
    """

    problem = None

    def __init__(self, label, *args):
        self.label = label
        os.makedirs(LOG_DIR, exist_ok=True)
        self.logPath = os.path.join(LOG_DIR, f"{label}-{uniqueName('b')[-6:]}.log")
        self._log = open(self.logPath, "wb")
        self.popen = subprocess.Popen(
            [TWISTD, "-n", "--pidfile=", "resmon", *args],
            stdout=self._log, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1"))

    def output(self):
        with open(self.logPath, "rb") as f:
            return f.read()

    def waitFor(self, text, timeout=15):
        deadline = time.monotonic() + timeout
        while text not in self.output():
            assert self.popen.poll() is None, f"exited early, see {self.logPath}"
            assert time.monotonic() < deadline, f"no {text!r} in {self.logPath} after {timeout} s"
            time.sleep(0.05)

    uncleanExitExpected = False

    def expectUncleanExit(self):
        """
        The test kills this process on purpose: the C{processes} fixture
        will not fail the test for how it ends.
        """
        self.uncleanExitExpected = True
        return self

    def stop(self, timeout=10):
        """
        SIGTERM (SIGKILL if it hangs), and judge how the process ended.

        @return: L{None} if it shut down cleanly (twistd logs "Server Shut
            Down." and re-raises SIGTERM), else what went wrong, with the
            log's path and last lines. Kept as C{self.problem}.
        """
        hung = False
        if self.popen.poll() is None:
            # A SIGTERM before twistd's reactor runs kills it without a shutdown.
            deadline = time.monotonic() + timeout
            while (self.popen.poll() is None and not catchesSIGTERM(self.popen.pid)
                   and time.monotonic() < deadline):
                time.sleep(0.02)
            stoppedAt = len(self.output())
            self.popen.terminate()
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                hung = True
                self.popen.kill()
                self.popen.wait()
        else:
            stoppedAt = None
        self._log.close()
        if self.problem is not None or self.uncleanExitExpected:
            return self.problem
        output = self.output()
        code = self.popen.returncode
        if hung:
            self.problem = f"hung: still running {timeout} s after SIGTERM, killed"
        elif b"Server Shut Down." not in output or code not in (0, -signal.SIGTERM):
            self.problem = f"ended without a clean shutdown (return code {code})"
        elif stoppedAt is not None and (b"Traceback (most recent call last)" in output[stoppedAt:]
                                        or b"Unhandled error" in output[stoppedAt:]):
            self.problem = "logged an error while shutting down"
        if self.problem is not None:
            tail = b"\n".join(output.splitlines()[-40:]).decode("utf-8", "replace")
            self.problem = (f"twistd process {self.label!r} {self.problem}; log: {self.logPath}\n"
                            f"--- last 40 lines ---\n{tail}")
        return self.problem


@pytest.fixture
def processes():
    """
    Starts real twistd processes; at the end, stops those still running and
    fails the test if any did not shut down cleanly (unless the test called
    its C{expectUncleanExit()}).
    """
    started = []

    def start(label, *args):
        process = Process(label, *args)
        started.append(process)
        return process
    yield start
    problems = [process.stop() for process in started]
    problems = [problem for problem in problems if problem is not None]
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


def startedServer(processes, label, broker, amqp, *args, role="server"):
    """
    A C{--role=server} on the test's exchange and queue (or a C{--role=web} on
    its exchange), with a dashboard on a free local port, once it serves and
    consumes.

    @return: the process, its port, and the broker arguments for agents.
    """
    port = freePort()
    common = [f"--broker={broker}", f"--exchange={amqp.names['exchange']}"]
    queue = [f"--queue={amqp.names['queue']}"] if role == "server" else []
    server = processes(label, f"--role={role}", *common, *args, *queue, f"--port={port}",
                       "--interface=127.0.0.1")
    server.waitFor(b"dashboard listening")
    server.waitFor(b"consuming #.measure" if role == "server" else b"consuming #.analysis")
    return server, port, common


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.fail("the browser tests need Debian's chromium and chromium-driver: "
                    "apt-get install -y chromium chromium-driver", pytrace=False)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="resmon-chromium-")
    for argument in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-background-networking", "--disable-component-update",
                     "--disable-sync", "--no-first-run", "--window-size=1280,800",
                     f"--user-data-dir={profile}"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(20)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


@contextlib.contextmanager
def servedInThread(handlerClass):
    """
    A plain HTTP server on loopback with C{handlerClass}, in a thread (a page
    or a webhook receiver the browser or the server talks to), shut down
    after the block.
    """
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handlerClass)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.baseURL = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def waitUntil(condition, timeout, what):
    """
    Poll C{condition} until it returns something true, for C{timeout}
    seconds. Only what a page or server still loading raises counts as
    "not yet" (an element not there yet or replaced, a script reading an
    element not there yet, an API 404); anything else fails at once.
    """
    from selenium.common.exceptions import (
        JavascriptException, NoSuchElementException, StaleElementReferenceException)
    notYet = (JavascriptException, NoSuchElementException, StaleElementReferenceException,
              urllib.error.URLError)
    deadline = time.monotonic() + timeout
    lastError = None
    while True:
        try:
            result = condition()
        except notYet as e:
            result, lastError = None, e
        if result:
            return result
        assert time.monotonic() < deadline, (
            f"timed out after {timeout} s waiting for {what}"
            + (f" (last error: {lastError!r})" if lastError is not None else ""))
        time.sleep(0.05)


def cardText(driver, host, selector):
    return driver.execute_script(
        "const c = document.querySelector(`.host-card[data-host='${arguments[0]}']`);"
        "const e = c && c.querySelector(arguments[1]); return e ? e.textContent : null;",
        host, selector)


# The hosts whose cards a person sees in the viewport, in reading order (the grid keeps
# cards only in and near the viewport, placed by transforms: the DOM order is not the answer).
IN_VIEW = """
const inView = () => {
  const out = [];
  for (const c of document.querySelectorAll('#hosts .host-card')) {
    const r = c.getBoundingClientRect();
    if (c.hidden || r.height === 0 || r.bottom <= 0 || r.top >= innerHeight) continue;
    out.push([Math.round(r.top), Math.round(r.left), c.dataset.host]);
  }
  out.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  return out.map((x) => x[2]);
};
"""


def hostsInView(driver):
    return driver.execute_script(IN_VIEW + "return inView();")


def recordOrderInView(driver):
    """
    From now on, note when the hosts in view change (which cards, or their
    order; C{orderChanges(driver)} returns when, in ms) and when only the
    values they show change (C{window.__view.values}). Checked as the page
    changes the grid (a mutation observer runs right after the frame that
    changed it), so each change is timed when it is made, not a frame later.
    """
    driver.execute_script(IN_VIEW + """
        const grid = document.getElementById('hosts');
        const cpu = () => [...grid.querySelectorAll('.host-card .cpu-value')].map((e) => e.textContent).join(' ');
        const view = window.__view = { orders: [], values: [] };
        let lastOrder = inView().join(' '), lastValues = cpu();
        if (window.__viewObserver) window.__viewObserver.disconnect();
        window.__viewObserver = new MutationObserver(() => {
          // The time first: reading the cards' places lays the page out, which takes longest
          // (tens of ms on a loaded machine) right after a re-order.
          const now = performance.now();
          const order = inView().join(' '), values = cpu();
          if (order !== lastOrder) view.orders.push(now);
          else if (values !== lastValues) view.values.push(now);
          lastOrder = order;
          lastValues = values;
        }).observe(grid, { subtree: true, childList: true, attributes: true, characterData: true });""")


def orderChanges(driver):
    return driver.execute_script("return window.__view.orders")


def scrollToCard(driver, host, fraction=0.0):
    """
    Scroll as a person looking for host's card would: from C{fraction} of
    the page's height, a screen at a time down, then up; the card found is
    scrolled to the middle of the viewport.

    @return: whether the card was found.
    """
    return driver.execute_async_script("""
        const [host, fraction, done] = arguments;
        const card = () => document.querySelector(`#hosts .host-card[data-host='${host}']`);
        const frames = () => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
        const max = () => document.documentElement.scrollHeight - innerHeight;
        (async () => {
          const start = Math.round(fraction * max());
          for (const step of [0.75 * innerHeight, -0.75 * innerHeight]) {
            window.scrollTo(0, start);
            await frames();
            while (!card()) {
              const before = scrollY;
              window.scrollBy(0, step);
              await frames();
              if (scrollY === before) break;
            }
            if (card()) {
              card().scrollIntoView({ block: "center" });
              await frames();
              return done(true);
            }
          }
          done(false);
        })();""", host, fraction)


def visibleHosts(driver):
    return driver.execute_script(
        "return [...document.querySelectorAll('.host-card')]"
        ".filter(c => !c.hidden && c.offsetParent !== null).map(c => c.dataset.host);")


def httpRequests(process):
    """
    The GETs the server logged, but the favicon's: the browser fetches that
    on its own once the page has loaded, a moment after C{driver.get}
    returns (not a request of the page's, and no telling when).
    """
    return [path for path in re.findall(rb'"GET ([^ ]+) HTTP/1\.1"', process.output())
            if path != b"/favicon.svg"]


def assertPushOnly(browser, server, loaded):
    """
    Since C{loaded} requests, the server got no HTTP request and the page
    fetched nothing from the API: everything came over the WebSocket.
    """
    assert len(httpRequests(server)) == loaded, httpRequests(server)[loaded:]
    resources = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)")
    assert all(not re.search(r"/api/", name) for name in resources), resources


def pastAnalysis(host, seq, ts, cpu):
    return {
        "v": 1, "kind": "analysis", "host": host, "seq": seq, "ts": ts, "interval": 1.0,
        "analyzed_at": ts + 0.01, "level": "LOW", "levels": {"cpu": "LOW", "memory": "LOW"},
        "cpu_result": "LOW",
        "metrics": {
            "cpu": {"percent": cpu, "per_core": [cpu, 100 - cpu, 50.0, 10.0]},
            "memory": {"total": 100, "used": 30, "available": 70, "percent": 30.0},
            "load": [0.5, 0.4, 0.3],
            "disks": [{"mount": "/", "percent": 70.0}, {"mount": "/var", "percent": 40.0}],
            "net_io": {"bytes_sent_per_s": 1000.0 + seq, "bytes_recv_per_s": 5000.0 + seq,
                       "packets_sent_per_s": 1.0, "packets_recv_per_s": 2.0},
        },
    }


_PUBLISHER = """
import json, sys
from twisted.internet import defer, task
from support import PlainAMQPClient

async def main(reactor, url, exchange):
    client = await defer.ensureDeferred(_connect(url))
    for line in sys.stdin:
        item = json.loads(line)
        if isinstance(item, (int, float)):  # a pause, in seconds
            await task.deferLater(reactor, item)
            continue
        routingKey, document = item
        await client.publish(exchange, routingKey, json.dumps(document).encode())
    await client.close()

async def _connect(url):
    return await PlainAMQPClient(url).connect()

task.react(lambda reactor: defer.ensureDeferred(main(reactor, *sys.argv[1:])))
"""


def publish(broker, exchange, messages):
    """
    Publish C{(routingKey, document)} pairs on the real broker, from a child
    process: this test's thread is busy with the browser, not the reactor. A
    number among the messages is a pause of that many seconds.
    """
    import json
    import sys
    lines = "".join(json.dumps(message) + "\n" for message in messages)
    subprocess.run([sys.executable, "-c", _PUBLISHER, broker, exchange], input=lines, text=True,
                   check=True, timeout=30, cwd=os.path.dirname(__file__))


def startPublishing(broker, exchange, messages):
    """
    Like L{publish}, but return at once: the child process publishes the
    messages (and pauses) as the test goes on; wait on the returned
    C{Popen}.
    """
    import json
    import sys
    # From a file: a pipe would hold the test up until the paced stream is nearly sent.
    stream = tempfile.TemporaryFile("w+")
    stream.write("".join(json.dumps(message) + "\n" for message in messages))
    stream.seek(0)
    try:
        return subprocess.Popen([sys.executable, "-c", _PUBLISHER, broker, exchange],
                                stdin=stream, text=True, cwd=os.path.dirname(__file__))
    finally:
        stream.close()


def getJSON(port, path):
    import json
    import urllib.request
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return json.load(response)


def sparklinePoints(driver, host, column="cpu"):
    points = driver.execute_script(
        "const e = document.querySelector(`.host-card[data-host='${arguments[0]}'] .spark-${arguments[1]}`);"
        "return e ? e.getAttribute('points') : null;", host, column)
    return len(points.split()) if points else 0


def chartSegments(driver, chart):
    """
    The number of points drawn in the lines of one detail chart.
    """
    return driver.execute_script(
        "return [...document.querySelectorAll(`#${arguments[0]} path`)]"
        ".map(p => (p.getAttribute('d').match(/[ML]/g) || []).length);", chart)


def hostCount(driver):
    """The hosts the top bar counts (the grid holds cards only for those in view)."""
    return int(driver.find_element("id", "count-total").text)


def cardCount(driver):
    return driver.execute_script("return document.querySelectorAll('.host-card').length")
