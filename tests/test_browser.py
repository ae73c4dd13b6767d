"""
The dashboard in a real browser (Debian's headless Chromium through
chromedriver), served by real twistd processes with real agents on the real
broker.
"""

import os
import time

from browsersupport import (
    ARTIFACTS, assertPushOnly, cardCount, cardText, chartSegments, getJSON, hostCount,
    httpRequests, orderChanges, pastAnalysis, publish, recordOrderInView, scrollToCard,
    sparklinePoints, startedServer, startPublishing, visibleHosts, waitUntil)
from support import freePort


def test_dashboard_is_live_filters_opens_details_and_never_polls(broker, amqp, processes, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    server, port, common = startedServer(processes, "browser-server", broker, amqp)
    processes("browser-agent-a", "--role=agent", *common, "--name=alpha.example", "--interval=0.5")
    browser.get(f"http://127.0.0.1:{port}/")
    waitUntil(lambda: "live" in browser.find_element(By.ID, "connection").text, 10, "the page to go live")
    waitUntil(lambda: cardText(browser, "alpha.example", ".cpu-value") not in (None, "–"), 10,
              "alpha's card")
    loaded = len(httpRequests(server))

    # A host that starts later appears without a reload.
    processes("browser-agent-b", "--role=agent", *common, "--name=beta.example", "--interval=0.5")
    waitUntil(lambda: cardText(browser, "beta.example", ".cpu-value") not in (None, "–"), 10,
              "beta's card to appear without reload")

    # Values change without reload: the age and the numbers are pushed.
    first = cardText(browser, "alpha.example", ".host-name")
    assert first == "alpha.example"
    for selector in (".cpu-level", ".mem-level"):
        assert cardText(browser, "alpha.example", selector) in ("LOW", "MEDIUM", "HIGH")
    assert cardText(browser, "alpha.example", ".load-value") not in (None, "–")
    cores = browser.execute_script(
        "return document.querySelectorAll(`.host-card[data-host='alpha.example'] .cores .core`).length")
    assert cores == os.cpu_count()
    sparklines = set()

    def sparklineChangedTwice():
        sparklines.add(browser.execute_script(
            "return document.querySelector(`.host-card[data-host='alpha.example'] .spark-cpu`)"
            ".getAttribute('points')"))
        return len(sparklines) >= 3
    waitUntil(sparklineChangedTwice, 10, "the sparkline to change twice")

    # The filter.
    search = browser.find_element(By.ID, "filter")
    search.send_keys("beta")
    waitUntil(lambda: visibleHosts(browser) == ["beta.example"], 5, "the filter to keep only beta")
    for _ in "beta":
        search.send_keys(Keys.BACKSPACE)
    waitUntil(lambda: sorted(visibleHosts(browser)) == ["alpha.example", "beta.example"], 5,
              "both hosts after clearing the filter")

    # The detail view, from the keyboard.
    card = browser.find_element(By.CSS_SELECTOR, ".host-card[data-host='alpha.example']")
    card.send_keys(Keys.ENTER)
    detail = browser.find_element(By.ID, "detail")
    waitUntil(lambda: detail.get_attribute("hidden") is None, 5, "the detail view to open")
    assert "alpha.example" in browser.find_element(By.ID, "detail-title").text
    waitUntil(lambda: browser.execute_script(
        "return document.querySelectorAll('#chart-cpu *, #chart-mem *').length") > 0, 5,
        "the detail charts")
    os.makedirs(ARTIFACTS, exist_ok=True)
    browser.save_screenshot(os.path.join(ARTIFACTS, "dashboard-detail.png"))
    browser.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)
    waitUntil(lambda: detail.get_attribute("hidden") is not None, 5, "Esc to close the detail view")
    browser.save_screenshot(os.path.join(ARTIFACTS, "dashboard.png"))

    # Push only: after the page loaded, not one more HTTP request reached the server.
    assertPushOnly(browser, server, loaded)


def test_dashboard_says_when_the_connection_drops_and_reconnects(processes, browser):
    from selenium.webdriver.common.by import By

    port = freePort()
    args = [f"--port={port}", "--interface=127.0.0.1", "--name=solo", "--interval=0.5"]
    standalone = processes("browser-standalone", *args)
    standalone.waitFor(b"dashboard listening")
    browser.get(f"http://127.0.0.1:{port}/")
    connection = browser.find_element(By.ID, "connection")
    waitUntil(lambda: "live" in connection.text, 10, "the page to go live")
    standalone.stop()
    waitUntil(lambda: "live" not in connection.text, 10, "the page to say the connection dropped")
    assert connection.get_attribute("data-state") != "live"
    processes("browser-standalone-again", *args).waitFor(b"dashboard listening")
    waitUntil(lambda: "live" in connection.text, 20, "the page to reconnect by itself")
    waitUntil(lambda: cardText(browser, "solo", ".cpu-value") not in (None, "–"), 10, "fresh data")


def test_a_page_opened_late_shows_the_last_minutes_at_once_and_details_from_the_history_reply(
        broker, amqp, processes, browser):
    from selenium.webdriver.common.by import By

    exchange = amqp.names["exchange"]
    server, port, common = startedServer(processes, "browser-late-server", broker, amqp)
    processes("browser-late-agent", "--role=agent", *common, "--name=early.example", "--interval=0.2")
    # Five minutes of a host's past, as its analyses would have come (one a second), and then
    # its going offline: only the server's history can show them to a page opened now.
    now = time.time()
    offline = {"v": 1, "kind": "status", "host": "past.example", "status": "offline",
               "since": now, "last_seen": now, "seq": 299}
    publish(broker, exchange, [
        ("past_example.analysis", pastAnalysis("past.example", seq, now - 299 + seq, float(seq % 100)))
        for seq in range(300)] + [("past_example.status", offline)])
    waitUntil(lambda: len(getJSON(port, "/api/hosts/past.example/history")["points"]) == 300, 10,
              "the past host's 300 points in the server's history")
    # The agent runs for about 4 s (20 analyses) before the page opens.
    waitUntil(lambda: len(getJSON(port, "/api/hosts/early.example/history")["points"]) >= 20, 15,
              "20 analyses of the agent")

    browser.get(f"http://127.0.0.1:{port}/")
    loadedAt = time.monotonic()
    # At once: the past host never sends again, so every point of its sparklines came with
    # the snapshot (five minutes at one point per 10 s: about 30).
    waitUntil(lambda: sparklinePoints(browser, "past.example") >= 10
              and sparklinePoints(browser, "past.example", "mem") >= 10, 2,
              "the past host's sparklines filled from the snapshot within 2 s of load")
    assert time.monotonic() - loadedAt < 2
    assert sparklinePoints(browser, "past.example") <= 32  # the overview, not every point
    assert sparklinePoints(browser, "early.example") >= 1
    # Its offline status came in the snapshot's statuses: shown as a badge, not only a colour.
    assert cardText(browser, "past.example", ".status-badge") == "OFFLINE"
    assert browser.execute_script(
        "return document.querySelector(`.host-card[data-host='past.example']`).dataset.status") == "offline"
    waitUntil(lambda: "live" in browser.find_element(By.ID, "connection").text, 5, "the page to go live")
    loaded = len(httpRequests(server))

    # The detail view asks for the host's full points over the WebSocket: the per-core, disk and
    # network charts (absent from the overview) span the five minutes.
    detail = browser.find_element(By.ID, "detail")
    assert chartSegments(browser, "chart-cores") == []
    browser.find_element(By.CSS_SELECTOR, ".host-card[data-host='past.example']").click()
    waitUntil(lambda: detail.get_attribute("data-history") == "full", 5, "the history reply")
    cores = chartSegments(browser, "chart-cores")
    assert len(cores) == 4 and min(cores) >= 290, cores
    assert [n >= 290 for n in chartSegments(browser, "chart-net")] == [True, True]
    assert chartSegments(browser, "chart-disk")[0] >= 290
    assert chartSegments(browser, "chart-cpu")[0] >= 290
    assert browser.execute_script(
        "return [...document.querySelectorAll('#chart-cpu text')].map(t => t.textContent)").count("−5 min") == 1
    os.makedirs(ARTIFACTS, exist_ok=True)
    browser.save_screenshot(os.path.join(ARTIFACTS, "dashboard-history-detail.png"))
    browser.find_element(By.ID, "detail-close").click()

    # The live host's detail: its full points, then live ones appended.
    browser.find_element(By.CSS_SELECTOR, ".host-card[data-host='early.example']").click()
    waitUntil(lambda: detail.get_attribute("data-history") == "full", 5, "the live host's history reply")
    first = chartSegments(browser, "chart-cpu")[0]
    assert first >= 20
    waitUntil(lambda: chartSegments(browser, "chart-cpu")[0] >= first + 5, 10, "live points after the history")
    assert chartSegments(browser, "chart-cores")[0] >= first

    # Push only: not one HTTP request after the page loaded.
    assertPushOnly(browser, server, loaded)


def test_dashboard_fits_a_phone_and_is_reachable_from_the_keyboard(processes, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    port = freePort()
    standalone = processes("browser-phone", f"--port={port}", "--interface=127.0.0.1",
                           "--name=a-rather-long-host-name.example.com", "--interval=0.5")
    standalone.waitFor(b"dashboard listening")
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True})
    browser.get(f"http://127.0.0.1:{port}/")
    host = "a-rather-long-host-name.example.com"
    waitUntil(lambda: cardText(browser, host, ".cpu-value") not in (None, "–"), 10, "the card")
    # Nothing wider than the screen: no sideways scrolling on a phone.
    assert browser.execute_script("return window.innerWidth") == 390
    assert browser.execute_script("return document.documentElement.scrollWidth") <= 390
    cardWidth = browser.execute_script(
        "return document.querySelector('.host-card').getBoundingClientRect().width")
    assert 300 <= cardWidth <= 390, cardWidth
    # Levels are written out, not only coloured.
    assert cardText(browser, host, ".cpu-level") in ("LOW", "MEDIUM", "HIGH")
    os.makedirs(ARTIFACTS, exist_ok=True)
    browser.save_screenshot(os.path.join(ARTIFACTS, "dashboard-phone.png"))
    # Tab reaches the filter and then the card; Enter opens the detail view.
    focused = []
    for _ in range(12):
        browser.switch_to.active_element.send_keys(Keys.TAB)
        element = browser.switch_to.active_element
        focused.append(element.get_attribute("id") or element.get_attribute("class"))
        if "host-card" in (element.get_attribute("class") or ""):
            break
    assert "filter" in focused and "host-card" in focused[-1], focused
    browser.switch_to.active_element.send_keys(Keys.ENTER)
    detail = browser.find_element(By.ID, "detail")
    waitUntil(lambda: detail.get_attribute("hidden") is None, 5, "the detail view from the keyboard")
    browser.save_screenshot(os.path.join(ARTIFACTS, "dashboard-phone-detail.png"))


def test_sorted_by_cpu_a_big_fleet_is_reordered_at_most_once_a_second(broker, amqp, processes, browser):
    """
    With more than 100 hosts whose CPU changes all the time, a value sort moves
    the cards at most once a second: what a person sees in the viewport changes
    order at most once a second.
    """
    import random
    from selenium.webdriver.support.ui import Select

    exchange = amqp.names["exchange"]
    web, port, _ = startedServer(processes, "browser-reorder-web", broker, amqp, role="web")
    browser.get(f"http://127.0.0.1:{port}/")
    Select(browser.find_element("id", "sort")).select_by_value("cpu")

    # 150 hosts, each twice a second for 8 s, spread evenly: a steady stream, as from a fleet.
    rng = random.Random(7)
    hosts = [f"host{n:03d}.example" for n in range(150)]
    stream = []
    start = time.time()
    for tick in range(16 * 15):
        for host in hosts[(tick % 15) * 10:(tick % 15) * 10 + 10]:
            seq = tick // 15
            stream.append((host.replace(".", "_") + ".analysis",
                           pastAnalysis(host, seq, start + tick / 30, rng.uniform(0, 100))))
        stream.append(1 / 30)
    publisher = startPublishing(broker, exchange, stream)
    try:
        waitUntil(lambda: hostCount(browser) == 150, 10, "150 hosts")
        # From now on every change of the hosts in view is a re-order (no new host comes).
        recordOrderInView(browser)
        publisher.wait(20)
    finally:
        publisher.kill()
    assert publisher.returncode == 0
    reorders = orderChanges(browser)
    gaps = [b - a for a, b in zip(reorders, reorders[1:])]
    assert len(reorders) >= 3, reorders
    assert min(gaps) >= 900, gaps
    # A page opened now gets the 150 hosts (about 100 KB, more than a client may send)
    # in its first snapshot: nothing is published any more, so every card comes from it.
    browser.refresh()
    waitUntil(lambda: "live" in browser.find_element("id", "connection").text, 10,
              "the reloaded page to go live")
    # "live" as the snapshot is taken in; the counts are drawn at the next frame.
    waitUntil(lambda: hostCount(browser) == 150, 5, "the snapshot's 150 hosts counted")
    assert scrollToCard(browser, "host149.example", 1.0)
    assert cardText(browser, "host149.example", ".host-name") == "host149.example"


def test_a_page_opened_on_a_fleet_of_1000_hosts_shows_every_host_from_the_snapshot(
        broker, amqp, processes, browser):
    """
    Every host of a 1,000-host fleet on the page, found by scrolling, from
    the first snapshot (nothing is published after the page opens), and a 32-core
    host's full history in its detail view: both messages are far larger
    than what a client may send (64 KiB).
    """
    from selenium.webdriver.common.by import By

    exchange = amqp.names["exchange"]
    web, port, _ = startedServer(processes, "browser-fleet-web", broker, amqp, role="web")
    now = time.time()
    fleet = [f"node{n:04d}.fleet.example" for n in range(1000)]
    messages = [(host.replace(".", "_") + ".analysis", pastAnalysis(host, 1, now - 1, float(n % 97)))
                for n, host in enumerate(fleet)]
    big = "big-iron.example"
    for seq in range(300):
        analysis = pastAnalysis(big, seq, now - 299 + seq, float(seq % 100))
        analysis["metrics"]["cpu"]["per_core"] = [float((seq + c) % 100) for c in range(32)]
        messages.append(("big-iron_example.analysis", analysis))
    publish(broker, exchange, messages)
    # The big host comes last on one queue: with its 300 points the server has every host.
    waitUntil(lambda: len(getJSON(port, f"/api/hosts/{big}/history")["points"]) == 300, 20,
              "the big host's 300 points in the server's history")

    browser.get(f"http://127.0.0.1:{port}/")
    waitUntil(lambda: hostCount(browser) == 1001, 20, "1,001 hosts from the snapshot")
    waitUntil(lambda: "live" in browser.find_element(By.ID, "connection").text, 5, "the page to go live")
    # Sorted by name: the big host first, then the nodes; each card found by scrolling shows its host.
    # (The count may be drawn by the once-a-second tick before the frame draws the cards.)
    waitUntil(lambda: cardText(browser, big, ".cpu-value") == f"{299 % 100:.1f} %", 5,
              "the big host's card")
    assert cardCount(browser) < 100
    assert scrollToCard(browser, "node0500.fleet.example", 0.5)
    assert cardText(browser, "node0500.fleet.example", ".host-name") == "node0500.fleet.example"
    assert cardText(browser, "node0500.fleet.example", ".cpu-value") == f"{500 % 97:.1f} %"
    assert scrollToCard(browser, "node0999.fleet.example", 1.0)
    assert cardText(browser, "node0999.fleet.example", ".cpu-value") == f"{999 % 97:.1f} %"

    detail = browser.find_element(By.ID, "detail")
    assert scrollToCard(browser, big)
    browser.find_element(By.CSS_SELECTOR, f".host-card[data-host='{big}']").click()
    waitUntil(lambda: detail.get_attribute("data-history") == "full", 10, "the big host's history reply")
    cores = chartSegments(browser, "chart-cores")
    assert len(cores) == 32 and min(cores) >= 290, cores
    assert hostCount(browser) == 1001
    assert b"exceeding payload limit" not in web.output() and b"Traceback" not in web.output()


def test_a_host_silent_for_forget_after_loses_its_card_and_its_detail_view(
        broker, amqp, processes, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    server, port, common = startedServer(processes, "browser-forget-server", broker, amqp,
                                         "--forget-after=3")
    processes("browser-forget-stays", "--role=agent", *common, "--name=stays.example", "--interval=0.5")
    gone = processes("browser-forget-gone", "--role=agent", *common, "--name=gone.example",
                     "--interval=0.5")
    browser.get(f"http://127.0.0.1:{port}/")
    for host in ("stays.example", "gone.example"):
        waitUntil(lambda: cardText(browser, host, ".cpu-value") not in (None, "–"), 15, f"{host}'s card")
    browser.find_element(By.CSS_SELECTOR, ".host-card[data-host='gone.example']").send_keys(Keys.ENTER)
    detail = browser.find_element(By.ID, "detail")
    waitUntil(lambda: detail.get_attribute("hidden") is None, 5, "the detail view to open")

    gone.stop()
    waitUntil(lambda: cardText(browser, "gone.example", ".host-name") is None, 20,
              "the forgotten host's card to go")
    assert detail.get_attribute("hidden") is not None  # its detail view closed with it
    assert visibleHosts(browser) == ["stays.example"]
    # The card goes at once, the count at the next frame.
    waitUntil(lambda: hostCount(browser) == 1, 5, "one host counted")
